import Configuration
import Logging
import NIOCore
import NIOPosix
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

/// A server with history on every room of `default`, behind a listener that tests stop and
/// start again on the same port (the client reconnects to the same server and its store).
private final class HistoryServer: Sendable {
    let server: Server
    let port: Int
    private let listener: Mutex<WebSocketListener?>

    init(rule: HistoryRule = HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 1000)), maxRecovery: Int = 1000) async throws {
        var events = Events()
        events.on("shout") { ns, m in ns.broadcast(Message(namespace: ns.namespace, room: m.room, event: "tick", body: m.body)) }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.history.rules = [rule]
        configuration.history.maxRecoveryMessages = maxRecovery
        server = try Server(namespaces: ["default": events], configuration: configuration)
        let listener = WebSocketListener(server: server, port: 0)
        try await listener.start()
        port = try #require(listener.port)
        self.listener = Mutex(listener)
    }

    var url: String { "ws://127.0.0.1:\(port)/" }

    /// Stops accepting and closes every connection (the clients start reconnecting).
    func stopListening() async {
        let listener = self.listener.withLock { $0 }
        await listener?.stop(timeout: .seconds(2))
    }

    /// Listens again on the same port, with the same server.
    func listenAgain() async throws {
        let listener = WebSocketListener(server: server, port: port)
        try await listener.start()
        self.listener.withLock { $0 = listener }
    }

    func stop() async {
        await stopListening()
        await server.shutdown(timeout: .seconds(5))
    }

    /// Broadcasts `tick` with bodies `range` to `room`.
    func broadcast(_ range: ClosedRange<Int>, to room: String = "lobby") {
        for n in range { server.broadcast(Message(namespace: "default", room: room, event: "tick", body: ByteBuffer(string: "\(n)"))) }
    }
}

/// Keeps a client's log lines (debug and up), to say what it was doing when a test fails.
private struct CapturingLogHandler: LogHandler {
    let lines: Log
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.append("\(event.level) \(event.message) \(event.metadata ?? [:])")
    }
}

/// A client that logs the bodies of the `tick`s it receives, and its recoveries.
private struct RecordingClient {
    let client: Client
    let ns: NSConn
    let ticks = Log()
    let recoveries = Log()
    let states: StateLog
    let logs = Log()

    init(_ url: String, room: String = "lobby", recovery: Bool = true) async throws {
        let ticks = self.ticks
        let recoveries = self.recoveries
        var events = Events()
        events.on("tick") { _, m in ticks.append(m.bodyString) }
        var configuration = quietClientConfiguration()
        let logs = self.logs
        configuration.logger = Logger(label: "client") { _ in CapturingLogHandler(lines: logs) }
        configuration.recovery = recovery
        configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        configuration.onRecovery = { recoveries.append("\($0.room):\($0.isComplete ? "complete" : "incomplete"):\($0.messages)") }
        client = try await Client.dial(url, namespaces: ["default": events], configuration: configuration)
        states = StateLog(client)
        ns = try await client.connect("default")
        _ = try await ns.joinRoom(room)
    }

    /// Waits until the ticks received are `expected`, exactly.
    func waitForTicks(_ expected: [Int], timeout: Duration = .seconds(10)) async throws {
        let want = expected.map(String.init)
        try await ticks.wait(for: "ticks \(expected.first ?? 0)…\(expected.last ?? 0)", timeout: timeout) { $0.count >= want.count }
        #expect(ticks.entries == want, "exactly these, in order, once each")
    }
}

@Suite("History and recovery")
struct HistoryTests {
    @Test("Recovery: a client away while 100 messages are broadcast to its room gets exactly those 100, in order, on reconnect (memory store)")
    func recoversMissedMessages() async throws {
        let history = try await HistoryServer()
        let alice = try await RecordingClient(history.url)
        history.broadcast(1...5)
        try await alice.waitForTicks(Array(1...5))

        await history.stopListening()
        try await alice.states.log.wait(for: "disconnected")
        history.broadcast(6...105)
        try await history.listenAgain()
        try await alice.recoveries.wait(for: "lobby:complete:100")
        try await alice.waitForTicks(Array(1...105))

        // Live again, after the recovered ones, without a gap.
        history.broadcast(106...110)
        try await alice.waitForTicks(Array(1...110))
        await alice.client.close()
        await history.stop()
    }

    @Test("Recovery: clients dropped again and again while broadcasts flow receive every message once, in order")
    func recoversUnderChurn() async throws {
        let history = try await HistoryServer(
            rule: HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 1_000_000)), maxRecovery: 1_000_000)
        var clients: [RecordingClient] = []
        for _ in 0..<4 { clients.append(try await RecordingClient(history.url)) }
        // Broadcasts flow at a fixed rate (10 every 10 ms, 1,000/s) from a timer on an event
        // loop: a load that does not grow when the machine is slow (paced by how fast a client
        // received, it flooded the event loops every test shares while the reconnections were
        // slow, and made them slower).
        let published = Atomic<Int>(0)
        let publisher = MultiThreadedEventLoopGroup.singleton.next().scheduleRepeatedTask(
            initialDelay: .zero, delay: .milliseconds(10)
        ) { _ in
            let n = published.load(ordering: .relaxed)
            history.broadcast((n + 1)...(n + 10))
            published.store(n + 10, ordering: .relaxed)
        }
        // Whatever happens, the publisher stops (left running, it would load every other test).
        defer { publisher.cancel() }
        // Drop each client's connection, server side, three times, while the publisher runs;
        // each time, wait until that client is back before dropping the next.
        for round in 1...3 {
            for client in clients {
                let id = client.client.id
                for ns in history.server.members(ofRoom: "lobby", in: "default") where ns.conn.id == id {
                    ns.conn.close(code: .goingAway, reason: "churn")
                }
                do {
                    try await client.states.log.wait(for: "reconnection \(round)", timeout: .seconds(30)) {
                        $0.filter { $0.hasPrefix("reconnected:") }.count >= round
                    }
                } catch {
                    Issue.record("\(error); the client's log: \(client.logs.entries.suffix(20))")
                    throw error
                }
            }
        }
        let stopped = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        publisher.cancel(promise: stopped)
        try await stopped.futureResult.get()
        let total = published.load(ordering: .relaxed)
        for client in clients {
            try await client.waitForTicks(Array(1...total), timeout: .seconds(60))
            // Three drops, three recoveries; more only if the client lost its connection on its
            // own as well (a loaded machine), each of which must be complete too.
            #expect(client.recoveries.entries.count >= 3, "\(client.recoveries.entries)")
            #expect(!client.recoveries.entries.contains { $0.contains("incomplete") }, "\(client.recoveries.entries)")
            await client.client.close()
        }
        // The drops did miss broadcasts (each reconnection takes a few timer ticks): the seams
        // were crossed with messages in flight, not between them.
        let recovered = clients.flatMap(\.recoveries.entries).compactMap { Int($0.split(separator: ":").last ?? "") }
        #expect(recovered.reduce(0, +) > 0, "recovered: \(recovered)")
        await history.stop()
    }

    @Test("Recovery: history trimmed past the client's position is reported as not recovered, with what is kept")
    func trimmedHistoryIsNotRecovered() async throws {
        let history = try await HistoryServer(rule: HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 10)))
        let alice = try await RecordingClient(history.url)
        history.broadcast(1...3)
        try await alice.waitForTicks([1, 2, 3])
        await history.stopListening()
        try await alice.states.log.wait(for: "disconnected")
        history.broadcast(4...50)
        try await history.listenAgain()
        try await alice.recoveries.wait(for: "lobby:incomplete:10")
        try await alice.waitForTicks([1, 2, 3] + Array(41...50))
        await alice.client.close()
        await history.stop()
    }

    @Test("Recovery: more missed than the server sends back at once is not recovered; the newest come back")
    func recoveryIsBounded() async throws {
        let history = try await HistoryServer(maxRecovery: 20)
        let alice = try await RecordingClient(history.url)
        history.broadcast(1...1)
        try await alice.waitForTicks([1])
        await history.stopListening()
        try await alice.states.log.wait(for: "disconnected")
        history.broadcast(2...101)
        try await history.listenAgain()
        try await alice.recoveries.wait(for: "lobby:incomplete:20")
        try await alice.waitForTicks([1] + Array(82...101))
        await alice.client.close()
        await history.stop()
    }

    @Test("Recovery: a position from another epoch (the server restarted) is not recovered; what is kept comes back")
    func otherEpochIsNotRecovered() async throws {
        let first = try await HistoryServer()
        let alice = try await RecordingClient(first.url)
        first.broadcast(1...2)
        try await alice.waitForTicks([1, 2])
        let port = first.port
        await first.stop()
        try await alice.states.log.wait(for: "disconnected")

        // A new server (a new store) on the same port, with messages kept before alice is back.
        var events = Events()
        events.on("noop") { _, _ in }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.history.rules = [HistoryRule(namespace: "default")]
        let second = try Server(namespaces: ["default": events], configuration: configuration)
        for n in 3...4 { second.broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: ByteBuffer(string: "\(n)"))) }
        let listener = WebSocketListener(server: second, port: port)
        try await listener.start()
        try await alice.recoveries.wait(for: "lobby:incomplete:2")
        try await alice.waitForTicks([1, 2, 3, 4])
        await alice.client.close()
        await listener.stop()
        await second.shutdown(timeout: .seconds(5))
    }

    @Test("History: a client that does not ask for recovery sees exactly the neffos frames; one that asks sees positions")
    func framesWithoutAndWithTheExtension() async throws {
        let history = try await HistoryServer()
        // neffos.js and neffos Go clients send no X-Neffos-Recovery header.
        let (plain, _) = try await handshake(history.url)
        try await connectNamespace(plain, "default")
        try await plain.send("$j;default;lobby;_OnRoomJoin;0;0;~ignored:1")
        #expect(try await plain.nextText() == "$j;;;;;;")

        let (extended, _) = try await handshake(history.url, headers: [(name: "X-Neffos-Recovery", value: "1")])
        try await connectNamespace(extended, "default")
        try await extended.send("$j;default;lobby;_OnRoomJoin;0;0;")
        let reply = try await extended.nextText()
        #expect(reply.hasPrefix("$j;default;lobby;_OnRoomJoin;0;0;~- 0 "), "\(reply)")
        let epoch = try #require(reply.split(separator: " ").last?.split(separator: ":").first.map(String.init))
        #expect(reply == "$j;default;lobby;_OnRoomJoin;0;0;~- 0 \(epoch):0")

        history.broadcast(1...2)
        #expect(try await plain.nextText() == ";default;lobby;tick;0;0;1")
        #expect(try await plain.nextText() == ";default;lobby;tick;0;0;2")
        #expect(try await extended.nextText() == "~\(epoch):1;default;lobby;tick;0;0;1")
        #expect(try await extended.nextText() == "~\(epoch):2;default;lobby;tick;0;0;2")

        // Recovering from position 1 sends the reply, then message 2.
        let (again, _) = try await handshake(history.url, headers: [(name: "X-Neffos-Recovery", value: "1")])
        try await connectNamespace(again, "default")
        try await again.send("$r;default;lobby;_OnRoomJoin;0;0;~\(epoch):1")
        #expect(try await again.nextText() == "$r;default;lobby;_OnRoomJoin;0;0;~1 1 \(epoch):2")
        #expect(try await again.nextText() == "~\(epoch):2;default;lobby;tick;0;0;2")
        // A position that is not one is no recovery.
        try await again.send("$x;default;other;_OnRoomJoin;0;0;~not a position")
        let other = try await again.nextText()
        let latest = try await history.server.history(ofRoom: "other", in: "default").latest
        #expect(other == "$x;default;other;_OnRoomJoin;0;0;~- 0 \(latest)")
        for socket in [plain, extended, again] { await socket.abort() }
        await history.stop()
    }

    @Test("History: a room with replayOnJoin gives a joining member its newest messages at once, to every client")
    func replayOnJoin() async throws {
        let history = try await HistoryServer(rule: HistoryRule(namespace: "default", rooms: "gauge-*", replayOnJoin: 1))
        history.broadcast(1...3, to: "gauge-cpu")
        let (plain, _) = try await handshake(history.url)
        try await connectNamespace(plain, "default")
        try await plain.send("$j;default;gauge-cpu;_OnRoomJoin;0;0;")
        #expect(try await plain.nextText() == "$j;;;;;;")
        #expect(try await plain.nextText() == ";default;gauge-cpu;tick;0;0;3")
        // A room the rule does not cover: nothing kept, nothing sent.
        try await plain.send("$k;default;lobby;_OnRoomJoin;0;0;")
        #expect(try await plain.nextText() == "$k;;;;;;")
        #expect(try await history.server.history(ofRoom: "lobby", in: "default").entries.isEmpty)
        await plain.abort()
        await history.stop()
    }

    @Test("Recovery: on a node of a cluster (memory store), a client recovers what another node broadcast while it was away")
    func recoversOnAClusterNode() async throws {
        let bus = InProcessExchange()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.history.rules = [HistoryRule(namespace: "default")]
        }) { _ in bus }
        try await cluster.servers[0].waitForClusterNodes("both nodes") { $0.count == 2 }
        let alice = try await RecordingClient(cluster.url(of: 0))
        let broadcast: @Sendable (ClosedRange<Int>) -> Void = { range in
            for n in range { cluster.servers[1].broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: ByteBuffer(string: "\(n)"))) }
        }
        broadcast(1...3)
        try await alice.waitForTicks([1, 2, 3])

        // Alice's node loses her; node 1 goes on broadcasting. Node 0 has no member in the
        // lobby now, but keeps receiving it for the history's age, so she can recover there.
        let port = try #require(cluster.listeners[0].port)
        await cluster.listeners[0].stop(timeout: .seconds(2))
        try await alice.states.log.wait(for: "disconnected")
        broadcast(4...50)
        // Whether they reach node 0 before or after she rejoins, she gets each once, in order.
        let again = WebSocketListener(server: cluster.servers[0], host: "127.0.0.1", port: port)
        try await again.start()
        try await alice.recoveries.wait(for: "a complete recovery") { $0.contains { $0.hasPrefix("lobby:complete:") } }
        try await alice.waitForTicks(Array(1...50))
        await alice.client.close()
        await again.stop()
        await cluster.stop()
    }

    @Test("History: a client joining and leaving many rooms cannot make a cluster node hold more than maxLingeringRooms of them")
    func lingeringRoomsAreBounded() async throws {
        let bus = InProcessExchange()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.history.rules = [HistoryRule(namespace: "default")]
            configuration.history.maxLingeringRooms = 3
        }) { _ in bus }
        let client = try await cluster.client(at: 0, namespaces: ["default": Events()])
        let ns = try await client.connect("default")
        for index in 0..<10 {
            _ = try await ns.joinRoom("room-\(index)")
            try await ns.leaveRoom("room-\(index)")
        }
        // The leaves are handled before the answer to a later ask: every room has emptied.
        _ = try await ns.joinRoom("last")
        #expect(cluster.servers[0].lingeringRoomCount == 3)
        #expect(cluster.servers[0].statistics.limitsExceeded == 7, "each room past the bound is counted")
        await cluster.stop()
    }

    @Test("Recovery: a connection lost again while its rooms are restored restores them after the next reconnection")
    func lostDuringRestore() async throws {
        // The first rejoin after a reconnection loses its connection (the server drops it).
        let dropped = Atomic<Bool>(false)
        var events = Events()
        events.on(.roomJoin) { ns, _ in
            if ns.conn.reconnectTries > 0, !dropped.exchange(true, ordering: .relaxed) { ns.conn.close(code: .goingAway, reason: "again") }
        }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.history.rules = [HistoryRule(namespace: "default")]
        let server = try Server(namespaces: ["default": events], configuration: configuration)
        let listener = WebSocketListener(server: server, port: 0)
        try await listener.start()
        let alice = try await RecordingClient("ws://127.0.0.1:\(try #require(listener.port))/")
        server.broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: "1"))
        try await alice.waitForTicks([1])
        for ns in server.members(ofRoom: "lobby", in: "default") { ns.conn.close(code: .goingAway, reason: "first") }
        try await alice.states.log.wait(for: "two reconnections") { $0.filter { $0.hasPrefix("reconnected:") }.count >= 2 }
        try await alice.recoveries.wait(for: "lobby:complete:0")
        #expect(alice.ns.rooms.map(\.name) == ["lobby"], "still in the lobby")
        server.broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: "2"))
        try await alice.waitForTicks([1, 2])
        let droppedOnce = dropped.load(ordering: .relaxed)
        #expect(droppedOnce)
        await alice.client.close()
        await listener.stop()
        await server.shutdown(timeout: .seconds(5))
    }

    @Test("History: configuration keys make the rules, the bounds and the store")
    func configurationKeys() async throws {
        let reader = try await Server.Configuration.reader(environment: [
            "NEFFOS_HISTORY_ROOMS": "chat/*, dashboard/metrics.*",
            "NEFFOS_HISTORY_MAX_COUNT": "50",
            "NEFFOS_HISTORY_MAX_AGE": "90s",
            "NEFFOS_HISTORY_REPLAY_ON_JOIN": "1",
            "NEFFOS_HISTORY_MAX_RECOVERY_MESSAGES": "200",
            "NEFFOS_HISTORY_STORE_URL": "memory://?maxStreams=7&maxBytes=1MiB",
        ])
        let history = try Server.Configuration(config: reader).history
        let limits = HistoryLimits(maxCount: 50, maxAge: .seconds(90))
        #expect(history.rules == [
            HistoryRule(namespace: "chat", rooms: "*", limits: limits, replayOnJoin: 1),
            HistoryRule(namespace: "dashboard", rooms: "metrics.*", limits: limits, replayOnJoin: 1),
        ])
        #expect(history.maxRecoveryMessages == 200)
        let store = try #require(history.store as? MemoryHistoryStore)
        #expect(store.maxStreams == 7 && store.maxBytes == 1 << 20)
        #expect(history.rules[1].matches("metrics.cpu", in: "dashboard") && !history.rules[1].matches("cpu", in: "dashboard"))
        #expect(try Server.Configuration(config: try await Server.Configuration.reader(environment: [:])).history.rules.isEmpty)
    }

    @Test("History: the server reads a room's kept messages back (an app's own history ask)")
    func serverReadsHistory() async throws {
        let history = try await HistoryServer(rule: HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 5)))
        history.broadcast(1...8)
        let read = try await history.server.history(ofRoom: "lobby", in: "default")
        #expect(read.entries.compactMap { $0.message?.bodyString } == ["4", "5", "6", "7", "8"])
        #expect(read.latest.offset == 8 && !read.isComplete)
        let after = try await history.server.history(ofRoom: "lobby", in: "default", after: read.entries[2].position, limit: 10)
        #expect(after.entries.compactMap { $0.message?.bodyString } == ["7", "8"])
        #expect(after.isComplete)
        let limited = try await history.server.history(ofRoom: "lobby", in: "default", after: read.entries[0].position, limit: 2)
        #expect(limited.entries.compactMap { $0.message?.bodyString } == ["7", "8"] && !limited.isComplete)
        await history.stop()
    }
}
