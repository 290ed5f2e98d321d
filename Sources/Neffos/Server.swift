#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Metrics
import NIOCore
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
    /// How a server behaves; every field has a documented default.
    public struct Configuration: Sendable {
        /// The deadline of asks that do not give one. Default: 10 s.
        public var askTimeout: Duration = .seconds(10)
        /// How long a connection may take to send `M` before it is closed (1008). `nil` waits
        /// forever (as the Go server does). Default: 10 s.
        public var handshakeTimeout: Duration? = .seconds(10)
        /// Makes the ID of each new connection. Default: a random UUIDv4, lower case.
        /// IDs you generate need not be unique; a message sent `to` an ID reaches every
        /// connection bearing it.
        public var idGenerator: @Sendable (UpgradeRequest) -> String = { _ in
            UUID().uuidString.lowercased()
        }
        /// Encodes and decodes typed bodies. Default: JSON.
        public var bodyCoder: any BodyCoder = JSONBodyCoder()
        /// The error texts resolved back to error values. Default: the built-in ones.
        public var knownErrors = KnownErrors()
        /// Events a connection may have waiting for their handler before the server stops
        /// reading from it (backpressure). Also the number of frames a client may send before
        /// the handshake completes (with at most ``TransportConfiguration/maxMessageSize``
        /// bytes in all); past either, it is closed (1008). Default: 1024.
        public var maxQueuedEvents = 1024
        /// Delivers broadcasts to every receiver in one global order (B1 before B2 everywhere)
        /// at some cost in throughput. Default: off (each publisher's order is kept).
        public var strictBroadcastOrdering = false
        /// Calls ``onDisconnect`` also for connections that never completed the handshake or
        /// were refused by ``onConnect``. Default: off.
        public var fireDisconnectAlways = false
        /// Called for each new connection before it is accepted; throw to refuse it (the
        /// client receives `H<error>` and a 1008 close). It may force the client into
        /// namespaces with ``Conn/connect(_:timeout:)``.
        public var onConnect: (@Sendable (Conn) async throws -> Void)?
        /// Called once a connection has closed and its local disconnect events have fired.
        public var onDisconnect: (@Sendable (Conn) async -> Void)?
        /// Called when an HTTP request could not be upgraded to a WebSocket (bad headers,
        /// refused origin, too many connections).
        public var onUpgradeError: (@Sendable (any Error) -> Void)?
        /// Where the server logs (connection events at debug level). Default: label `neffos`.
        public var logger = Logger(label: "neffos")
        /// A `server` dimension added to the metrics, to tell servers apart. Default: none.
        public var metricsName: String?

        /// The WebSocket transport settings (used by the listener).
        public var transport = TransportConfiguration()

        /// The exchange that makes this server one node of a cluster; `nil` (the default) runs
        /// it alone. Pick one from configuration with ``ExchangeRegistry``.
        public var exchange: (any Exchange)?
        /// This node's name on the exchange. Default: a random UUID.
        public var nodeName: String?
        /// Separates clusters sharing one bus (a subject prefix). Default: `default`.
        public var clusterName = "default"
        /// Called when the node's exchange connection changes state (also logged).
        public var onExchangeStatus: (@Sendable (ExchangeStatus) -> Void)?

        /// The default configuration.
        public init() {}
    }

    /// WebSocket-level settings, applied by the listener to every connection.
    public struct TransportConfiguration: Sendable {
        /// The largest message (after reassembling fragments) accepted; a bigger one closes the
        /// connection with 1009. Default: 1 MiB.
        public var maxMessageSize = 1 << 20
        /// The largest single WebSocket frame accepted. Default: 1 MiB.
        public var maxFrameSize = 1 << 20
        /// Bytes a connection may have queued for sending before further broadcasts and emits
        /// to it are dropped (and counted). Replies to the connection's own requests and asks
        /// are never dropped: they may queue as much again, past which the connection is
        /// closed (1008, "outbox overflow"). Default: 1 MiB.
        public var maxOutboxBytes = 1 << 20
        /// Refuses new connections beyond this number (HTTP 503). `nil`: no limit.
        public var maxConnections: Int?
        /// Closes a connection that sent nothing (no frame, no pong) for this long. Default:
        /// `nil` (the ping heartbeat covers dead peers).
        public var readTimeout: Duration?
        /// Closes a connection whose outbox stayed full for this long (a client that stopped
        /// reading). Default: 30 s.
        public var writeTimeout: Duration? = .seconds(30)
        /// Pings each connection this often; a connection that sends nothing (no pong, no
        /// frame) through two pings is closed with 1008, two to three intervals after it went
        /// silent. Default: 30 s. `nil` disables the heartbeat.
        public var pingInterval: Duration? = .seconds(30)
        /// Decides whether a request's `Origin` header is allowed (`nil` when absent).
        /// Default: every origin.
        public var checkOrigin: (@Sendable (String?) -> Bool)?

        /// The default settings.
        public init() {}
    }

    /// The configuration the server runs with.
    public let configuration: Configuration
    /// The declared namespaces.
    public let namespaces: Namespaces
    /// The server's logger.
    public var logger: Logger { configuration.logger }

    let metrics: ServerMetrics
    let settings: ConnSettings
    private let registry = Locked(Registry())
    private let broadcastOrder = Locked(())
    /// Connections accepted and not yet closed (what `maxConnections` limits).
    private let live = Atomic<Int>(0)
    /// Connections accepted whose close events have not all fired (what shutdown waits for).
    private let unfinished = Atomic<Int>(0)
    private let opened = Atomic<Int>(0)
    private let serverAsks = Locked<[String: PendingServerAsk]>([:])

    /// A server-wide ask waiting for its first reply, and the timer that ends it.
    private struct PendingServerAsk {
        let continuation: CheckedContinuation<Message, any Error>
        var timer: Task<Void, Never>?
    }
    private let linkBox = Locked<ClusterLink?>(nil)
    private let starting = Locked<Task<Void, any Error>?>(nil)
    /// This node's name on the exchange.
    public let nodeName: String

    private let lifecycle = Locked(Lifecycle())

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
        self.settings = ConnSettings(
            askTimeout: configuration.askTimeout,
            bodyCoder: configuration.bodyCoder,
            knownErrors: configuration.knownErrors,
            maxQueuedEvents: max(2, configuration.maxQueuedEvents),
            maxBytesBeforeHandshake: configuration.transport.maxMessageSize,
            logger: configuration.logger)
    }

    // MARK: Starting

    /// Connects the configured exchange (if any), before connections are accepted. The
    /// listener calls it; call it yourself when you drive the server through another
    /// transport. Idempotent.
    ///
    /// - Throws: the exchange's error (for example, no NATS server reachable).
    public func start() async throws {
        guard let exchange = configuration.exchange else { return }
        let task = starting.withLock { task -> Task<Void, any Error> in
            if let task { return task }
            let started = Task { try await self.connect(exchange) }
            task = started
            return started
        }
        try await task.value
    }

    private func connect(_ exchange: any Exchange) async throws {
        let logger = self.logger
        let statusHook = configuration.onExchangeStatus
        let connection = try await exchange.connect(
            node: nodeName, logger: logger,
            deliver: { [weak self] _, payload in
                guard let self, let link = self.link else { return }
                link.receive(payload, server: self)
            },
            status: { status in
                switch status {
                case .connected, .reconnected: logger.info("exchange \(status)")
                case .closed: logger.debug("exchange closed")
                default: logger.warning("exchange \(status)")
                }
                statusHook?(status)
            })
        let link = ClusterLink(node: nodeName, cluster: Subjects.token(configuration.clusterName), connection: connection, logger: logger)
        if unfinished.load(ordering: .relaxed) > 0 {
            logger.warning("the exchange started after connections were accepted; their memberships are not known to the cluster (start the server before accepting)")
        }
        linkBox.withLock { $0 = link }
        try await connection.flush()
    }

    /// The link to the cluster, once started with an exchange.
    var link: ClusterLink? { linkBox.withLock { $0 } }

    /// The subjects this node is subscribed to on its exchange, with their reference counts
    /// (for tests and diagnostics; empty without an exchange).
    public var exchangeSubscriptions: [String: Int] { link?.subscriptions ?? [:] }

    /// The node's exchange counters, or `nil` without an exchange.
    public var exchangeStatistics: ExchangeStatistics? { link?.connection.statistics }

    /// Waits until what this node published and subscribed so far has reached the bus.
    public func flushExchange() async throws {
        try await link?.connection.flush()
    }

    // MARK: Accepting connections

    /// Whether the server accepts new connections (not shutting down, under the limit).
    package var acceptsConnections: Bool {
        if lifecycle.withLock({ $0.shuttingDown }) { return false }
        if let limit = configuration.transport.maxConnections {
            return live.load(ordering: .relaxed) < limit
        }
        return true
    }

    /// Takes a freshly upgraded WebSocket; call on the transport's event loop.
    package func accept(transport: any ConnTransport, request: UpgradeRequest) -> Conn {
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
        conn.startServerSide(transport: transport, handshakeTimeout: configuration.handshakeTimeout)
        if !namespaces.isNativeOnly {
            let loop = transport.eventLoop
            if let hook = configuration.onConnect {
                Task {
                    do {
                        try await hook(conn)
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
        registry.withLock { Array($0.connections.values) }
    }

    /// A snapshot of the connections connected to `namespace`.
    public func connections(namespace: String) -> [NSConn] {
        registry.withLock { $0.namespaces[namespace]?.members.all.map(\.nsConn) ?? [] }
    }

    /// A snapshot of the members of `room` in `namespace`.
    public func members(ofRoom room: String, in namespace: String) -> [NSConn] {
        registry.withLock { $0.namespaces[namespace]?.rooms[room]?.all.map(\.nsConn) ?? [] }
    }

    /// The names of the rooms that have members in `namespace`.
    public func rooms(in namespace: String) -> [String] {
        registry.withLock { $0.namespaces[namespace].map { Array($0.rooms.keys).sorted() } ?? [] }
    }

    /// The open connections whose ID is `id` (several when your ID generator repeats IDs).
    public func connections(id: String) -> [Conn] {
        registry.withLock { Array($0.byID[id]?.values ?? [:].values) }
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

    // MARK: Broadcasting

    /// Sends `message` to every connection connected to its namespace; narrowed to a room's
    /// members when ``Message/room`` is set, and to the connections with ID ``Message/to``
    /// when that is set. `except` leaves one connection out (a ``Conn``, ``NSConn``, ``Room``
    /// or ``Exclude``).
    ///
    /// Safe from anywhere, never blocks on a receiver: the frame is encoded once and queued to
    /// each receiver's outbox; a full outbox drops it (counted).
    ///
    /// With an exchange, the message is also published once for the other nodes, which
    /// deliver it to their own connections.
    ///
    /// - Returns: the number of local connections the frame was queued to.
    @discardableResult
    public func broadcast(_ message: Message, except: (any ConnectionIdentifiable)? = nil) -> Int {
        var message = message
        message.wait = ""
        let frame: ByteBuffer
        do {
            frame = try MessageCodec.encode(message)
        } catch {
            logger.debug("broadcast not sent", metadata: ["error": "\(error)"])
            return 0
        }
        let excluded = except?.connectionID
        let local = deliverLocally(frame, binary: message.isBinary, namespace: message.namespace,
                                   room: message.room, to: message.to, except: excluded)
        link?.publish(.broadcast, frame: frame, binary: message.isBinary, namespace: message.namespace,
                      room: message.room, to: message.to, except: excluded)
        return local
    }

    /// Queues `frame` to the local receivers; returns how many.
    func deliverLocally(
        _ frame: ByteBuffer, binary: Bool, namespace: String, room: String, to: String, except: String?
    ) -> Int {
        let (groups, count) = registry.withLock { r in
            r.targets(namespace: namespace, room: room, to: to, except: except)
        }
        guard count > 0 else { return 0 }
        let metrics = self.metrics
        @Sendable func deliver(_ group: LoopGroup) {
            var dropped = 0
            for member in group.members.values where member.id != except {
                if !member.transport.write(frame, binary: binary, reliable: false) { dropped += 1 }
            }
            for member in group.members.values where member.id != except { member.transport.flush() }
            if dropped > 0 { metrics.dropped(dropped) }
        }
        if configuration.strictBroadcastOrdering {
            // One global order: every loop receives its share in the order broadcasts took
            // this lock, and never inline (an inline write would overtake queued ones).
            broadcastOrder.withLock { _ in
                for group in groups { group.lane.queue { deliver(group) } }
            }
        } else {
            for group in groups { group.lane.run { deliver(group) } }
        }
        metrics.messagesOut.increment(by: Int64(count))
        return count
    }

    // MARK: Asking

    /// Asks connections and waits for the first reply.
    ///
    /// The ask goes to the connections with ID `to` when given, otherwise to every connection
    /// of the message's namespace (or room), on this node and, with an exchange, on every
    /// other node. The first reply wins; later ones are dropped.
    ///
    /// - Throws: the replying client's error; ``NeffosError/timeout`` when nobody replied in
    ///   time; `CancellationError`.
    public func ask(_ message: Message, to id: String? = nil, timeout: Duration? = nil) async throws -> Message {
        var message = message
        message.wait = WaitTokens.shared.serverToken()
        if let id { message.to = id }
        let token = message.wait
        let frame = try MessageCodec.encode(message)
        let deadline = timeout ?? configuration.askTimeout
        let event = message.event
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Message, any Error>) in
                serverAsks.withLock { $0[token] = PendingServerAsk(continuation: continuation) }
                // The timer starts after the ask is registered (so even a zero deadline finds
                // it), and is kept unless a reply already ended the ask.
                let timer = Task {
                    guard (try? await Task.sleep(for: deadline)) != nil else { return }
                    self.resolveServerAsk(token, .failure(NeffosError.timeout.with(detail: "nobody answered \"\(event)\" within \(deadline)")), timedOut: true)
                }
                let kept = serverAsks.withLock { asks -> Bool in
                    guard asks[token] != nil else { return false }
                    asks[token]?.timer = timer
                    return true
                }
                if !kept { timer.cancel() }
                let receivers = deliverLocally(
                    frame, binary: message.isBinary, namespace: message.namespace,
                    room: message.room, to: message.to, except: nil)
                let link = self.link
                if let link {
                    let deadlineNanos = Int64(WaitTokens.wallClockNanoseconds()) + Int64(deadline.timeAmount.nanoseconds)
                    link.publish(.ask, frame: frame, binary: message.isBinary, namespace: message.namespace,
                                 room: message.room, to: message.to, except: nil, token: token, deadline: deadlineNanos)
                }
                if receivers == 0 && link == nil {
                    resolveServerAsk(token, .failure(NeffosError.timeout.with(detail: "no connection to ask \"\(event)\"")))
                }
            }
        } onCancel: {
            self.resolveServerAsk(token, .failure(CancellationError()))
        }
    }

    /// A reply another node forwarded for one of this node's asks.
    func receiveRemoteReply(_ envelope: Envelope) {
        do {
            var reply = try MessageCodec.decode(envelope.frame, isBinary: envelope.binary, knownErrors: configuration.knownErrors)
            reply.wait = envelope.token
            resolveServerAsk(envelope.token, reply.error.map { .failure($0) } ?? .success(reply))
        } catch {
            logger.debug("dropped a malformed forwarded reply", metadata: ["error": "\(error)"])
        }
    }

    /// Ends the server-wide ask `token` with `result` (counted as timed out when `timedOut`);
    /// returns whether it was still waiting.
    @discardableResult
    private func resolveServerAsk(_ token: String, _ result: Result<Message, any Error>, timedOut: Bool = false) -> Bool {
        guard let ask = serverAsks.withLock({ $0.removeValue(forKey: token) }) else { return false }
        if timedOut { metrics.askTimedOut() } else { ask.timer?.cancel() }
        ask.continuation.resume(with: result)
        return true
    }

    // MARK: Shutting down

    /// Stops accepting, closes every connection with 1001 (going away), and waits until each
    /// has fired its disconnect events and hooks, or until `timeout`.
    public func shutdown(timeout: Duration = .seconds(10)) async {
        lifecycle.withLock { $0.shuttingDown = true }
        await closeConnections(timeout: timeout)
        let link = linkBox.withLock { box in
            defer { box = nil }
            return box
        }
        await link?.connection.close()
    }

    private func closeConnections(timeout: Duration) async {
        for conn in registry.withLock({ Array($0.all.values) }) {
            conn.close(code: .goingAway, reason: "server shutting down")
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let id = lifecycle.withLock { l -> UInt64? in
                guard self.unfinished.load(ordering: .relaxed) > 0 else { return nil }
                let id = l.nextWaiter
                l.nextWaiter += 1
                l.drained[id] = continuation
                return id
            }
            guard let id else {
                continuation.resume()
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                self.lifecycle.withLock { $0.drained.removeValue(forKey: id) }?.resume()
            }
        }
    }

    struct Lifecycle {
        var shuttingDown = false
        var drained: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }
}

// MARK: - Connection events

extension Server: ConnDelegate {
    func connDidOpen(_ conn: Conn) {
        opened.add(1, ordering: .relaxed)
        metrics.connections.increment()
        registry.withLock { $0.open(conn) }
        if let link { link.retain(link.connectionSubject(conn.id)) }
    }

    func conn(_ conn: Conn, didConnect ns: NSConn, transport: (any ConnTransport)?) {
        guard let transport else { return }
        let added = registry.withLock { $0.add(Member(nsConn: ns, transport: transport, id: conn.id)) }
        if added, let link { link.retain(link.namespaceSubject(ns.namespace)) }
    }

    func conn(_ conn: Conn, didDisconnect ns: NSConn) {
        let removed = registry.withLock { $0.remove(ns) }
        if removed, let link { link.release(link.namespaceSubject(ns.namespace)) }
    }

    func conn(_ conn: Conn, didJoin room: String, in ns: NSConn) {
        let joined = registry.withLock { $0.join(ns, room: room) }
        if joined, let link { link.retain(link.roomSubject(ns.namespace, room)) }
    }

    func conn(_ conn: Conn, didLeave room: String, in ns: NSConn) {
        let left = registry.withLock { $0.leave(ns, room: room) }
        if left, let link { link.release(link.roomSubject(ns.namespace, room)) }
    }

    func connShouldReconnect(_ conn: Conn, reason: CloseReason) -> Bool { false }

    func connDidClose(_ conn: Conn, reason: CloseReason) {
        live.subtract(1, ordering: .relaxed)
        let wasOpen = registry.withLock { $0.close(conn) }
        if wasOpen, let link { link.release(link.connectionSubject(conn.id)) }
        if wasOpen {
            opened.add(-1, ordering: .relaxed)
            metrics.connections.decrement()
        }
        conn.logger.debug("connection closed", metadata: ["reason": "\(reason)"])
    }

    func connDidFinish(_ conn: Conn, reason: CloseReason) async {
        if let hook = configuration.onDisconnect, conn.everOpened || configuration.fireDisconnectAlways {
            await hook(conn)
        }
        let remaining = unfinished.subtract(1, ordering: .relaxed).newValue
        if remaining == 0 {
            let waiters = lifecycle.withLock { l in
                defer { l.drained = [:] }
                return l.drained.values
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    func conn(_ conn: Conn, didReceiveUnmatchedReply reply: Message) -> Bool {
        let result: Result<Message, any Error> = reply.error.map { .failure($0) } ?? .success(reply)
        if resolveServerAsk(reply.wait, result) { return true }
        return link?.forwardReply(reply) ?? false
    }
}

// MARK: - Excluding a sender

/// Identifies a connection, to leave it out of a broadcast.
public protocol ConnectionIdentifiable: Sendable {
    /// The ID of the connection to leave out.
    var connectionID: String { get }
}

extension Conn: ConnectionIdentifiable {
    /// The connection's ID.
    public var connectionID: String { id }
}

extension NSConn: ConnectionIdentifiable {
    /// The connection's ID.
    public var connectionID: String { conn.id }
}

extension Room: ConnectionIdentifiable {
    /// The ID of the connection that joined the room.
    public var connectionID: String { nsConn.conn.id }
}

/// Leaves the connection with this ID out of a broadcast, when you have its ID only.
public struct Exclude: ConnectionIdentifiable {
    /// The ID to leave out.
    public let connectionID: String
    /// Leaves out the connection with ID `id`.
    public init(_ id: String) { connectionID = id }
}

extension NSConn {
    /// Broadcasts `message` to every connection of its namespace (or room), this one
    /// included. Server side only; does nothing on a client.
    @discardableResult
    public func broadcast(_ message: Message) -> Int {
        conn.server?.broadcast(message) ?? 0
    }

    /// Broadcasts `message` to every connection of its namespace (or room) but this one.
    /// Server side only; does nothing on a client.
    @discardableResult
    public func broadcastOthers(_ message: Message) -> Int {
        conn.server?.broadcast(message, except: self) ?? 0
    }
}

// MARK: - The index of connections, namespaces and rooms

/// One connection's membership in a namespace, as broadcasts need it: where to write and
/// what to compare.
struct Member: Sendable {
    let nsConn: NSConn
    let transport: any ConnTransport
    let id: String
}

/// The members of one event loop, so that a broadcast hops once per loop.
struct LoopGroup: Sendable {
    let lane: LoopLane
    var members: [ObjectIdentifier: Member] = [:]
}

/// A set of members grouped by event loop.
struct MemberSet {
    var groups: [ObjectIdentifier: LoopGroup] = [:]
    var count = 0

    var all: [Member] { groups.values.flatMap { $0.members.values } }

    mutating func insert(_ member: Member) {
        let loopID = ObjectIdentifier(member.transport.eventLoop)
        let key = ObjectIdentifier(member.nsConn)
        if groups[loopID] == nil { groups[loopID] = LoopGroup(lane: member.transport.lane) }
        if groups[loopID]!.members.updateValue(member, forKey: key) == nil { count += 1 }
    }

    mutating func remove(_ ns: NSConn, loop: ObjectIdentifier) -> Member? {
        guard let removed = groups[loop]?.members.removeValue(forKey: ObjectIdentifier(ns)) else { return nil }
        count -= 1
        if groups[loop]!.members.isEmpty { groups[loop] = nil }
        return removed
    }

    func contains(_ ns: NSConn, loop: ObjectIdentifier) -> Bool {
        groups[loop]?.members[ObjectIdentifier(ns)] != nil
    }
}

/// One namespace's members and rooms.
struct NamespaceIndex {
    var members = MemberSet()
    var rooms: [String: MemberSet] = [:]
    var byID: [String: [ObjectIdentifier: Member]] = [:]
    /// The loop of each member, to find it again.
    var loops: [ObjectIdentifier: ObjectIdentifier] = [:]
}

/// Every open connection and every namespace and room membership of a server.
struct Registry {
    var connections: [ObjectIdentifier: Conn] = [:]
    var all: [ObjectIdentifier: Conn] = [:]
    var byID: [String: [ObjectIdentifier: Conn]] = [:]
    var namespaces: [String: NamespaceIndex] = [:]

    mutating func open(_ conn: Conn) {
        let key = ObjectIdentifier(conn)
        connections[key] = conn
        all[key] = conn
        byID[conn.id, default: [:]][key] = conn
    }

    /// Forgets `conn`; returns whether it was open.
    mutating func close(_ conn: Conn) -> Bool {
        let key = ObjectIdentifier(conn)
        all[key] = nil
        guard connections.removeValue(forKey: key) != nil else { return false }
        let id = conn.id
        byID[id]?[key] = nil
        if byID[id]?.isEmpty == true { byID[id] = nil }
        return true
    }

    /// Mutates the index of `namespace` in place (never a copy: a copy of a namespace's
    /// member tables per join would cost O(members)).
    @inline(__always)
    private mutating func withIndex<Result>(_ namespace: String, _ body: (inout NamespaceIndex) -> Result) -> Result {
        body(&namespaces[namespace, default: NamespaceIndex()])
    }

    @discardableResult
    mutating func add(_ member: Member) -> Bool {
        let key = ObjectIdentifier(member.nsConn)
        return withIndex(member.nsConn.namespace) { index in
            guard index.loops[key] == nil else { return false }
            index.members.insert(member)
            index.byID[member.id, default: [:]][key] = member
            index.loops[key] = ObjectIdentifier(member.transport.eventLoop)
            return true
        }
    }

    /// Removes `ns`; returns whether it was there. Its rooms were left first by the
    /// connection (``ConnStateMachine/removeNamespace(_:)``), so no room is scanned here.
    @discardableResult
    mutating func remove(_ ns: NSConn) -> Bool {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return false }
        let removed = withIndex(ns.namespace) { index -> Bool in
            guard let loop = index.loops.removeValue(forKey: key) else { return false }
            if let member = index.members.remove(ns, loop: loop) {
                index.byID[member.id]?[key] = nil
                if index.byID[member.id]?.isEmpty == true { index.byID[member.id] = nil }
            }
            return true
        }
        if namespaces[ns.namespace]?.members.count == 0 { namespaces[ns.namespace] = nil }
        return removed
    }

    /// Adds `ns` to `room`; returns whether it was not a member yet.
    @discardableResult
    mutating func join(_ ns: NSConn, room: String) -> Bool {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return false }
        return withIndex(ns.namespace) { index in
            guard let loop = index.loops[key], let member = index.members.groups[loop]?.members[key],
                index.rooms[room]?.contains(ns, loop: loop) != true
            else { return false }
            index.rooms[room, default: MemberSet()].insert(member)
            return true
        }
    }

    /// Removes `ns` from `room`; returns whether it was a member.
    @discardableResult
    mutating func leave(_ ns: NSConn, room: String) -> Bool {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return false }
        return withIndex(ns.namespace) { index in
            guard let loop = index.loops[key], index.rooms[room]?.remove(ns, loop: loop) != nil else { return false }
            if index.rooms[room]?.count == 0 { index.rooms[room] = nil }
            return true
        }
    }

    /// The loop groups a broadcast goes to, and how many receivers they hold once the
    /// connection with ID `except` is left out.
    func targets(namespace: String, room: String, to: String, except: String?) -> ([LoopGroup], Int) {
        guard let index = namespaces[namespace] else { return ([], 0) }
        let excluded = except.flatMap { index.byID[$0] } ?? [:]
        if !to.isEmpty {
            guard to != except, let members = index.byID[to] else { return ([], 0) }
            var set = MemberSet()
            for (key, member) in members {
                guard let loop = index.loops[key] else { continue }
                if room.isEmpty || index.rooms[room]?.contains(member.nsConn, loop: loop) == true {
                    set.insert(member)
                }
            }
            return (Array(set.groups.values), set.count)
        }
        let set: MemberSet
        if room.isEmpty {
            set = index.members
        } else {
            guard let members = index.rooms[room] else { return ([], 0) }
            set = members
        }
        var count = set.count
        for (key, member) in excluded {
            if let loop = index.loops[key], set.contains(member.nsConn, loop: loop) { count -= 1 }
        }
        return (Array(set.groups.values), count)
    }
}

// MARK: - Metrics and statistics

extension Server {
    /// Counters of what the server did, since it started. Cheap to read.
    public struct Statistics: Sendable, Equatable {
        /// Connections accepted (upgraded), including those later refused.
        public var accepted: Int
        /// Connections open now (handshake completed).
        public var open: Int
        /// Frames dropped because a receiver's outbox was full.
        public var droppedFrames: Int
        /// Asks (by the server or its connections) that got no reply in time.
        public var asksTimedOut: Int
        /// Frames dropped because they could not be decoded.
        public var invalidFrames: Int
    }

    /// What the server did so far (also exported as swift-metrics).
    public var statistics: Statistics {
        Statistics(
            accepted: metrics.acceptedTotal.load(ordering: .relaxed),
            open: connectionCount,
            droppedFrames: metrics.droppedTotal.load(ordering: .relaxed),
            asksTimedOut: metrics.timedOutTotal.load(ordering: .relaxed),
            invalidFrames: metrics.invalidTotal.load(ordering: .relaxed))
    }
}

/// The server's counters: swift-metrics (the application bootstraps a backend) and, for the
/// rare events, atomics behind ``Server/statistics``.
final class ServerMetrics: Sendable {
    let connections: Meter
    let messagesIn: Counter
    let messagesOut: Counter
    private let accepted: Counter
    private let droppedFrames: Counter
    private let asksTimedOut: Counter
    private let invalidFrames: Counter
    let acceptedTotal = Atomic<Int>(0)
    let droppedTotal = Atomic<Int>(0)
    let timedOutTotal = Atomic<Int>(0)
    let invalidTotal = Atomic<Int>(0)

    init(name: String?) {
        let dimensions = name.map { [("server", $0)] } ?? []
        accepted = Counter(label: "neffos_connections_accepted", dimensions: dimensions)
        connections = Meter(label: "neffos_connections", dimensions: dimensions)
        messagesIn = Counter(label: "neffos_messages_in", dimensions: dimensions)
        messagesOut = Counter(label: "neffos_messages_out", dimensions: dimensions)
        droppedFrames = Counter(label: "neffos_dropped_frames", dimensions: dimensions)
        asksTimedOut = Counter(label: "neffos_asks_timed_out", dimensions: dimensions)
        invalidFrames = Counter(label: "neffos_invalid_frames", dimensions: dimensions)
    }

    func acceptedConnection() {
        accepted.increment()
        acceptedTotal.add(1, ordering: .relaxed)
    }

    func dropped(_ count: Int) {
        droppedFrames.increment(by: Int64(count))
        droppedTotal.add(count, ordering: .relaxed)
    }

    func askTimedOut() {
        asksTimedOut.increment()
        timedOutTotal.add(1, ordering: .relaxed)
    }

    func invalidFrame() {
        invalidFrames.increment()
        invalidTotal.add(1, ordering: .relaxed)
    }
}
