import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosProcess
import NeffosTesting
import Testing

@testable import NeffosNATS

/// A Swift client that logs the `tick`s it receives and its recoveries.
private struct TickClient {
    let client: Client
    let ticks = TickLog()
    let recoveries = TickLog()
    let states = TickLog()

    init(_ url: String, room: String = "lobby") async throws {
        let (ticks, recoveries, states) = (self.ticks, self.recoveries, self.states)
        var events = Events()
        events.on("tick") { _, message in ticks.append(message.bodyString) }
        var configuration = Client.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        configuration.onRecovery = { recoveries.append("\($0.room):\($0.isComplete ? "complete" : "incomplete"):\($0.messages)") }
        client = try await Client.dial(url, namespaces: ["default": events], configuration: configuration)
        let stream = client.states()
        Task { for await state in stream { if case .disconnected = state { states.append("disconnected") } } }
        _ = try await client.connect("default").joinRoom(room)
    }
}

/// Lines, waited on.
private final class TickLog: Sendable {
    private let lines = Locked<[String]>([])
    private let changed = Watched<Int>(0)

    func append(_ line: String) {
        lines.withLock { $0.append(line) }
        changed.update { $0 += 1 }
    }

    var entries: [String] { lines.withLock { $0 } }

    /// How many lines, the last ones, and for numbers, those missing and those repeated.
    var summary: String {
        let entries = self.entries
        let numbers = entries.compactMap { Int($0) }
        guard numbers.count == entries.count, let top = numbers.max() else { return "\(entries.count): \(entries.suffix(10))" }
        let missing = Set(1...top).subtracting(numbers).sorted()
        let repeated = Dictionary(grouping: numbers, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted()
        return "\(entries.count), the last \(entries.suffix(5)); missing \(missing.prefix(20)), repeated \(repeated.prefix(20))"
    }

    func wait(_ what: String, timeout: Duration = .seconds(10), until predicate: @escaping @Sendable ([String]) -> Bool) async throws {
        _ = try await changed.wait(
            timeout: timeout, orThrow: { ConformanceFailure("timed out waiting for \(what); got \(self.summary)") },
            until: { _ in predicate(self.entries) ? .success(true) : nil })
    }
}

/// The history store conformance suite on JetStream: two nodes on one `nats-server -js` (a
/// server per check), the history named by URL and opened by each server at its start.
@Suite("History store conformance: JetStream")
struct JetStreamConformanceTests {
    @Test("History: JetStream passes the store conformance suite, shared by the cluster", arguments: HistoryConformance.checks(shared: true))
    func jetStream(_ check: HistoryConformance.Check) async throws {
        try await NATSServer.with(name: "js-conformance", jetStream: true) { nats in
            let backend = try HistoryStoreRegistry([.jetStream]).backend(for: nats.url + "?storage=memory")
            let suite = HistoryConformance(name: "JetStream", shared: true, makeExchange: { _ in try NATSExchange(url: nats.url) }) { _ in backend }
            try await suite.run(check)
        }
    }
}

@Suite("Recovery with JetStream")
struct JetStreamRecoveryTests {
    /// Two nodes on one nats-server (JetStream on, file storage), both keeping the lobby's
    /// history in one JetStream stream, named by URL as `neffos.history.store.url` would (each
    /// server opens it when it starts, for its cluster, with its rule's bounds).
    func cluster(_ nats: NATSServer, nodes: Int = 2, maxPerRoom: Int = 1000) async throws -> TestCluster {
        let backend = try HistoryStoreRegistry([.memory, .jetStream]).backend(for: nats.url)
        return try await TestCluster.start(nodes: nodes, namespaces: ["default": Events()], configure: { node, configuration in
            configuration.history.rules = [HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: maxPerRoom, maxAge: .seconds(600)))]
            configuration.history.use(backend)
            configuration.clusterName = "jstest"
        }) { _ in try NATSExchange(url: nats.url) }
    }

    /// Runs `body` with a `nats-server -js` and a cluster on it (given both), and stops both whatever happens.
    func withCluster(_ name: String, nodes: Int = 2, maxPerRoom: Int = 1000, _ body: (TestCluster, NATSServer) async throws -> Void) async throws {
        let nats = try await NATSServer.start(name: name, jetStream: true)
        do {
            let cluster = try await cluster(nats, nodes: nodes, maxPerRoom: maxPerRoom)
            do {
                try await cluster.servers[0].waitForClusterNodes("\(nodes) nodes") { $0.count == nodes }
                try await body(cluster, nats)
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        } catch {
            await nats.stop()
            throw error
        }
        await nats.stop()
    }

    /// Stops node `index`'s listener (its clients start reconnecting) and returns its port.
    fileprivate func takeDown(_ cluster: TestCluster, node index: Int, waitingFor client: TickClient) async throws -> Int {
        let port = try #require(cluster.listeners[index].port)
        await cluster.listeners[index].stop(timeout: .seconds(2))
        try await client.states.wait("disconnected") { !$0.isEmpty }
        return port
    }

    func broadcast(_ server: Server, _ range: ClosedRange<Int>) {
        for n in range { server.broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: "\(n)")) }
    }

    @Test("Recovery: with JetStream, a client recovers after the nats-server restarted (file storage), on a node that never saw the room")
    func recoversAfterRestart() async throws {
        try await withCluster("js-restart", nodes: 3) { cluster, nats in
            let alice = try await TickClient(cluster.url(of: 0))
            let bob = try await TickClient(cluster.url(of: 1))
            broadcast(cluster.servers[1], 1...5)
            try await alice.ticks.wait("5 ticks") { $0.count >= 5 }
            let port = try await takeDown(cluster, node: 0, waitingFor: alice)
            broadcast(cluster.servers[1], 6...55)
            try await bob.ticks.wait("55 kept") { $0.count >= 55 }
            // The bus restarts; what JetStream kept on disk is still there. Alice comes back to
            // node 2, which never had a member in the lobby: all she gets comes from JetStream.
            try await nats.restart()
            let again = WebSocketListener(server: cluster.servers[2], host: "127.0.0.1", port: port)
            try await again.start()
            try await alice.recoveries.wait("the recovery", timeout: .seconds(20)) { !$0.isEmpty }
            try await alice.ticks.wait("55 ticks") { $0.count >= 55 }
            #expect(alice.ticks.entries == (1...55).map(String.init))
            #expect(alice.recoveries.entries == ["lobby:complete:50"])
            await alice.client.close()
            await bob.client.close()
            await again.stop()
        }
    }
}
