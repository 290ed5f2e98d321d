import Logging
import NIOCore
import Neffos
import NeffosNIO
import Synchronization

/// The behaviour every history store must show, through two servers of a cluster and real
/// clients: a client away while messages are broadcast gets exactly those, in order, then
/// live ones; trimmed history, a bounded recovery and another epoch are reported as not
/// recovered with what is kept; frames are the protocol's without the extension; a joining
/// member gets the newest kept messages; the server reads a room back; clients dropped again
/// and again while broadcasts flow get each message once; binary messages stay binary; and,
/// for a history shared by the cluster, a client recovers on another node.
///
/// Run it from your tests with your store:
///
/// ```swift
/// @Test(arguments: HistoryConformance.checks(shared: false))
/// func myStore(_ check: HistoryConformance.Check) async throws {
///     let bus = InProcessExchange()
///     let suite = HistoryConformance(name: "mine", shared: false, makeExchange: { _ in bus }) { _ in .node(MyStore()) }
///     try await suite.run(check)
/// }
/// ```
///
/// Each check runs its own cluster (its own ``Server/Configuration/clusterName``, so one
/// exchange and one JetStream server can serve checks running at once). A failed expectation
/// throws ``ConformanceFailure`` saying what was expected.
public struct HistoryConformance: Sendable {
    /// One check of the suite.
    public struct Check: Sendable, CustomStringConvertible {
        /// What it checks.
        public let name: String
        /// Whether it needs positions that mean the same on every node (a shared history).
        public let needsShared: Bool
        let body: @Sendable (HistoryConformance) async throws -> Void
        /// The name.
        public var description: String { name }
    }

    /// A label for failures.
    public let name: String
    /// Whether the store is shared by the cluster (``HistoryBackend/shared(_:)``).
    public let isShared: Bool
    /// The exchange of node *i*.
    public let makeExchange: @Sendable (Int) async throws -> any Exchange
    /// The history store of node *i* (for a shared history, the same for every node).
    public let makeStore: @Sendable (Int) throws -> HistoryBackend

    /// A suite for the store `makeStore` returns for each node, on the exchanges
    /// `makeExchange` returns.
    public init(
        name: String, shared: Bool, makeExchange: @escaping @Sendable (Int) async throws -> any Exchange,
        makeStore: @escaping @Sendable (Int) throws -> HistoryBackend
    ) {
        self.name = name
        self.isShared = shared
        self.makeExchange = makeExchange
        self.makeStore = makeStore
    }

    /// The checks for a store that is shared by the cluster or not.
    public static func checks(shared: Bool) -> [Check] {
        allChecks.filter { shared || !$0.needsShared }
    }

    /// Runs `check`.
    public func run(_ check: Check) async throws {
        guard isShared || !check.needsShared else { return }
        try await check.body(self)
    }

    func expect(_ condition: Bool, _ what: @autoclosure () -> String) throws {
        if !condition { throw ConformanceFailure("\(name): \(what())") }
    }

    /// Starts two nodes keeping `rule`'s rooms, each with a witness: a member of `room` on
    /// node 1 that is never dropped (what it received, the node kept).
    func cluster(_ rule: HistoryRule, maxRecovery: Int = 1000, room: String = "lobby") async throws -> HistoryCluster {
        let clusterName = "hc-\(UInt32.random(in: 0...UInt32.max))"
        var servers: [Server] = []
        var listeners: [WebSocketListener] = []
        do {
            for index in 0..<2 {
                var configuration = Server.Configuration()
                configuration.logger = Logger(label: "history.node\(index)") { _ in SwiftLogNoOpLogHandler() }
                configuration.nodeName = "\(clusterName)-\(index)"
                configuration.clusterName = clusterName
                configuration.exchange = try await makeExchange(index)
                configuration.history.rules = [rule]
                configuration.history.maxRecoveryMessages = maxRecovery
                configuration.history.use(try makeStore(index))
                let server = try Server(namespaces: ["default": Events()], configuration: configuration)
                let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0)
                try await listener.start()
                servers.append(server)
                listeners.append(listener)
            }
            let cluster = HistoryCluster(TestCluster(servers: servers, listeners: listeners), room: room)
            try await servers[0].waitForClusterNodes("both nodes") { $0.count == 2 }
            try await cluster.startWitness()
            return cluster
        } catch {
            for (listener, server) in zip(listeners, servers) {
                await listener.stop(timeout: .seconds(2))
                await server.shutdown(timeout: .seconds(2))
            }
            throw error
        }
    }
}

/// Two nodes, a witness on node 1, and the listeners a check takes down and brings back.
final class HistoryCluster: Sendable {
    let nodes: TestCluster
    let room: String
    private let witnessBox = Locked<HistoryMember?>(nil)
    private let extra = Locked<[WebSocketListener]>([])

    init(_ nodes: TestCluster, room: String) {
        self.nodes = nodes
        self.room = room
    }

    var witness: HistoryMember { witnessBox.withLock { $0! } }

    func startWitness() async throws {
        let witness = try await HistoryMember(url(of: 1), room: room)
        witnessBox.withLock { $0 = witness }
        try await nodes.servers[1].flushExchange()
    }

    /// A member of the room on node `node`, its interest on the bus before it returns.
    func member(on node: Int) async throws -> HistoryMember {
        let member = try await HistoryMember(url(of: node), room: room)
        try await nodes.servers[node].flushExchange()
        return member
    }

    func url(of node: Int) -> String { nodes.url(of: node) }

    /// Broadcasts `tick` with bodies `range` from node `node` to the room.
    func broadcast(_ range: ClosedRange<Int>, from node: Int = 0, binary: Bool = false) {
        for n in range {
            var message = Message(namespace: "default", room: room, event: "tick", body: "\(n)")
            message.isBinary = binary
            nodes.servers[node].broadcast(message)
        }
    }

    /// Waits until the witness received `count` ticks: the broadcasts so far are kept.
    func waitKept(_ count: Int) async throws {
        try await witness.waitForCount(count)
    }

    /// Stops node `node`'s listener (its clients start reconnecting); returns its port.
    func takeDown(_ node: Int, waitingFor member: HistoryMember) async throws -> Int {
        let port = nodes.listeners[node].port ?? 0
        await nodes.listeners[node].stop(timeout: .seconds(2))
        try await member.waitForDisconnection()
        return port
    }

    /// Serves node `node` on `port` again (or another node there: its clients come back to it).
    func bringBack(_ node: Int, on port: Int) async throws {
        let listener = WebSocketListener(server: nodes.servers[node], host: "127.0.0.1", port: port)
        try await listener.start()
        extra.withLock { $0.append(listener) }
    }

    func stop() async {
        await witness.client.close()
        for listener in extra.withLock({ $0 }) { await listener.stop(timeout: .seconds(2)) }
        await nodes.stop()
    }
}

/// A client in a room that records the `tick`s it receives (body, binary or not), its
/// recoveries and its reconnections.
final class HistoryMember: Sendable {
    let client: Client
    private let log = Watched(Record())

    struct Record {
        var ticks: [String] = []
        var binary: [Bool] = []
        var recoveries: [RoomRecovery] = []
        var disconnections = 0
        var reconnections = 0
    }

    init(_ url: String, room: String = "lobby") async throws {
        let log = self.log
        var events = Events()
        events.on("tick") { _, message in log.update { $0.ticks.append(message.bodyString); $0.binary.append(message.isBinary) } }
        var configuration = Client.Configuration()
        configuration.logger = Logger(label: "history.member") { _ in SwiftLogNoOpLogHandler() }
        configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        configuration.onRecovery = { recovery in log.update { $0.recoveries.append(recovery) } }
        client = try await Client.dial(url, namespaces: ["default": events], configuration: configuration)
        let states = client.states()
        Task {
            for await state in states {
                switch state {
                case .disconnected: log.update { $0.disconnections += 1 }
                case .reconnected: log.update { $0.reconnections += 1 }
                default: break
                }
            }
        }
        _ = try await client.connect("default").joinRoom(room)
    }

    var record: Record { log.read { $0 } }
    var ticks: [String] { record.ticks }
    var recoveries: [RoomRecovery] { record.recoveries }

    /// What it received, said briefly: how many, the last ones, those missing and repeated.
    var summary: String {
        let ticks = self.ticks
        let numbers = ticks.compactMap { Int($0) }
        guard let top = numbers.max() else { return "nothing" }
        let missing = Set(1...top).subtracting(numbers).sorted()
        let repeated = Dictionary(grouping: numbers, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted()
        return "\(ticks.count) ticks, the last \(ticks.suffix(5)), missing \(missing.prefix(20)), repeated \(repeated.prefix(20)); recoveries \(recoveries.map { "\($0.isComplete ? "complete" : "incomplete"):\($0.messages)" })"
    }

    private func wait(_ what: String, timeout: Duration = .seconds(15), until condition: @escaping @Sendable (Record) -> Bool) async throws {
        _ = try await log.wait(
            timeout: timeout, orThrow: { ConformanceFailure("timed out waiting for \(what); got \(self.summary)") },
            until: { condition($0) ? .success(true) : nil })
    }

    func waitForCount(_ count: Int, timeout: Duration = .seconds(15)) async throws {
        try await wait("\(count) ticks", timeout: timeout) { $0.ticks.count >= count }
    }

    func waitForDisconnection() async throws {
        try await wait("a disconnection") { $0.disconnections > 0 }
    }

    func waitForReconnections(_ count: Int) async throws {
        try await wait("\(count) reconnections", timeout: .seconds(30)) { $0.reconnections >= count }
    }

    func waitForRecoveries(_ count: Int) async throws {
        try await wait("\(count) recoveries") { $0.recoveries.count >= count }
    }

    /// Waits until it received as many ticks as `expected` holds, then says whether they are
    /// exactly those.
    func receivedExactly(_ expected: [Int], timeout: Duration = .seconds(15)) async throws -> Bool {
        try await waitForCount(expected.count, timeout: timeout)
        return ticks == expected.map(String.init)
    }
}
