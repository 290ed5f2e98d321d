import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Testing

@Suite("Protocol edges")
struct ProtocolEdgeTests {
    @Test("a system request marked isNoOp=1 is neither carried out nor answered", .serialized, arguments: Mount.allCases)
    func noOpRequests(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceConnect) { _, m in log.append("connect:\(m.wait)") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await socket.send("$1;default;;_OnNamespaceConnect;0;1;")
            try await socket.send("$2;default;;_OnNamespaceConnect;0;0;")
            // Requests are handled in order: the answer to $2 comes after $1 was handled.
            #expect(try await socket.nextText() == "$2;;;;;;")
            #expect(log.entries == ["connect:$2"], "the no-op request fired nothing")
            try await socket.send("$3;default;r;_OnRoomJoin;0;1;")
            try await socket.send("$4;default;r;_OnRoomLeave;0;0;")
            #expect(try await socket.nextText() == "$4;;;;;;")
            #expect(running.server.members(ofRoom: "r", in: "default").isEmpty, "the no-op join joined nothing")
            await socket.abort()
        }
    }

    @Test("a refused disconnect keeps the client in the namespace and reports the refusal", .serialized, arguments: Mount.allCases)
    func refusedDisconnect(on mount: Mount) async throws {
        var events = Events()
        events.on(.namespaceDisconnect) { _, m in
            if !m.isForced { throw TextError("stay a while") }
        }
        events.answer("echo") { _, m in Reply(m.body) }
        try await withServer(on: mount, ["default": events]) { running in
            let client = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: quietClientConfiguration())
            let ns = try await client.connect("default")
            await #expect(throws: RemoteError.self) { try await ns.disconnect(timeout: .seconds(5)) }
            #expect(client.namespace("default") === ns, "still connected")
            #expect(try await ns.ask("echo", "still here", timeout: .seconds(5)).bodyString == "still here")
            await client.close()
        }
    }

    @Test("the client's binary emit arrives as a binary message; leaveAll leaves every room", .serialized, arguments: Mount.allCases)
    func clientBinaryAndLeaveAll(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("blob") { _, m in log.append("blob:\(m.isBinary):\(Array(m.body.readableBytesView))") }
        events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
        try await withServer(on: mount, ["default": events]) { running in
            let client = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: quietClientConfiguration())
            let ns = try await client.connect("default")
            try ns.emitBinary("blob", [0, 0x3B, 0xFF])
            try await log.wait(for: "blob:true:[0, 59, 255]")
            _ = try await ns.joinRoom("a")
            _ = try await ns.joinRoom("b")
            #expect(running.server.rooms(in: "default").sorted() == ["a", "b"])
            try await ns.leaveAll(timeout: .seconds(5))
            try await log.wait(for: "both rooms left") { entries in entries.contains("left:a") && entries.contains("left:b") }
            #expect(running.server.rooms(in: "default").isEmpty)
            #expect(ns.rooms.isEmpty)
            await client.close()
        }
    }
}
