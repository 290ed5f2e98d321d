import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

func quietClientConfiguration() -> Client.Configuration {
    var configuration = Client.Configuration()
    configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
    return configuration
}

/// Collects a client's state changes for assertions.
final class StateLog: Sendable {
    let log = Log()
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(_ client: Client) {
        let stream = client.states()
        let log = self.log
        task.withLock { $0 = Task { for await state in stream { log.append(Self.name(state)) } } }
    }

    static func name(_ state: ClientState) -> String {
        switch state {
        case .connecting(let attempt): "connecting:\(attempt)"
        case .connected: "connected"
        case .disconnected: "disconnected"
        case .reconnected(_, let attempts): "reconnected:\(attempts)"
        case .closed: "closed"
        }
    }
}

@Suite("Swift client")
struct ClientTests {
    static var serverEvents: Namespaces {
        var events = Events()
        events.answer("echo") { _, m in Reply(m.body) }
        events.answer("token") { _, m in Reply(m.wait) }
        events.on("fail") { _, _ in throw TextError("server says no") }
        events.on("shout") { ns, m in ns.broadcast(Message(namespace: ns.namespace, room: m.room, event: "heard", body: m.body)) }
        events.answer("whoami") { ns, _ in Reply("\(ns.conn.request.header("X-Token") ?? "-")|\(ns.conn.reconnectTries)") }
        return ["default": events, "other": Events()]
    }

    @Test("dial, connect, emit, ask, rooms, leave, disconnect and close")
    func everyday() async throws {
        let log = Log()
        try await withServer(Self.serverEvents) { running in
            var events = Events()
            events.on("heard") { _, m in log.append("heard:\(m.room):\(m.bodyString)") }
            events.on(.namespaceConnected) { ns, _ in log.append("connected:\(ns.namespace)") }
            events.on(.roomJoined) { _, m in log.append("joined:\(m.room)") }
            events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
            events.on(.namespaceDisconnect) { _, m in log.append("disconnect:\(m.namespace):forced=\(m.isForced)") }
            let client = try await Client.dial(running.url, namespaces: ["default": events], configuration: quietClientConfiguration())
            #expect(!client.id.isEmpty)
            #expect(running.server.connections(id: client.id).count == 1)
            let ns = try await client.connect("default")
            #expect(try await client.connect("default") === ns, "connecting again returns the same namespace connection")
            try await log.wait(for: "connected:default")

            #expect(try await ns.ask("echo", "hi;there").bodyString == "hi;there")
            let token = try await ns.ask("token").bodyString
            #expect(token.hasPrefix("$") && token.dropFirst().allSatisfy { $0.isNumber }, "client tokens are $ + digits: \(token)")
            let tokens = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<50 { group.addTask { try await ns.ask("token").bodyString } }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(tokens.count == 50, "concurrent asks get unique tokens")

            let room = try await ns.joinRoom("lobby")
            try await log.wait(for: "joined:lobby")
            #expect(running.server.members(ofRoom: "lobby", in: "default").count == 1)
            try room.emit("shout", "room text")
            try await log.wait(for: "heard:lobby:room text")
            try await room.leave()
            try await log.wait(for: "left:lobby")
            #expect(ns.rooms.isEmpty)
            #expect(running.server.members(ofRoom: "lobby", in: "default").isEmpty)

            try await ns.disconnect()
            try await log.wait(for: "disconnect:default:forced=false")
            #expect(throws: NeffosError.badNamespace) { try ns.emit("echo", "x") }
            await client.close()
            #expect(client.conn.isClosed)
            #expect(throws: NeffosError.writeClosed) { try client.conn.write(Message(namespace: "default", event: "x")) }
        }
    }

    @Test("errors: the server's error text, a namespace it does not declare, a timeout")
    func errors() async throws {
        try await withServer(Self.serverEvents) { running in
            let client = try await Client.dial(running.url, namespaces: ["default": Events(), "undeclared": Events()], configuration: quietClientConfiguration())
            let ns = try await client.connect("default")
            do {
                _ = try await ns.ask("fail", "x")
                Issue.record("should throw")
            } catch let error as RemoteError {
                #expect(error.text == "server says no")
            }
            await #expect(throws: NeffosError.badNamespace) { try await client.connect("undeclared") }
            await #expect(throws: NeffosError.badNamespace) { try await client.connect("never declared here") }
            await #expect(throws: NeffosError.timeout) { try await ns.ask("nobody answers", timeout: .milliseconds(100)) }
            #expect(client.conn.pendingAskCount == 0)
            await client.close()
        }
    }

    @Test("custom headers reach the server")
    func headers() async throws {
        try await withServer(Self.serverEvents) { running in
            var configuration = quietClientConfiguration()
            configuration.headers = [("X-Token", "secret")]
            let client = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: configuration)
            let ns = try await client.connect("default")
            #expect(try await ns.ask("whoami").bodyString == "secret|0")
            await client.close()
        }
    }

    @Test("a refused connection surfaces the server's H text")
    func refused() async throws {
        try await withServer(["default": Events()], configure: { config in
            config.onConnect = { _ in throw TextError("banned until tomorrow") }
        }) { running in
            do {
                _ = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: quietClientConfiguration())
                Issue.record("dial should fail")
            } catch let error as NeffosError {
                #expect(error == .handshakeRefused)
                #expect(error.detail == "banned until tomorrow")
            }
        }
    }

    @Test("a server that never answers M makes the dial time out")
    func handshakeTimeout() async throws {
        let server = try await RawWebSocketServer.start()
        var configuration = quietClientConfiguration()
        // Long enough for the TCP connect and the upgrade on a loaded machine (it bounds them too).
        configuration.handshakeTimeout = .seconds(2)
        let dial = Task { try await Client.dial(server.url, namespaces: ["default": Events()], configuration: configuration) }
        // The server accepts the upgrade and says nothing: no A ever comes. (On a loaded
        // machine the upgrade itself may outlast the deadline: that is the same error, and the
        // server then never sees the connection, so it is not waited for.)
        await #expect(throws: NeffosError.handshakeTimeout) { _ = try await dial.value }
        await server.stop()
    }

    @Test("dialling nothing, or a bad URL, fails with dialFailed")
    func dialFailures() async throws {
        // A port bound here but not listening refuses connections, and no other test can take
        // it meanwhile (a port freed by a stopped server could be).
        let reserved = try ReservedPort()
        defer { reserved.release() }
        await #expect(throws: NeffosError.dialFailed) {
            _ = try await Client.dial("ws://127.0.0.1:\(reserved.port)/", namespaces: [:], configuration: quietClientConfiguration())
        }
        await #expect(throws: NeffosError.dialFailed) {
            _ = try await Client.dial("wss://127.0.0.1:\(reserved.port)/", namespaces: [:], configuration: quietClientConfiguration())
        }
        await #expect(throws: NeffosError.dialFailed) { _ = try await Client.dial("ftp://127.0.0.1/", namespaces: [:]) }
        await #expect(throws: NeffosError.dialFailed) { _ = try await Client.dial("not a url", namespaces: [:]) }
    }

    @Test("the client's frames are the protocol's, byte for byte, as a Go server reads them")
    func framesByteForByte() async throws {
        let server = try await RawWebSocketServer.start()
        var events = Events()
        events.answer("question") { _, m in "yes to \(m.bodyString)" }
        events.on("boom") { _, _ in throw TextError("client error") }
        async let dialled = Client.dial(server.url + "?a=1", namespaces: ["default": events], configuration: quietClientConfiguration())
        let accepted = try await server.accept()
        let peer = accepted.socket
        #expect(accepted.uri == "/?a=1")
        #expect(try await peer.nextText() == "M")
        try await peer.send("Aclient-7")
        let client = try await dialled
        #expect(client.id == "client-7")

        async let connected = client.connect("default")
        let connect = try await peer.nextText()
        let token = String(connect.prefix { $0 != ";" })
        #expect(connect == "\(token);default;;_OnNamespaceConnect;0;0;")
        #expect(token.hasPrefix("$"))
        try await peer.send("\(token);;;;;;")
        let ns = try await connected

        try ns.emit("chat", "hello;world")
        #expect(try await peer.nextText() == ";default;;chat;0;0;hello;world")

        async let answer = ns.ask("ping", "p1")
        let ask = try await peer.nextText()
        let askToken = String(ask.prefix { $0 != ";" })
        #expect(ask == "\(askToken);default;;ping;0;0;p1")
        try await peer.send("\(askToken);default;;ping;0;0;pong:p1")
        #expect(try await answer.bodyString == "pong:p1")

        // A server-side ask (plain token) is answered with the same token.
        try await peer.send("1732200000000000001;default;;question;0;0;sure?")
        #expect(try await peer.nextText() == "1732200000000000001;default;;question;0;0;yes to sure?")
        // A failing handler answers with an error frame.
        try await peer.send("1732200000000000002;default;;boom;0;0;x")
        #expect(try await peer.nextText() == "1732200000000000002;default;;boom;1;0;client error")
        // The server forces a room join: the client acknowledges with an empty reply.
        try await peer.send("1732200000000000003;default;r1;_OnRoomJoin;0;0;")
        #expect(try await peer.nextText() == "1732200000000000003;;;;;;")
        #expect(ns.isJoined("r1"))
        try ns.room("r1")?.emit("chat", "in room")
        #expect(try await peer.nextText() == ";default;r1;chat;0;0;in room")
        // A late reply to one of the client's asks is dropped without harm.
        try await peer.send("\(askToken);default;;ping;0;0;late")
        try await peer.send("1732200000000000004;default;;question;0;0;again?")
        #expect(try await peer.nextText() == "1732200000000000004;default;;question;0;0;yes to again?")

        await client.close()
        let close = try await peer.nextClose()
        #expect(close.closeCode == .normal)
        await server.stop()
    }

    @Test("the server may force the client into a namespace; waitServerConnect returns it")
    func serverForcesNamespace() async throws {
        try await withServer(["default": Events()], configure: { config in
            config.onConnect = { conn in try await conn.connect("default") }
        }) { running in
            let client = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: quietClientConfiguration())
            let ns = try await client.waitServerConnect("default", timeout: .seconds(5))
            #expect(ns.namespace == "default")
            await #expect(throws: NeffosError.timeout) {
                let client2 = try await Client.dial(running.url, namespaces: ["default": Events(), "other": Events()], configuration: quietClientConfiguration())
                defer { Task { await client2.close() } }
                _ = try await client2.waitServerConnect("other", timeout: .milliseconds(100))
            }
            await client.close()
        }
    }

    @Test("a server ask is answered by the client's handler; the server broadcasts to it")
    func serverToClient() async throws {
        try await withServer(Self.serverEvents) { running in
            var events = Events()
            events.answer("question") { _, m in "client says yes to \(m.bodyString)" }
            let log = Log()
            events.on("news") { _, m in log.append(m.bodyString) }
            let client = try await Client.dial(running.url, namespaces: ["default": events], configuration: quietClientConfiguration())
            _ = try await client.connect("default")
            let answer = try await running.server.ask(Message(namespace: "default", event: "question", body: "?"), to: client.id, timeout: .seconds(5))
            #expect(answer.bodyString == "client says yes to ?")
            running.server.broadcast(Message(namespace: "default", event: "news", body: "extra"))
            try await log.wait(for: "extra")
            await client.close()
        }
    }

    @Test("reconnection across a server restart on the same port restores namespaces and rooms")
    func reconnectAcrossRestart() async throws {
        let serverLog = Log()
        var serverEvents = Self.serverEvents
        serverEvents["default"]?.on(.namespaceConnected) { ns, _ in serverLog.append("ns:\(ns.conn.reconnectTries)") }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let first = WebSocketListener(server: try Server(namespaces: serverEvents, configuration: configuration), port: 0)
        try await first.start()
        let port = try #require(first.port)
        let url = "ws://127.0.0.1:\(port)/"

        let clientLog = Log()
        var events = Events()
        events.on("heard") { _, m in clientLog.append("heard:\(m.room):\(m.bodyString)") }
        var clientConfiguration = quietClientConfiguration()
        clientConfiguration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(200))
        let client = try await Client.dial(url, namespaces: ["default": events], configuration: clientConfiguration)
        let states = StateLog(client)
        let ns = try await client.connect("default")
        let lobby = try await ns.joinRoom("lobby")
        _ = try await ns.joinRoom("games")
        let firstID = client.id

        // An ask in flight when the server goes away fails at once, with a typed error.
        let inFlight = Task { try await ns.ask("never answered", timeout: .seconds(30)) }
        try await serverLog.wait(for: "ns:0")
        await first.stop(timeout: .seconds(2))
        await #expect(throws: NeffosError.writeClosed) { _ = try await inFlight.value }
        try await states.log.wait(for: "disconnected")
        #expect(throws: NeffosError.reconnecting) { try ns.emit("echo", "while down") }

        // The same port, a new server: the client comes back by itself.
        let second = WebSocketListener(server: try Server(namespaces: serverEvents, configuration: configuration), port: port)
        try await second.start()
        try await states.log.wait(for: "reconnected", timeout: .seconds(10)) { $0.contains { $0.hasPrefix("reconnected:") } }
        #expect(states.log.entries.contains { $0.hasPrefix("connecting:") && $0 != "connecting:0" })
        #expect(client.id != firstID, "the new server gave a new ID")
        try await serverLog.wait(for: "the reconnect header") { $0.contains { $0.hasPrefix("ns:") && $0 != "ns:0" } }

        // The same handles work again; rooms were rejoined on the new server.
        #expect(client.namespace("default") === ns)
        #expect(Set(ns.rooms.map(\.name)) == ["lobby", "games"])
        #expect(second.server.members(ofRoom: "lobby", in: "default").count == 1)
        #expect(second.server.members(ofRoom: "games", in: "default").count == 1)
        #expect(try await ns.ask("echo", "back").bodyString == "back")
        try lobby.emit("shout", "hello again")
        try await clientLog.wait(for: "heard:lobby:hello again")

        await client.close()
        try await states.log.wait(for: "closed")
        await second.stop()
    }

    @Test("reconnection gives up after its attempts; the local close events fire")
    func reconnectGivesUp() async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceDisconnect) { _, m in log.append("disconnect:forced=\(m.isForced)") }
        events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
        var configuration = quietClientConfiguration()
        configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(10), maxDelay: .milliseconds(20), maxAttempts: 3)
        var serverConfiguration = Server.Configuration()
        serverConfiguration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let listener = WebSocketListener(server: try Server(namespaces: Self.serverEvents, configuration: serverConfiguration), port: 0)
        try await listener.start()
        let client = try await Client.dial("ws://127.0.0.1:\(listener.port!)/", namespaces: ["default": events], configuration: configuration)
        let states = StateLog(client)
        let ns = try await client.connect("default")
        _ = try await ns.joinRoom("r")
        await listener.stop()
        try await states.log.wait(for: "closed", timeout: .seconds(10))
        #expect(states.log.entries.filter { $0.hasPrefix("connecting:") }.count == 3)
        try await log.wait(for: "disconnect:forced=true")
        #expect(log.entries == ["left:r", "disconnect:forced=true"])
        #expect(client.conn.isClosed)
        await client.close()
    }

    @Test("close() during reconnection stops it")
    func closeWhileReconnecting() async throws {
        var configuration = quietClientConfiguration()
        configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(50), maxDelay: .milliseconds(100))
        var serverConfiguration = Server.Configuration()
        serverConfiguration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let listener = WebSocketListener(server: try Server(namespaces: Self.serverEvents, configuration: serverConfiguration), port: 0)
        try await listener.start()
        let client = try await Client.dial("ws://127.0.0.1:\(listener.port!)/", namespaces: ["default": Events()], configuration: configuration)
        let states = StateLog(client)
        await listener.stop()
        try await states.log.wait(for: "disconnected")
        await client.close()
        try await states.log.wait(for: "closed")
        #expect(client.conn.isClosed)
    }

    @Test("without a reconnection policy, a lost connection closes the client")
    func noReconnect() async throws {
        var configuration = quietClientConfiguration()
        configuration.reconnect = nil
        var serverConfiguration = Server.Configuration()
        serverConfiguration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let listener = WebSocketListener(server: try Server(namespaces: Self.serverEvents, configuration: serverConfiguration), port: 0)
        try await listener.start()
        let client = try await Client.dial("ws://127.0.0.1:\(listener.port!)/", namespaces: ["default": Events()], configuration: configuration)
        let states = StateLog(client)
        await listener.stop()
        try await states.log.wait(for: "closed")
        #expect(!states.log.entries.contains("disconnected"))
    }

    @Test("the backoff grows, is bounded and jittered")
    func backoff() {
        let policy = ReconnectPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), multiplier: 2, jitter: 0.5)
        #expect(policy.baseDelay(attempt: 1) == .milliseconds(100))
        #expect(policy.baseDelay(attempt: 2) == .milliseconds(200))
        #expect(policy.baseDelay(attempt: 4) == .milliseconds(800))
        #expect(policy.baseDelay(attempt: 5) == .seconds(1))
        #expect(policy.baseDelay(attempt: 500) == .seconds(1))
        var rng = SplitMix64(seed: 1)
        for attempt in 1...10 {
            let delay = policy.delay(attempt: attempt, using: &rng)
            #expect(delay <= policy.baseDelay(attempt: attempt) && delay >= policy.baseDelay(attempt: attempt) * 0.5)
        }
    }
}
