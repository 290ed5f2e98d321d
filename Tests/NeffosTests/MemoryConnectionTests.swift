import NIOCore
import Neffos
import NeffosTesting
import Testing

@Suite("In-memory connections")
struct MemoryConnectionTests {
    @Test("a server runs handlers, rooms and broadcasts over in-memory connections, frames byte for byte")
    func withoutSockets() async throws {
        var events = Events()
        events.answer("ping") { _, m in "pong:\(m.bodyString)" }
        events.on("shout") { ns, m in ns.broadcastOthers(Message(namespace: ns.namespace, room: m.room, event: "heard", body: m.body)) }
        var configuration = Server.Configuration()
        let ids = Locked(0)
        configuration.idGenerator = { _ in ids.withLock { $0 += 1; return "c\($0)" } }
        let server = try Server(namespaces: ["default": events], configuration: configuration)
        let alice = try await MemoryConnection.open(to: server)
        let bob = try await MemoryConnection.open(to: server)
        for (client, id) in [(alice, "c1"), (bob, "c2")] {
            await client.send("M")
            await client.send("$1;default;;_OnNamespaceConnect;0;0;")
            await client.send("$2;default;lobby;_OnRoomJoin;0;0;")
            #expect(try await client.next() == "A\(id)")
            #expect(try await client.next() == "$1;;;;;;")
            #expect(try await client.next() == "$2;;;;;;")
        }
        await alice.send("$3;default;;ping;0;0;x")
        #expect(try await alice.next() == "$3;default;;ping;0;0;pong:x")
        await alice.send(";default;lobby;shout;0;0;hi")
        #expect(try await bob.next() == ";default;lobby;heard;0;0;hi")
        #expect(server.members(ofRoom: "lobby", in: "default").count == 2)
        // Alice hears nothing of her own shout: her next frame is the answer to a later ask.
        await alice.send("$4;default;;ping;0;0;y")
        #expect(try await alice.next() == "$4;default;;ping;0;0;pong:y")
        await bob.disconnect()
    }

    @Test("a client that never sends M is closed by the handshake timeout, without a socket")
    func handshakeTimeout() async throws {
        var configuration = Server.Configuration()
        configuration.handshakeTimeout = .milliseconds(50)
        let server = try Server(namespaces: ["default": Events()], configuration: configuration)
        let client = try await MemoryConnection.open(to: server)
        await #expect(throws: RawWebSocketError.closed) { _ = try await client.next(timeout: .seconds(10)) }
        #expect(client.closeRequest?.code == .policyViolation)
    }
}
