import Logging
import NIOCore
import Neffos
import NeffosNIO
import Synchronization

/// Several neffos servers on 127.0.0.1 (free ports), each one node of a cluster over its own
/// exchange connection, plus the clients a test dials to them.
///
/// ```swift
/// let bus = InProcessExchange()
/// let cluster = try await TestCluster.start(nodes: 3, namespaces: ["default": events]) { _ in bus }
/// let alice = try await cluster.client(at: 0)
/// ```
public final class TestCluster: Sendable {
    /// The servers, one per node.
    public let servers: [Server]
    /// Their listeners.
    public let listeners: [WebSocketListener]
    private let clients = Locked<[Client]>([])

    init(servers: [Server], listeners: [WebSocketListener]) {
        self.servers = servers
        self.listeners = listeners
    }

    /// Starts `nodes` servers, node *i* on the exchange `makeExchange(i)` returns.
    ///
    /// - Parameters:
    ///   - configure: adjusts each node's configuration (node index given).
    public static func start(
        nodes: Int,
        namespaces: Namespaces,
        configure: @Sendable (Int, inout Server.Configuration) -> Void = { _, _ in },
        makeExchange: @Sendable (Int) async throws -> any Exchange
    ) async throws -> TestCluster {
        var servers: [Server] = []
        var listeners: [WebSocketListener] = []
        do {
            for index in 0..<nodes {
                var configuration = Server.Configuration()
                configuration.logger = Logger(label: "cluster.node\(index)") { _ in SwiftLogNoOpLogHandler() }
                configuration.nodeName = "node-\(index)"
                configuration.askTimeout = .seconds(5)
                configuration.exchange = try await makeExchange(index)
                configure(index, &configuration)
                let server = try Server(namespaces: namespaces, configuration: configuration)
                let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0)
                try await listener.start()
                servers.append(server)
                listeners.append(listener)
            }
        } catch {
            for (listener, server) in zip(listeners, servers) {
                await listener.stop(timeout: .seconds(2))
                await server.shutdown(timeout: .seconds(2))
            }
            throw error
        }
        return TestCluster(servers: servers, listeners: listeners)
    }

    /// The WebSocket URL of node `index`.
    public func url(of index: Int) -> String { "ws://127.0.0.1:\(listeners[index].port ?? 0)/" }

    /// Dials a client to node `index` (closed by ``stop()``).
    public func client(
        at index: Int, namespaces: Namespaces = [:], configure: (inout Client.Configuration) -> Void = { _ in }
    ) async throws -> Client {
        var configuration = Client.Configuration()
        configuration.logger = Logger(label: "cluster.client") { _ in SwiftLogNoOpLogHandler() }
        configuration.askTimeout = .seconds(5)
        configure(&configuration)
        let client = try await Client.dial(url(of: index), namespaces: namespaces, configuration: configuration)
        clients.withLock { $0.append(client) }
        return client
    }

    /// Stops node `index` (its connections close with 1001, its exchange connection closes).
    public func stopNode(_ index: Int) async {
        await listeners[index].stop(timeout: .seconds(5))
        await servers[index].shutdown(timeout: .seconds(5))
    }

    /// Broadcasts probe messages (event `probe`) from node `from` until every receiver got one,
    /// that is, until the bus has propagated their interest; bounded by `timeout`.
    ///
    /// Over a real bus, a new subscription takes a moment to reach the other nodes (through
    /// NATS routes, say); call this before asserting what crosses nodes.
    ///
    /// - Throws: ``ConformanceFailure`` when the probes do not arrive in time.
    public func waitUntilReachable(
        from: Int, namespace: String = "default", room: String = "", to: String = "",
        receivers: [Received], timeout: Duration = .seconds(15)
    ) async throws {
        let start = ContinuousClock.now
        var attempt = 0
        let tag = "\(WaitTokens.shared.next())"
        while true {
            attempt += 1
            var probe = Message(namespace: namespace, room: room, event: "probe", body: "\(tag)-\(attempt)")
            probe.to = to
            servers[from].broadcast(probe)
            let wait = Duration.milliseconds(min(500, 20 * attempt))
            do {
                for receiver in receivers {
                    try await receiver.wait("probe \(tag)", timeout: wait) { messages in
                        messages.contains { $0.event == "probe" && $0.bodyString.hasPrefix(tag) }
                    }
                }
                return
            } catch {
                if ContinuousClock.now - start > timeout {
                    throw ConformanceFailure("node \(from) never reached its receivers (\(namespace)/\(room)/\(to)) within \(timeout)")
                }
            }
        }
    }

    /// Closes every client and stops every node.
    public func stop() async {
        for client in clients.withLock({ $0 }) { await client.close() }
        for index in listeners.indices { await stopNode(index) }
    }
}

/// What a test client received, by event, with waits.
public final class Received: Sendable {
    private let state = Watched<[Message]>([])

    /// An empty log.
    public init() {}

    /// Handlers that record every event of `namespace` (and answer the asks `answers` names).
    public func events(answering answers: [String: @Sendable (Message) -> Reply?] = [:]) -> Events {
        var events = Events()
        let record = self
        events.answer(.anyEvent) { _, message in
            let system = message.event.rawValue.hasPrefix("_On")
            if !system { record.append(message) }
            return answers[message.event.rawValue].flatMap { $0(message) }
        }
        return events
    }

    /// Records `message`.
    public func append(_ message: Message) {
        state.update { $0.append(message) }
    }

    /// Everything recorded.
    public var messages: [Message] { state.read { $0 } }

    /// The bodies of the messages of `event`, in arrival order.
    public func bodies(_ event: EventName) -> [String] {
        messages.filter { $0.event == event }.map(\.bodyString)
    }

    /// Waits until the log satisfies `predicate`, up to `timeout`.
    public func wait(
        _ what: String, timeout: Duration = .seconds(10), until predicate: @escaping @Sendable ([Message]) -> Bool
    ) async throws {
        _ = try await state.wait(
            timeout: timeout,
            orThrow: { [self] in
                ConformanceFailure("timed out waiting for \(what); received: \(messages.map { "\($0.event):\($0.bodyString)" }.suffix(20))")
            },
            until: { messages in predicate(messages) ? .success(true) : nil })
    }

    /// Waits until `count` messages of `event` arrived.
    public func wait(for count: Int, of event: EventName, timeout: Duration = .seconds(10)) async throws {
        try await wait("\(count) × \(event)", timeout: timeout) { $0.filter { $0.event == event }.count >= count }
    }
}

/// A failed conformance expectation.
public struct ConformanceFailure: Error, CustomStringConvertible {
    /// What was expected and what happened.
    public let description: String
    /// A failure with `description`.
    public init(_ description: String) { self.description = description }
}
