import Logging
import NIOCore
import Neffos
import NeffosNIO
import Synchronization

/// The behaviour every exchange must show, checked on a cluster of three nodes with clients
/// on each: broadcasts to namespaces, rooms, IDs and all-but-a-sender across nodes, no
/// duplicates, each publisher's order, server asks across nodes (answered, unanswered,
/// timed out, answered twice), joins and leaves racing broadcasts, a node leaving, a bus
/// disconnect and reconnect, and names the bus could misread.
///
/// Run it from your tests with your exchange:
///
/// ```swift
/// @Test(arguments: ExchangeConformance.checks)
/// func myExchange(_ check: ExchangeConformance.Check) async throws {
///     let suite = ExchangeConformance(name: "mine") { node in MyExchange(...) }
///     try await suite.run(check)
/// }
/// ```
///
/// A failed expectation throws ``ConformanceFailure`` saying what was expected.
public struct ExchangeConformance: Sendable {
    /// Hooks that break and restore a node's bus connection (for the outage check).
    public struct Faults: Sendable {
        /// Makes node `index` lose its bus connection (the presence checks expect the other
        /// nodes to keep reaching each other meanwhile).
        public var disconnect: @Sendable (_ index: Int, _ cluster: TestCluster) async throws -> Void
        /// Gives node `index` its bus connection back.
        public var reconnect: @Sendable (_ index: Int, _ cluster: TestCluster) async throws -> Void

        /// Fault hooks.
        public init(
            disconnect: @escaping @Sendable (Int, TestCluster) async throws -> Void,
            reconnect: @escaping @Sendable (Int, TestCluster) async throws -> Void
        ) {
            self.disconnect = disconnect
            self.reconnect = reconnect
        }
    }

    /// One check of the suite.
    public struct Check: Sendable, CustomStringConvertible {
        /// What it checks.
        public let name: String
        let body: @Sendable (ExchangeConformance) async throws -> Void
        /// The name.
        public var description: String { name }
    }

    /// A label for failures.
    public let name: String
    /// The number of nodes (3 by default).
    public let nodes: Int
    /// The exchange of node *i*.
    public let makeExchange: @Sendable (Int) async throws -> any Exchange
    /// Outage hooks; without them the outage check is skipped.
    public let faults: Faults?

    /// A suite for the exchange `makeExchange` returns for each node.
    public init(
        name: String, nodes: Int = 3, faults: Faults? = nil,
        makeExchange: @escaping @Sendable (Int) async throws -> any Exchange
    ) {
        self.name = name
        self.nodes = max(3, nodes)
        self.faults = faults
        self.makeExchange = makeExchange
    }

    /// Runs `check`.
    public func run(_ check: Check) async throws {
        try await check.body(self)
    }

    /// Every check.
    public static let checks: [Check] = [
        Check(name: "namespace broadcast reaches every node", body: { try await $0.namespaceBroadcast() }),
        Check(name: "room broadcast reaches the room's members on every node", body: { try await $0.roomBroadcast() }),
        Check(name: "a message to an ID reaches that connection on its node", body: { try await $0.directMessage() }),
        Check(name: "all but the sender, across nodes", body: { try await $0.allButSender() }),
        Check(name: "no duplicates", body: { try await $0.noDuplicates() }),
        Check(name: "each publisher's order is kept", body: { try await $0.publisherOrder() }),
        Check(name: "a binary message stays binary across nodes", body: { try await $0.binaryAcrossNodes() }),
        Check(name: "server ask across nodes is answered", body: { try await $0.askAnswered() }),
        Check(name: "server ask answered twice: the first reply wins", body: { try await $0.askAnsweredTwice() }),
        Check(name: "server ask unanswered ends at its deadline", body: { try await $0.askUnanswered() }),
        Check(name: "a reply after the deadline is dropped", body: { try await $0.askLateReply() }),
        Check(name: "joins and leaves racing broadcasts", body: { try await $0.joinLeaveRacing() }),
        Check(name: "a node leaving", body: { try await $0.nodeLeaving() }),
        Check(name: "bus disconnect and reconnect resubscribes", body: { try await $0.busOutage() }),
        Check(name: "names with . * > spaces ; empty and non-ASCII", body: { try await $0.specialNames() }),
    ]

    /// The presence checks (cluster-wide listings, node liveness), apart so that test
    /// functions running them can carry `Presence` in their names (`swift test --filter
    /// Presence`). The partition check runs only with ``Faults`` that cut one node off while
    /// the others still reach each other.
    public static let presenceChecks: [Check] = [
        Check(name: "Presence: members, rooms, count and online, listed from every node", body: { try await $0.presenceListing() }),
        Check(name: "Presence: a node leaving is dropped at once", body: { try await $0.presenceNodeLeaving() }),
        Check(name: "Presence: a node killed is dropped within its bound", body: { try await $0.presenceNodeKilled() }),
        Check(name: "Presence: a partition healed re-learns the node", body: { try await $0.presencePartitionHealed() }),
        Check(name: "Presence: a node that does not answer is named", body: { try await $0.presenceUnansweredQuery() }),
        Check(name: "Presence: joins and leaves reach the nodes following the room, once; a killed node's members leave", body: { try await $0.presenceEvents() }),
    ]

    // MARK: Harness

    /// Starts a cluster, runs `body`, stops it.
    func withCluster(
        _ namespaces: Namespaces = ["default": Events()],
        configure: @Sendable @escaping (Int, inout Server.Configuration) -> Void = { _, _ in },
        _ body: (TestCluster) async throws -> Void
    ) async throws {
        let cluster = try await TestCluster.start(nodes: nodes, namespaces: namespaces, configure: configure, makeExchange: makeExchange)
        do {
            try await body(cluster)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// A client on node `index`, connected to `namespace`, recording what it receives.
    func member(
        _ cluster: TestCluster, at index: Int, namespace: String = "default", rooms: [String] = [],
        answers: [String: @Sendable (Message) -> Reply?] = [:]
    ) async throws -> (Client, NSConn, Received) {
        let received = Received()
        let client = try await cluster.client(at: index, namespaces: [namespace: received.events(answering: answers)])
        let ns = try await client.connect(namespace)
        for room in rooms { try await ns.joinRoom(room) }
        return (client, ns, received)
    }

    /// See ``TestCluster/waitUntilReachable(from:namespace:room:to:receivers:timeout:)``.
    func warmUp(
        _ cluster: TestCluster, from: Int, namespace: String = "default", room: String = "", to: String = "",
        receivers: [Received], timeout: Duration = .seconds(15)
    ) async throws {
        do {
            try await cluster.waitUntilReachable(from: from, namespace: namespace, room: room, to: to, receivers: receivers, timeout: timeout)
        } catch let failure as ConformanceFailure {
            throw ConformanceFailure("\(name): \(failure.description)")
        }
    }

    func expect(_ condition: Bool, _ what: @autoclosure () -> String) throws {
        if !condition { throw ConformanceFailure("\(name): \(what())") }
    }

    /// Waits until `receiver` has nothing more to receive for `event`: a marker sent after the
    /// messages arrived (same publisher, same subject).
    func drain(_ cluster: TestCluster, from: Int, namespace: String = "default", room: String = "", to: String = "",
               receivers: [Received]) async throws {
        let marker = "end-\(WaitTokens.shared.next())"
        var message = Message(namespace: namespace, room: room, event: "marker", body: marker)
        message.to = to
        cluster.servers[from].broadcast(message)
        for receiver in receivers {
            try await receiver.wait("marker \(marker)") { $0.contains { $0.event == "marker" && $0.bodyString == marker } }
        }
    }
}
