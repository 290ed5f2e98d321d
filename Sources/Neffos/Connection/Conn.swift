import DequeModule
import Logging
import NIOCore
import Synchronization

/// Settings a connection runs with; the server's and the client's configurations fill them.
///
/// A class, shared by every connection of a server: kept inline, these ~200 bytes would be
/// held once per connection.
final class ConnSettings: Sendable {
    let askTimeout: Duration
    let bodyCoder: any BodyCoder
    /// Whether handlers run with ``bodyCoder`` bound as ``BodyCoders/current`` (it is not the
    /// default JSON coder, which needs no binding).
    let bindsBodyCoder: Bool
    let knownErrors: KnownErrors
    /// What a handler's thrown error sends on the wire.
    let handlerErrors: HandlerErrorPolicy
    /// Events waiting for their handler before the connection stops reading (and frames kept
    /// before the handshake completes, past which it is closed).
    let maxQueuedEvents: Int
    /// Bytes of frames kept before the handshake completes, past which it is closed.
    let maxBytesBeforeHandshake: Int
    /// Body bytes of events waiting for their handler before the connection stops reading.
    let maxQueuedBytes: Int
    /// Asks this side may have waiting for their reply; one more fails with
    /// ``NeffosError/limitExceeded``.
    let maxPendingAsks: Int
    /// What the peer may join.
    let membership: ConnStateMachine.MembershipBounds
    let logger: Logger

    init(
        askTimeout: Duration, bodyCoder: any BodyCoder, knownErrors: KnownErrors, maxQueuedEvents: Int,
        maxBytesBeforeHandshake: Int, logger: Logger, handlerErrors: HandlerErrorPolicy = .describe,
        maxQueuedBytes: Int = .max, maxPendingAsks: Int = .max,
        membership: ConnStateMachine.MembershipBounds = .init()
    ) {
        self.askTimeout = askTimeout
        self.bodyCoder = bodyCoder
        self.bindsBodyCoder = bodyCoder.needsBinding
        self.knownErrors = knownErrors
        self.maxQueuedEvents = maxQueuedEvents
        self.maxBytesBeforeHandshake = maxBytesBeforeHandshake
        self.logger = logger
        self.handlerErrors = handlerErrors
        self.maxQueuedBytes = maxQueuedBytes
        self.maxPendingAsks = maxPendingAsks
        self.membership = membership
    }
}

/// What a connection tells its owner (the server, or the client that dialled it).
///
/// Calls are made outside the connection's lock. The membership calls (`connDidOpen`,
/// `didConnect`, `didJoin`, `didLeave`, `didDisconnect`, `connDidClose`) come in the order the
/// changes happened, one at a time per connection (``ConnStateMachine/OwnerEvent``).
protocol ConnDelegate: AnyObject, Sendable {
    /// The handshake completed: the connection is open.
    func connDidOpen(_ conn: Conn)
    /// The connection entered a namespace.
    func conn(_ conn: Conn, didConnect ns: NSConn, transport: (any ConnTransport)?)
    /// The connection left a namespace.
    func conn(_ conn: Conn, didDisconnect ns: NSConn)
    /// The connection joined a room; `recovery` says what the join's reply carries and what
    /// follows it (a room with history), or is `nil` (the empty reply was sent).
    func conn(_ conn: Conn, didJoin room: String, in ns: NSConn, recovery: JoinRecovery?)
    /// The connection left a room.
    func conn(_ conn: Conn, didLeave room: String, in ns: NSConn)
    /// The transport of a client connection was lost without a local close; returns whether
    /// the connection should wait for a new transport (reconnection) instead of closing.
    func connShouldReconnect(_ conn: Conn, reason: CloseReason) -> Bool
    /// The transport closed; called at once, before the local close events are fired.
    func connDidClose(_ conn: Conn, reason: CloseReason)
    /// The local close events have all been fired: the connection is finished.
    func connDidFinish(_ conn: Conn, reason: CloseReason) async
    /// Whether ``connDidFinishNow(_:reason:)`` can stand for ``connDidFinish(_:reason:)`` (the
    /// owner has nothing to await for `conn`). Default: `false`.
    func connFinishesNow(_ conn: Conn) -> Bool
    /// ``connDidFinish(_:reason:)`` without suspending; called only after
    /// ``connFinishesNow(_:)`` said so.
    func connDidFinishNow(_ conn: Conn, reason: CloseReason)
    /// A reply arrived whose token this connection does not wait for; returns whether the
    /// owner took it (a server-wide ask).
    func conn(_ conn: Conn, didReceiveUnmatchedReply reply: Message) -> Bool
}

extension ConnDelegate {
    func connFinishesNow(_ conn: Conn) -> Bool { false }
    func connDidFinishNow(_ conn: Conn, reason: CloseReason) {}
}

/// A WebSocket connection that speaks neffos: the server's view of a client, or a client's
/// connection to a server.
///
/// A connection enters namespaces (``connect(_:timeout:)``), and each namespace connection
/// (``NSConn``) emits, asks, joins rooms and broadcasts. Its events are handled one at a time,
/// in arrival order.
public final class Conn: Sendable {
    /// Whether this is a client-side connection.
    public let isClient: Bool
    /// The server that accepted this connection; `nil` on the client side.
    public let server: Server?
    /// The upgrade request: headers (with `X-Websocket-Header-*` query parameters folded in),
    /// path and peer address. Empty on the client side.
    public let request: UpgradeRequest
    /// How many times the client had already tried to reconnect when it opened this
    /// connection (the `X-Websocket-Reconnect` header).
    public let reconnectTries: Int
    /// Values your handlers keep with the connection (made on first use: a connection whose
    /// handlers keep nothing holds no store).
    public var store: ConnStore {
        machine.withLock { machine in
            if let store = machine.store { return store }
            let store = ConnStore()
            machine.store = store
            return store
        }
    }
    /// Whether the client asked for the history extension (server side: the upgrade header
    /// `X-Neffos-Recovery: 1`): its room broadcasts carry positions and its joins may recover.
    public let wantsPositions: Bool
    /// The connection's logger: the server's (or client's) logger with metadata `neffos.conn`
    /// (the connection's ID).
    ///
    /// Made when read rather than kept: a logger with metadata of its own costs a few hundred
    /// bytes, which an idle connection would hold for nothing. Keep the value in a local when
    /// logging several times in a row.
    public var logger: Logger {
        var logger = settings.logger
        logger[metadataKey: "neffos.conn"] = .string(id)
        return logger
    }

    /// Logs at debug level through ``logger``, made only when the level lets the message
    /// through (the framework's own debug messages, some of them per connection).
    func logDebug(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        guard settings.logger.logLevel <= .debug else { return }
        logger.debug(message(), metadata: metadata())
    }

    let namespaces: Namespaces
    let settings: ConnSettings
    let delegate: any ConnDelegate
    let tokens: WaitTokens
    /// The protocol state; see ``ConnStateMachine`` for the rule: ask it under the lock, act
    /// after.
    let machine: Locked<ConnStateMachine>
    /// The ID the connection was made with: on the server side its ID for life.
    private let serverID: String
    /// A client's ID, set at the handshake: behind its own lock so that it can be read while
    /// `machine` is held (a leaf lock). `nil` on the server side, which needs no lock.
    private let clientID: Locked<String>?

    init(
        isClient: Bool,
        id: String,
        server: Server?,
        request: UpgradeRequest,
        reconnectTries: Int,
        namespaces: Namespaces,
        settings: ConnSettings,
        delegate: any ConnDelegate,
        tokens: WaitTokens = .shared
    ) {
        self.isClient = isClient
        self.server = server
        self.request = request
        self.wantsPositions = !isClient && request.header(RecoveryWire.header) == "1"
        self.reconnectTries = reconnectTries
        self.namespaces = namespaces
        self.settings = settings
        self.delegate = delegate
        self.tokens = tokens
        self.machine = Locked(ConnStateMachine(
            isClient: isClient, maxQueuedEvents: settings.maxQueuedEvents, maxQueuedBytes: settings.maxQueuedBytes))
        self.serverID = id
        self.clientID = isClient ? Locked(id) : nil
    }

    /// The connection's ID: generated by the server, received by the client in the handshake.
    public var id: String { clientID?.withLock { $0 } ?? serverID }

    /// Sets the ID the server gave (client side, at the handshake).
    func setID(_ id: String) { clientID?.withLock { $0 = id } }

    /// Whether the handshake ever completed (the connection was open at some point).
    var everOpened: Bool { machine.withLock { $0.everOpened } }

    /// Whether the client was reconnecting when it opened this connection.
    public var wasReconnected: Bool { reconnectTries > 0 }

    /// Whether the connection is closed.
    public var isClosed: Bool { machine.withLock { $0.phase.isClosed } }

    /// The coder that typed handlers and ``NSConn/emit(_:encoding:)`` use.
    public var bodyCoder: any BodyCoder { settings.bodyCoder }

    /// The namespace connection for `namespace`, if connected.
    public func namespace(_ namespace: String) -> NSConn? {
        machine.withLock { $0.namespace(namespace) }
    }

    /// The namespaces this connection is connected to.
    public var connectedNamespaces: [NSConn] {
        machine.withLock { $0.namespaces.values.map(\.nsConn) }
    }

    /// Closes the connection with a close frame. The local disconnect events fire
    /// (``Message/isForced`` set), then the server's on-disconnect hook.
    public func close(code: CloseCode = .normal, reason: String = "") {
        machine.withLock { $0.requestClose() }?.close(code: code, reason: reason)
    }

    /// Delivers the owner events the machine queued, in order, outside the lock. One thread
    /// delivers at a time; one that finds another delivering leaves its events to it.
    func notifyOwner() {
        guard var events = machine.withLock({ $0.startNotifying() }) else { return }
        while true {
            for event in events { deliver(event) }
            guard let more = machine.withLock({ $0.continueNotifying() }) else { return }
            events = more
        }
    }

    private func deliver(_ event: ConnStateMachine.OwnerEvent) {
        switch event {
        case .opened: delegate.connDidOpen(self)
        case .connected(let ns, let transport): delegate.conn(self, didConnect: ns, transport: transport)
        case .disconnected(let ns): delegate.conn(self, didDisconnect: ns)
        case .joined(let room, let ns, let recovery): delegate.conn(self, didJoin: room, in: ns, recovery: recovery)
        case .left(let room, let ns): delegate.conn(self, didLeave: room, in: ns)
        case .closed(let reason): delegate.connDidClose(self, reason: reason)
        }
    }
}

extension Conn: CustomStringConvertible {
    /// The connection's ID.
    public var description: String { id }
}

/// Values kept with a connection: a small thread-safe key-value store.
///
/// ```swift
/// conn.store["user"] = "alice"
/// let visits = conn.store.increment("visits")
/// ```
public final class ConnStore: Sendable {
    private let values = Locked<[String: any Sendable]>([:])

    init() {}

    /// The value for `key`, or `nil`.
    public subscript(key: String) -> (any Sendable)? {
        get { values.withLock { $0[key] } }
        set { values.withLock { $0[key] = newValue } }
    }

    /// The value for `key` if it is a `Value`.
    public func get<Value: Sendable>(_ key: String, as type: Value.Type = Value.self) -> Value? {
        values.withLock { $0[key] as? Value }
    }

    /// Adds one to the integer at `key` atomically (a missing or non-integer value counts as
    /// 0) and returns the new value.
    @discardableResult
    public func increment(_ key: String, by amount: Int = 1) -> Int {
        values.withLock { values in
            let next = ((values[key] as? Int) ?? 0) + amount
            values[key] = next
            return next
        }
    }

    /// Subtracts one from the integer at `key` atomically and returns the new value.
    @discardableResult
    public func decrement(_ key: String, by amount: Int = 1) -> Int {
        increment(key, by: -amount)
    }

    /// Removes the value at `key` and returns it.
    @discardableResult
    public func remove(_ key: String) -> (any Sendable)? {
        values.withLock { $0.removeValue(forKey: key) }
    }
}

extension Conn {
    /// How many asks of this connection wait for a reply (for tests and diagnostics).
    public var pendingAskCount: Int { machine.withLock { $0.pending.count } }

    /// How many received events wait for their handler (for tests and diagnostics). It stays
    /// near the configured maximum: past it the connection stops reading.
    public var queuedEventCount: Int { machine.withLock { $0.inbox.count } }

    /// Whether no received event is being handled or waits for its handler (for the fuzzer,
    /// which lets a connection's handler task finish before it sends more or closes).
    package var isIdle: Bool { machine.withLock { !$0.busy && $0.inbox.isEmpty } }
}
