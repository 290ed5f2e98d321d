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

    init(
        rule: HistoryRule = HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 1000)), maxRecovery: Int = 1000,
        shared: (any SharedHistoryStore)? = nil
    ) async throws {
        var events = Events()
        events.on("shout") { ns, m in ns.broadcast(Message(namespace: ns.namespace, room: m.room, event: "tick", body: m.body)) }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.history.rules = [rule]
        configuration.history.maxRecoveryMessages = maxRecovery
        configuration.history.shared = shared
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

    @Test("Recovery: with a shared history, a read that takes long while hundreds are delivered leaves no hole at the seam")
    func slowSharedRead() async throws {
        let store = SlowSharedHistory()
        let history = try await HistoryServer(shared: store)
        let bob = try await RecordingClient(history.url)
        let alice = try await RecordingClient(history.url)
        history.broadcast(1...5)
        try await alice.waitForTicks(Array(1...5))
        try await bob.waitForTicks(Array(1...5))
        // Alice's connection drops; her rejoin's read takes its snapshot (through 10), then
        // waits while 390 more are delivered: more than the node's last deliveries hold.
        store.holdNextRead()
        for ns in history.server.members(ofRoom: "lobby", in: "default") where ns.conn.id == alice.client.id {
            ns.conn.close(code: .goingAway, reason: "test")
        }
        history.broadcast(6...10)
        try await bob.waitForTicks(Array(1...10))
        try await store.waitUntilHolding()
        history.broadcast(11...400)
        try await bob.waitForTicks(Array(1...400))
        store.release()
        try await alice.recoveries.wait(for: "lobby:complete:395")
        try await alice.waitForTicks(Array(1...400))
        for client in [alice, bob] { await client.client.close() }
        await history.stop()
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

}

/// A shared history in memory whose next read can be held: it takes its snapshot when called,
/// and answers once released (a long read).
private final class SlowSharedHistory: SharedHistoryStore {
    private let state = Watched(State())

    private struct State {
        var entries: [SharedHistoryEntry] = []
        var holdNext = false
        var holding = false
        var released = false
    }

    let epoch = "slow-1"

    func holdNextRead() { state.update { $0.holdNext = true } }
    func release() { state.update { $0.released = true } }

    func waitUntilHolding() async throws {
        _ = try await state.wait(timeout: .seconds(10), orThrow: { ConformanceFailure("no read was held") }, until: { $0.holding ? .success(true) : nil })
    }

    func append(_ frame: ByteBuffer, isBinary: Bool, namespace: String, room: String) async throws -> (sequence: UInt64, previous: UInt64) {
        state.update { state -> (sequence: UInt64, previous: UInt64) in
            let previous = state.entries.last?.sequence ?? 0
            state.entries.append(SharedHistoryEntry(sequence: previous + 1, previous: previous, frame: frame, isBinary: isBinary))
            return (previous + 1, previous)
        }
    }

    func read(namespace: String, room: String, after sequence: UInt64, through: UInt64?, limit: Int) async throws -> SharedHistoryRead {
        let (snapshot, hold) = state.update { state -> ([SharedHistoryEntry], Bool) in
            defer { state.holdNext = false }
            if state.holdNext { state.holding = true }
            return (state.entries, state.holdNext)
        }
        if hold {
            _ = try await state.wait(timeout: .seconds(10), orThrow: { ConformanceFailure("never released") }, until: { $0.released ? .success(true) : nil })
        }
        let after = snapshot.filter { $0.sequence > sequence && $0.sequence <= (through ?? .max) }
        let entries = Array(after.suffix(max(0, limit)))
        let complete = entries.count == after.count && (entries.first?.previous ?? snapshot.last?.sequence ?? 0) == sequence
        return SharedHistoryRead(entries: entries, isComplete: complete, latest: snapshot.last?.sequence ?? 0)
    }
}
