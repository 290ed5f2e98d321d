#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Tracing
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// A neffos server: it accepts WebSocket connections (through a transport such as
/// `NeffosNIO`'s `WebSocketListener`), runs their namespaces and events, and broadcasts.
///
/// ```swift
/// var chat = Events()
/// chat.on("chat") { ns, message in ns.broadcastOthers(message) }
/// let server = try Server(namespaces: ["default": chat])
/// ```
///
/// Broadcasts never wait for a slow client: each connection has a bounded outbox, and a
/// frame that does not fit is dropped and counted (metric `neffos_dropped_frames`). The frame
/// of a broadcast is encoded once, whatever the number of receivers.
public final class Server: Sendable {
    /// The configuration the server runs with.
    public let configuration: Configuration
    /// The declared namespaces.
    public let namespaces: Namespaces
    /// The server's logger.
    public var logger: Logger { configuration.logger }

    let metrics: ServerMetrics
    /// The server's spans; `nil` when no tracer records anything.
    let tracing: ServerTracing?
    /// Whether the server makes spans (a tracer other than the no-op one is configured or
    /// bootstrapped).
    public var isTracing: Bool { tracing != nil }
    let settings: ConnSettings
    /// What transports derive once from the configuration (``transportValue(_:)``).
    private let transportValues = Locked<[ObjectIdentifier: any Sendable]>([:])
    /// Every open connection and membership (what broadcasts read).
    let index = Locked(ConnectionIndex())
    /// Taken around a broadcast's hand-off with ``Configuration/strictBroadcastOrdering``.
    let broadcastOrder = Locked(())
    /// Emptied rooms with history whose subscription waits for their history to age out.
    let keptReleases = Locked<[String: PendingRelease]>([:])
    /// With a shared history: each room's appends in flight (one at a time, in order), and what
    /// this node delivered of each room.
    let sharedAppends = Locked<[HistoryStream: PendingAppends]>([:])
    let sharedRooms = Locked<[HistoryStream: SharedRoomState]>([:])
    /// The shared history, once open (at start, or at once when the configuration gives an
    /// open store).
    let openedShared = AtomicLazyReference<OpenedSharedHistory>()
    /// Connections accepted and not yet closed (what `maxConnections` limits).
    let live = Atomic<Int>(0)
    /// Transport-level connections (TCP, upgraded or not) holding a slot.
    let connectionSlots = Watched(0)
    /// Connections accepted whose close events have not all fired (what shutdown waits for).
    let unfinished = Atomic<Int>(0)
    /// Connections open (handshake completed).
    let opened = Atomic<Int>(0)
    /// The server's own asks to its connections, waiting for a first reply.
    let serverAsks = Locked(PendingReplies<Message, BroadcastTarget>())
    /// The server's asks that ended lately (a reply to one is late or duplicate).
    let endedAsks = Locked(EndedTokens(capacity: 4096))
    let linkBox = Locked<ClusterLink?>(nil)
    /// The rooms whose presence this node follows, and their members elsewhere.
    let presenceRooms = Locked(PresenceRooms())
    private let starting = Locked<Task<Void, any Error>?>(nil)
    /// This node's name on the exchange.
    public let nodeName: String

    let lifecycle = Locked(Lifecycle())

    /// Creates a server for `namespaces`.
    ///
    /// - Throws: ``NeffosError/unrepresentableName`` when a namespace or event name contains
    ///   the protocol's reserved escape text.
    public init(namespaces: Namespaces, configuration: Configuration = Configuration()) throws {
        try namespaces.validateNames()
        self.namespaces = namespaces
        self.configuration = configuration
        self.nodeName = configuration.nodeName ?? UUID().uuidString.lowercased()
        self.metrics = ServerMetrics(name: configuration.metricsName)
        self.tracing = ServerTracing(configured: configuration.tracer, node: nodeName)
        self.settings = ConnSettings(
            askTimeout: configuration.askTimeout,
            bodyCoder: configuration.bodyCoder,
            knownErrors: configuration.knownErrors,
            maxQueuedEvents: max(2, configuration.maxQueuedEvents),
            maxBytesBeforeHandshake: configuration.transport.maxMessageSize,
            logger: configuration.logger,
            handlerErrors: configuration.handlerErrors,
            maxQueuedBytes: max(1, configuration.maxQueuedBytes),
            maxPendingAsks: max(1, configuration.maxPendingAsks),
            membership: .init(maxRooms: max(0, configuration.maxRoomsPerConnection), maxNameBytes: max(1, configuration.maxNameLength)))
        if let store = configuration.history.shared as? any SharedHistoryStore { _ = openedShared.storeIfNil(OpenedSharedHistory(store)) }
    }

    /// The value of type `Value` a transport shares among this server's connections (its
    /// settings, derived from ``configuration``): made by `make` on first use, one per type.
    package func transportValue<Value: Sendable>(_ make: () -> Value) -> Value {
        transportValues.withLock { values in
            if let value = values[ObjectIdentifier(Value.self)] as? Value { return value }
            let value = make()
            values[ObjectIdentifier(Value.self)] = value
            return value
        }
    }

    // MARK: Starting

    /// Opens the shared history and connects the exchange (if configured), before connections
    /// are accepted. The listener calls it; call it yourself when you drive the server through
    /// another transport. Idempotent.
    ///
    /// - Throws: the shared history's or the exchange's error (for example, no NATS server
    ///   reachable, or JetStream off).
    public func start() async throws {
        let exchange = configuration.exchange
        let connector = sharedHistory == nil ? configuration.history.shared : nil
        guard exchange != nil || connector != nil else { return }
        let task = starting.withLock { task -> Task<Void, any Error> in
            if let task { return task }
            let started = Task {
                if let connector { try await self.open(connector) }
                if let exchange { try await self.connect(exchange) }
            }
            task = started
            return started
        }
        try await task.value
    }

    /// The shared history, once open; `nil` without one (or before ``start()`` opened it).
    var sharedHistory: (any SharedHistoryStore)? { openedShared.load()?.store }

    private func open(_ connector: any SharedHistoryConnector) async throws {
        let limits = configuration.history.widestLimits
        let store = try await connector.open(cluster: configuration.clusterName, limits: limits, logger: logger)
        _ = openedShared.storeIfNil(OpenedSharedHistory(store))
        logger.info("shared history open", metadata: ["epoch": "\(store.epoch)", "maxCount": "\(limits.maxCount)", "maxAge": "\(limits.maxAge)"])
    }

    private func connect(_ exchange: any Exchange) async throws {
        let logger = self.logger
        let statusHook = configuration.onExchangeStatus
        let metrics = self.metrics
        let link = try await ClusterLink.connect(
            exchange, node: nodeName, cluster: Subjects.token(configuration.clusterName), local: self, logger: logger, metrics: metrics,
            tracing: tracing, presence: configuration.presence,
            status: { status in
                switch status {
                case .connected, .reconnected:
                    logger.info("exchange \(status)")
                    metrics.exchangeUp.record(1)
                case .closed:
                    logger.debug("exchange closed")
                    metrics.exchangeUp.record(0)
                case .disconnected:
                    logger.warning("exchange \(status)")
                    metrics.exchangeUp.record(0)
                default:
                    logger.warning("exchange \(status)")
                }
                statusHook?(status)
            })
        metrics.exchangeUp.record(1)
        if unfinished.load(ordering: .relaxed) > 0 {
            logger.warning("the exchange started after connections were accepted; their memberships are not known to the cluster (start the server before accepting)")
        }
        linkBox.withLock { $0 = link }
        try await link.connection.flush()
    }

    /// The link to the cluster, once started with an exchange.
    var link: ClusterLink? { linkBox.withLock { $0 } }

    /// The subjects this node is subscribed to on its exchange, with their reference counts
    /// (for tests and diagnostics; empty without an exchange).
    public var exchangeSubscriptions: [String: Int] { link?.subscriptions ?? [:] }

    /// The node's exchange counters, or `nil` without an exchange.
    public var exchangeStatistics: ExchangeStatistics? {
        guard let link else { return nil }
        var statistics = link.connection.statistics
        statistics.lost = link.lost
        return statistics
    }

    /// Waits until what this node published and subscribed so far has reached the bus.
    public func flushExchange() async throws {
        try await link?.connection.flush()
    }

    // MARK: Accepting connections

    /// Whether the server accepts new connections (not shutting down, under the limit).
    package var acceptsConnections: Bool {
        if isShuttingDown { return false }
        if let limit = configuration.transport.maxConnections {
            return live.load(ordering: .relaxed) < limit
        }
        return true
    }

    /// Whether ``shutdown(timeout:)`` has begun: transports refuse new connections (`503`).
    public var isShuttingDown: Bool { lifecycle.withLock { $0.shuttingDown } }

    /// Takes one of `limit` slots for a transport-level connection (a TCP connection, upgraded
    /// or not), shared by every listener of this server; `false` when all are taken.
    /// Give the slot back with ``releaseConnectionSlot()`` when the connection closes.
    package func reserveConnectionSlot(limit: Int) -> Bool {
        connectionSlots.update { taken in
            guard taken < limit else { return false }
            taken += 1
            return true
        }
    }

    /// Gives back a slot taken with ``reserveConnectionSlot(limit:)``.
    package func releaseConnectionSlot() {
        connectionSlots.update { $0 -= 1 }
    }

    /// Transport-level connections holding a slot (upgraded or not).
    package var connectionSlotsTaken: Int { connectionSlots.read { $0 } }

    /// Waits until the number of transport-level connections holding a slot satisfies
    /// `condition` (for tests).
    package func waitForConnectionSlots(
        _ what: String, timeout: Duration = .seconds(10), until condition: @escaping @Sendable (Int) -> Bool
    ) async throws {
        _ = try await connectionSlots.wait(
            timeout: timeout,
            orThrow: { NeffosError.timeout.with(detail: "\(what); connections holding a slot: \(self.connectionSlotsTaken)") },
            until: { condition($0) ? .success(true) : nil })
    }

    /// Takes a freshly upgraded WebSocket from a transport and returns the connection it now
    /// carries. Call it on the transport's event loop, then feed the connection its frames with
    /// ``Conn/transportReceived(_:binary:)`` and its end with ``Conn/transportClosed(_:)``
    /// (see ``ConnectionTransport``). The listener and the Hummingbird and Vapor mounts call it;
    /// call it yourself only when you bring connections through a WebSocket implementation of
    /// your own.
    ///
    /// The server may close the connection at once (with ``CloseCode/goingAway``, while it
    /// shuts down); the transport sees that as a ``ConnectionTransport/close(code:reason:)``.
    public func accept(transport: any ConnectionTransport, request: UpgradeRequest) -> Conn {
        let transport: any ConnTransport = (transport as? any ConnTransport) ?? LanedTransport(transport)
        let tries = request.header("X-Websocket-Reconnect").flatMap { Int($0.filter { !$0.isWhitespace }) } ?? 0
        let conn = Conn(
            isClient: false,
            id: configuration.idGenerator(request),
            server: self,
            request: request,
            reconnectTries: max(0, tries),
            namespaces: namespaces,
            settings: settings,
            delegate: self)
        live.add(1, ordering: .relaxed)
        unfinished.add(1, ordering: .relaxed)
        metrics.acceptedConnection()
        // Native-only servers have no neffos handshake to trace.
        if !namespaces.isNativeOnly { tracing?.startHandshake(conn, request: request) }
        conn.startServerSide(transport: transport, handshakeTimeout: configuration.handshakeTimeout)
        if isShuttingDown {
            // Accepted by a transport that had not yet heard of the shutdown.
            conn.close(code: .goingAway, reason: "server shutting down")
            return conn
        }
        if !namespaces.isNativeOnly {
            let loop = transport.eventLoop
            if let hook = configuration.onConnect {
                Task {
                    do {
                        // The hook runs in the handshake's span: its own spans nest there.
                        try await InstrumentationContext.withValue(self.tracing?.handshakeContext(conn)) { try await hook(conn) }
                        loop.execute { conn.receiveVerdict(.accepted) }
                    } catch {
                        loop.execute { conn.receiveVerdict(.refused(error)) }
                    }
                }
            } else {
                conn.receiveVerdict(.accepted)
            }
        }
        return conn
    }

    // MARK: Looking at connections

    /// The number of open connections (handshake completed). Cheap: an atomic load.
    public var connectionCount: Int { opened.load(ordering: .relaxed) }

    /// A snapshot of the open connections.
    public func connections() -> [Conn] {
        index.withLock { Array($0.connections.values) }
    }

    /// A snapshot of the connections connected to `namespace`.
    public func connections(namespace: String) -> [NSConn] {
        index.withLock { $0.namespaces[namespace]?.members.all.map(\.nsConn) ?? [] }
    }

    /// A snapshot of the members of `room` in `namespace`.
    public func members(ofRoom room: String, in namespace: String) -> [NSConn] {
        index.withLock { $0.namespaces[namespace]?.rooms[room]?.all.map(\.nsConn) ?? [] }
    }

    /// The names of the rooms that have members in `namespace`.
    public func rooms(in namespace: String) -> [String] {
        index.withLock { $0.namespaces[namespace].map { Array($0.rooms.keys).sorted() } ?? [] }
    }

    /// The open connections whose ID is `id` (several when your ID generator repeats IDs).
    public func connections(id: String) -> [Conn] {
        index.withLock { $0.byID[id]?.values ?? [] }
    }

    /// Calls `body` for each open connection (a snapshot), in the caller's context (neffos's
    /// `Do`).
    public func forEachConnection(_ body: (Conn) throws -> Void) rethrows {
        for conn in connections() { try body(conn) }
    }

    /// Calls `body` for each open connection (a snapshot), concurrently, and waits for all
    /// (neffos's `Do` with `async`).
    public func forEachConnectionConcurrently(_ body: @escaping @Sendable (Conn) async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            for conn in connections() { group.addTask { await body(conn) } }
        }
    }

    // MARK: Shutting down

    /// Stops accepting, closes every connection with 1001 (going away), and waits until each
    /// has fired its disconnect events and hooks, or until `timeout`.
    public func shutdown(timeout: Duration = .seconds(10)) async {
        lifecycle.withLock { $0.shuttingDown = true }
        await closeConnections(timeout: timeout)
        await detachLink(sayingGoodbye: true)
    }

    /// Takes the link away, stops its heartbeats (with a goodbye to the other nodes, or
    /// silently as a crash would) and closes its exchange connection.
    func detachLink(sayingGoodbye: Bool) async {
        let link = linkBox.withLock { box in
            defer { box = nil }
            return box
        }
        link?.stopHeartbeats(sayingGoodbye: sayingGoodbye)
        await link?.connection.close()
    }

    private func closeConnections(timeout: Duration) async {
        let drained = OnceFlag()
        lifecycle.withLock { $0.drained = drained }
        for conn in index.withLock({ Array($0.connections.values) }) {
            conn.close(code: .goingAway, reason: "server shutting down")
        }
        if unfinished.load(ordering: .relaxed) == 0 { drained.set() }
        _ = await drained.wait(timeout: timeout)
    }

    struct Lifecycle {
        var shuttingDown = false
        /// Set when the last unfinished connection finished, during shutdown.
        var drained: OnceFlag?
    }
}

// MARK: - Service

extension Server: Service {
    /// Runs the server as a swift-service-lifecycle `Service`: connects the exchange
    /// (``start()``), waits for graceful shutdown (or cancellation), then shuts down
    /// (``shutdown(timeout:)``): every connection, whichever listener or mount brought it, is
    /// closed once with 1001 (going away), their disconnect hooks run, and the exchange
    /// connection closes.
    ///
    /// Put it in the application's `ServiceGroup` **before** the listeners and mounts that
    /// bring it connections: the group shuts services down in reverse order, so they stop
    /// accepting first and the server closes what is left.
    ///
    /// ```swift
    /// let server = try Server(namespaces: namespaces)
    /// let listener = WebSocketListener(server: server, port: 8080, path: "/echo")
    /// let group = ServiceGroup(configuration: .init(
    ///     services: [server, listener], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    /// try await group.run()
    /// ```
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown(timeout: configuration.shutdownTimeout)
    }
}
