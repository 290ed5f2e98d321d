import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Testing

/// The README's code, as written there (a `store` stands in for the application's own), so
/// that a change of API that breaks it breaks this test.
@Suite("README")
struct ReadmeTests {
    @Test("the model and the Swift client of the README compile and answer as documented")
    func readmeCode() async throws {
        let saved = Log()
        @Sendable func store(_ body: ByteBuffer) async throws { saved.append(String(buffer: body)) }

        // The model.
        var chat = Events()
        chat.on(.namespaceConnected) { ns, _ in
            try ns.emit("notice", "welcome, \(ns.conn.id)")
        }
        chat.on("chat") { ns, message in          // synchronous: runs on the event loop
            ns.broadcastOthers(message)
        }
        chat.answer("ping") { _, message in       // the returned Reply answers the ask
            "pong:\(message.bodyString)"
        }
        chat.answer("save") { ns, message in      // asynchronous: runs in the connection's task
            try await store(message.body)
            return "saved"
        }
        let server = try Server(namespaces: ["default": chat])
        let listener = WebSocketListener(server: server, port: 0, path: "/echo")
        try await listener.start()
        let port = try #require(listener.port)

        // The Swift client.
        var events = Events()
        events.on("chat") { _, message in print(message.bodyString) }
        events.answer("question") { _, message in "yes" }      // answers the server's asks
        let client = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: ["default": events])
        let ns = try await client.connect("default")
        let lobby = try await ns.joinRoom("lobby")
        try lobby.emit("chat", "hello")
        let reply = try await ns.ask("ping", "1", timeout: .seconds(10))
        #expect(reply.bodyString == "pong:1")
        #expect(try await ns.ask("save", "draft", timeout: .seconds(10)).bodyString == "saved")
        #expect(saved.entries == ["draft"])
        let answer = try await server.ask(Message(namespace: "default", event: "question"), to: client.id, timeout: .seconds(10))
        #expect(answer.bodyString == "yes")
        for await state in client.states() {
            #expect("\(state)".hasPrefix("connected"), "a new sequence starts with the current state")
            break
        }
        await client.close()
        await listener.stop()
        await server.shutdown()
    }

    @Test("the README's history rules compile and mean what it says")
    func readmeHistory() {
        var configuration = Server.Configuration()
        configuration.history.rules = [
            HistoryRule(namespace: "chat", limits: HistoryLimits(maxCount: 100, maxAge: .seconds(300)), replayOnJoin: 20),
            HistoryRule(namespace: "dashboard", rooms: "metrics.*", replayOnJoin: 1),   // current value on join
        ]
        #expect(configuration.history.rules[0].matches("lobby", in: "chat"))
        #expect(configuration.history.rules[1].latestOnJoin && configuration.history.rules[1].matches("metrics.cpu", in: "dashboard"))
    }
}
