import Foundation
import Neffos
import NeffosNIO
import NeffosProcess
import NeffosTesting
import Testing

@Suite("Chat as a cluster over NATS")
struct ChatClusterTests {
    func startChat(_ exchange: String) async throws -> (ChildProcess, Int) {
        let chat = try ChildProcess.start(try ChildProcess.sibling("neffos-chat"), ["--port", "0"], environment: ["NEFFOS_EXCHANGE_URL": exchange])
        do {
            _ = try await chat.waitForOutput(containing: "exchange connected")
            let line = try await chat.waitForOutput(containing: "chat page on http://127.0.0.1:")
            guard let port = Int(line.split(separator: ":").last?.split(separator: "/").first ?? "") else {
                throw RawWebSocketError(description: "no port in \(line)")
            }
            return (chat, port)
        } catch {
            chat.terminate(signal: SIGKILL)
            throw RawWebSocketError(description: "\(error); the chat wrote: \(chat.text.suffix(1500))")
        }
    }

    @Test("two chat servers on NATS: a room message from one reaches a client of the other")
    func roomMessageCrossesNodes() async throws {
        let servers = try await NATSServer.startCluster(size: 2)
        do {
            try await roomMessageCrossesNodes(servers)
        } catch {
            for server in servers { await server.kill() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    private func roomMessageCrossesNodes(_ servers: [NATSServer]) async throws {
        let (chatA, portA) = try await startChat(servers[0].url)
        let (chatB, portB) = try await startChat(servers[1].url)
        defer {
            chatA.terminate(signal: SIGKILL)
            chatB.terminate(signal: SIGKILL)
        }
        let onB = Received()
        var eventsB = onB.events()
        eventsB.on("chat") { _, message in onB.append(message) }
        var bobConfiguration = Client.Configuration()
        bobConfiguration.headers = [("X-Username", "bob")]
        let bob = try await Client.dial("ws://127.0.0.1:\(portB)/echo", namespaces: ["default": eventsB], configuration: bobConfiguration)
        _ = try await bob.connect("default").joinRoom("lobby")

        var aliceConfiguration = Client.Configuration()
        aliceConfiguration.headers = [("X-Username", "alice")]
        let alice = try await Client.dial("ws://127.0.0.1:\(portA)/echo", namespaces: ["default": Events()], configuration: aliceConfiguration)
        let lobby = try await alice.connect("default").joinRoom("lobby")
        // Interest crosses the NATS route asynchronously: send until one arrives (bounded).
        let deadline = ContinuousClock.now + .seconds(15)
        var sent = 0
        while !onB.messages.contains(where: { $0.event == "chat" }) {
            guard ContinuousClock.now < deadline else { throw RawWebSocketError.timedOut("a chat line across nodes") }
            sent += 1
            try lobby.emit("chat", "hello from A #\(sent)")
            try? await onB.wait(for: 1, of: "chat", timeout: .milliseconds(200))
        }
        let line = try #require(onB.messages.first { $0.event == "chat" })
        #expect(line.room == "lobby")
        #expect(line.bodyString.contains("\"from\":\"alice\""))
        await alice.close()
        await bob.close()
        chatA.terminate()
        chatB.terminate()
        #expect(await chatA.waitForExit() == 0)
        #expect(await chatB.waitForExit() == 0)
    }
}
