import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import ServiceLifecycle
import Testing

@Suite("Heartbeat, timeouts and shutdown")
struct TimeoutAndShutdownTests {
    @Test("the heartbeat pings, and closes a client that does not answer")
    func heartbeatClosesSilentClient() async throws {
        try await withServer(["default": Events()], configure: { $0.transport.pingInterval = .milliseconds(300) }) { running in
            let silent = try await RawWebSocket.connect(to: running.url, answerPings: false)
            try await silent.send("M")
            // Two pings come (before or after A), then, both unanswered, the close. Over a real
            // socket on a loaded machine the timer may slip by a tick (a third ping); the exact
            // count is the heartbeat state machine's unit test.
            var pings = 0
            var close: RawFrame?
            while close == nil {
                let frame = try await silent.next(timeout: .seconds(10))
                if frame.opcode == .ping { pings += 1 }
                if frame.opcode == .connectionClose { close = frame }
            }
            #expect(pings >= 2, "closed only after two unanswered pings")
            #expect(close?.closeCode == .policyViolation)
            #expect(close?.closeReason == "heartbeat timeout")
        }
    }

    @Test("a client that answers the heartbeat's pings stays open")
    func heartbeatKeepsPoliteClient() async throws {
        // A pong may take up to two intervals: 1 s is wide enough for a loaded machine.
        try await withServer(["default": Events()], configure: { $0.transport.pingInterval = .seconds(1) }) { running in
            let polite = try await RawWebSocket.connect(to: running.url, reportPings: true)
            try await polite.send("M")
            var pings = 0
            while pings < 3 {
                let frame = try await polite.next(timeout: .seconds(10))
                #expect(frame.opcode != .connectionClose, "closed after \(pings) answered pings: \(frame)")
                if frame.opcode == .connectionClose { break }
                if frame.opcode == .ping { pings += 1 }
            }
            await polite.abort()
        }
    }

    @Test("the read timeout closes a connection that sends nothing")
    func readTimeout() async throws {
        try await withServer(["default": Events()], configure: { config in
            config.transport.readTimeout = .milliseconds(300)
            config.transport.pingInterval = nil
        }) { running in
            let idle = try await RawWebSocket.connect(to: running.url)
            let close = try await idle.nextClose(timeout: .seconds(10))
            #expect(close.closeReason == "read timeout")
        }
    }

    @Test("a client that sends a close frame and never reads is disconnected by the closing-handshake deadline")
    func closingHandshakeDeadline() async throws {
        let log = Log()
        try await withServer(["default": Events()], configure: { config in
            config.transport.maxOutboxBytes = 64 * 1024
            config.transport.writeTimeout = .seconds(120)  // Not what closes it here.
            config.onDisconnect = { conn in log.append("gone:\(conn.id)") }
        }) { running in
            let (socket, id) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            // Fill the outbox: the echo of the close frame cannot be written.
            try await fillOutbox(of: socket, running)
            try await socket.sendClose(code: .normal)
            try await log.wait(for: "gone:\(id)", timeout: .seconds(15))
            await socket.abort()
        }
    }

    @Test("stopping the listener closes every connection with 1001 and fires the hooks")
    func gracefulStop() async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceDisconnect) { ns, m in log.append("ns:\(m.isForced)") }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.onDisconnect = { _ in log.append("gone") }
        let server = try Server(namespaces: ["default": events], configuration: configuration)
        let listener = WebSocketListener(server: server, port: 0)
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port!)/"
        let (a, _) = try await handshake(url)
        let (b, _) = try await handshake(url)
        try await connectNamespace(a, "default")
        await listener.stop()
        await server.shutdown()
        for socket in [a, b] {
            let close = try await socket.nextClose()
            #expect(close.closeCode == .goingAway)
        }
        #expect(log.entries.filter { $0 == "gone" }.count == 2, "shutdown returns after the hooks ran")
        #expect(log.entries.contains("ns:true"))
        await #expect(throws: NeffosError.dialFailed) { _ = try await RawWebSocket.connect(to: url, timeout: .seconds(1)) }
    }

    @Test("as a Service, the listener shuts down gracefully with its ServiceGroup")
    func serviceLifecycle() async throws {
        let log = Log()
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.onConnect = { _ in log.append("connected") }
        configuration.onDisconnect = { _ in log.append("gone") }
        let server = try Server(namespaces: ["default": Events()], configuration: configuration)
        let listener = WebSocketListener(server: server, port: 0)
        let group = ServiceGroup(services: [server, listener], logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try #require(await listener.boundPort())
            let (socket, _) = try await handshake("ws://127.0.0.1:\(port)/")
            try await log.wait(for: "connected")
            await group.triggerGracefulShutdown()
            let close = try await socket.nextClose()
            #expect(close.closeCode == .goingAway)
            try await tasks.waitForAll()
            #expect(log.entries.contains("gone"))
        }
    }
}
