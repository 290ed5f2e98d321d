import Logging
import NIOCore
import Synchronization

/// How a ``Client`` redials after losing its connection: exponential backoff with jitter.
///
/// Attempt *n* (from 1) waits `initialDelay × multiplier^(n-1)`, at most `maxDelay`, scaled
/// by a random factor in `[1 - jitter, 1]`.
public struct ReconnectPolicy: Sendable, Equatable {
    /// The wait before the first attempt. Default: 250 ms.
    public var initialDelay: Duration
    /// The longest wait between attempts. Default: 8 s.
    public var maxDelay: Duration
    /// The growth factor between attempts. Default: 2.
    public var multiplier: Double
    /// The fraction of each wait that is random (0 = none, 1 = full jitter). Default: 0.5.
    public var jitter: Double
    /// Gives up after this many attempts; `nil` never gives up. Default: `nil`.
    public var maxAttempts: Int?

    /// A policy; the defaults suit a browser-like client.
    public init(
        initialDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(8),
        multiplier: Double = 2, jitter: Double = 0.5, maxAttempts: Int? = nil
    ) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.multiplier = max(1, multiplier)
        self.jitter = min(1, max(0, jitter))
        self.maxAttempts = maxAttempts
    }

    /// The wait before attempt `attempt` (1-based), before jitter.
    public func baseDelay(attempt: Int) -> Duration {
        let maximum = Self.seconds(maxDelay)
        var seconds = Self.seconds(initialDelay)
        for _ in 1..<max(1, attempt) {
            seconds *= multiplier
            if !seconds.isFinite || seconds >= maximum { return maxDelay }
        }
        return seconds >= maximum ? maxDelay : .seconds(seconds)
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The wait before attempt `attempt`, jitter applied.
    public func delay(attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let base = baseDelay(attempt: attempt)
        return base * (1 - jitter * Double.random(in: 0...1, using: &random))
    }

}

/// What a ``Client`` is doing; read them from ``Client/states()``.
public enum ClientState: Sendable, CustomStringConvertible {
    /// Dialling; `attempt` is 0 for the first dial, then counts reconnection attempts.
    case connecting(attempt: Int)
    /// Connected for the first time, with this ID.
    case connected(id: String)
    /// The connection was lost (the client will try to reconnect if its policy allows).
    case disconnected(CloseReason)
    /// Connected again after `attempts` attempts, namespaces and rooms restored.
    case reconnected(id: String, attempts: Int)
    /// Closed for good (closed by the application, refused, or reconnection gave up).
    case closed(CloseReason)

    /// A short description.
    public var description: String {
        switch self {
        case .connecting(let attempt): attempt == 0 ? "connecting" : "reconnecting (attempt \(attempt))"
        case .connected(let id): "connected as \(id)"
        case .disconnected(let reason): "disconnected: \(reason)"
        case .reconnected(let id, let attempts): "reconnected as \(id) after \(attempts) attempt(s)"
        case .closed(let reason): "closed: \(reason)"
        }
    }
}

/// Opens a transport for a client's connection: what the NIO dialer implements.
package protocol ClientConnector: Sendable {
    /// Dials, upgrades, and attaches the new transport to `conn` (which then sends `M`).
    /// `attempt` is 0 for the first dial and counts reconnection attempts after it.
    func connect(_ conn: Conn, attempt: Int) async throws
}

/// A neffos client: one WebSocket connection to a server, its namespaces and rooms, and
/// reconnection.
///
/// Dial with `Client.dial(_:namespaces:configuration:)` from `NeffosNIO`:
///
/// ```swift
/// var chat = Events()
/// chat.on("chat") { _, message in print(message.bodyString) }
/// let client = try await Client.dial("ws://127.0.0.1:8080/echo", namespaces: ["default": chat])
/// let ns = try await client.connect("default")
/// try await ns.joinRoom("lobby").emit("chat", "hello")
/// let pong = try await ns.ask("ping", "1")
/// ```
///
/// When the connection drops unexpectedly the client redials with backoff (see
/// ``ReconnectPolicy``), sending `X-Websocket-Reconnect: <attempt>`, then reconnects its
/// namespaces and rejoins its rooms; the ``NSConn`` and ``Room`` values you hold stay valid.
/// Asks pending at the drop fail at once with ``NeffosError/writeClosed``; emits while
/// reconnecting throw ``NeffosError/reconnecting``.
public final class Client: Sendable {
    /// The position of the last message received in `room` of `namespace` (a room the server
    /// keeps history for, with ``Configuration/recovery`` on), or the room's position when the
    /// client joined it; `nil` otherwise. Rejoining after a reconnection recovers from it.
    public func position(ofRoom room: String, in namespace: String) -> HistoryPosition? {
        conn.position(ofRoom: room, in: namespace)
    }

    /// The connection; its ID changes when the client reconnects.
    public let conn: Conn
    /// The configuration.
    public let configuration: Configuration
    private let connector: any ClientConnector
    private let shared: Locked<Shared>

    private struct Shared {
        var closed = false
        var reconnecting: Task<Void, Never>?
        var listeners: [UInt64: AsyncStream<ClientState>.Continuation] = [:]
        /// The latest state, which a new listener hears first.
        var current = ClientState.connecting(attempt: 0)
        var nextListener: UInt64 = 0
        var random = SystemRandomNumberGenerator()
    }

    /// Creates a client; `connect(attempt: 0)` must follow. Used by dialers.
    package init(namespaces: Namespaces, configuration: Configuration, connector: any ClientConnector) {
        self.configuration = configuration
        self.connector = connector
        self.shared = Locked(Shared())
        let relay = ClientRelay()
        self.conn = Conn(
            isClient: true, id: "", server: nil, request: UpgradeRequest(),
            reconnectTries: 0, namespaces: namespaces,
            settings: ConnSettings(
                askTimeout: configuration.askTimeout, bodyCoder: configuration.bodyCoder,
                knownErrors: configuration.knownErrors,
                maxQueuedEvents: max(2, configuration.maxQueuedEvents),
                maxBytesBeforeHandshake: configuration.maxMessageSize, logger: configuration.logger),
            delegate: relay)
        relay.client.withLock { $0.value = self }
    }

    /// Dials for the first time. Used by dialers.
    ///
    /// - Throws: ``NeffosError/dialFailed``, ``NeffosError/handshakeRefused`` (with the
    ///   server's text as detail), ``NeffosError/handshakeTimeout``.
    package func start() async throws {
        publish(.connecting(attempt: 0))
        do {
            try await open(attempt: 0)
        } catch {
            shared.withLock { $0.closed = true }
            conn.close()
            conn.finishWithoutTransport(CloseReason(code: nil, text: "\(error)", initiatedLocally: true, error: error))
            throw error
        }
        publish(.connected(id: conn.id))
    }

    /// Dials, then waits for `A<id>` (the connection enforces the handshake timeout).
    private func open(attempt: Int) async throws {
        try await connector.connect(conn, attempt: attempt)
        try await conn.awaitOpen()
    }

    /// The connection's current ID.
    public var id: String { conn.id }

    /// Connects to `namespace` (see ``Conn/connect(_:timeout:)``).
    @discardableResult
    public func connect(_ namespace: String, timeout: Duration? = nil) async throws -> NSConn {
        try await conn.connect(namespace, timeout: timeout)
    }

    /// Waits for the server to connect this client to `namespace` (see
    /// ``Conn/waitConnect(_:timeout:)``).
    public func waitServerConnect(_ namespace: String, timeout: Duration? = nil) async throws -> NSConn {
        try await conn.waitConnect(namespace, timeout: timeout)
    }

    /// The namespace connection for `namespace`, if connected.
    public func namespace(_ namespace: String) -> NSConn? { conn.namespace(namespace) }

    /// A new sequence of the client's states: the current one first (so `.connected` is seen
    /// even by a sequence made after `dial` returned), then every change. It finishes when the
    /// client closes for good.
    public func states() -> AsyncStream<ClientState> {
        let (stream, continuation) = AsyncStream<ClientState>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let finished = shared.withLock { s -> Bool in
            continuation.yield(s.current)
            guard !s.closed || s.reconnecting != nil else { return true }
            let id = s.nextListener
            s.nextListener += 1
            s.listeners[id] = continuation
            continuation.onTermination = { [weak self] _ in
                _ = self?.shared.withLock { $0.listeners.removeValue(forKey: id) }
            }
            return false
        }
        if finished { continuation.finish() }
        return stream
    }

    /// Closes the connection for good (close frame 1000), stops any reconnection, and waits
    /// until the local disconnect events have fired.
    public func close() async {
        let task = shared.withLock { s -> Task<Void, Never>? in
            s.closed = true
            defer { s.reconnecting = nil }
            return s.reconnecting
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = finishWaiters.withLock { w -> Bool in
                if w.finished { return true }
                w.waiters.append(continuation)
                return false
            }
            if done {
                continuation.resume()
                return
            }
            // With a transport, its close finishes the connection; between two reconnection
            // attempts, the cancelled reconnection finishes it.
            conn.close()
            task?.cancel()
        }
    }

    private let finishWaiters = Locked<(finished: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    // MARK: State changes

    private func publish(_ state: ClientState) {
        configuration.logger.debug("client state", metadata: ["state": "\(state)"])
        // Under the lock, so a listener joining now hears the states in order.
        shared.withLock { s in
            s.current = state
            for listener in s.listeners.values { listener.yield(state) }
        }
    }

    private func finishListeners() {
        let listeners = shared.withLock { s in
            defer { s.listeners = [:] }
            return Array(s.listeners.values)
        }
        for listener in listeners { listener.finish() }
    }

    // MARK: Reconnection

    fileprivate func shouldReconnect() -> Bool {
        guard configuration.reconnect != nil else { return false }
        return shared.withLock { !$0.closed }
    }

    fileprivate func connectionLost(_ reason: CloseReason) {
        publish(.disconnected(reason))
        let task = Task { await self.reconnect(after: reason) }
        let keep = shared.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.reconnecting = task
            return true
        }
        if !keep { task.cancel() }
    }

    private func reconnect(after reason: CloseReason) async {
        guard let policy = configuration.reconnect else { return }
        var attempt = 0
        var lastError: (any Error)?
        while !Task.isCancelled {
            attempt += 1
            if let limit = policy.maxAttempts, attempt > limit { break }
            let delay = shared.withLock { policy.delay(attempt: attempt, using: &$0.random) }
            do {
                try await Task.sleep(for: delay)
            } catch {
                break
            }
            publish(.connecting(attempt: attempt))
            do {
                try await open(attempt: attempt)
            } catch let error as NeffosError where error == .handshakeRefused {
                lastError = error
                break  // The server refuses us now: retrying will not help.
            } catch {
                lastError = error
                configuration.logger.debug("reconnection attempt failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                continue
            }
            await restore()
            shared.withLock { $0.reconnecting = nil }
            publish(.reconnected(id: conn.id, attempts: attempt))
            return
        }
        // Gave up (or was cancelled by close()): finish the connection for good.
        shared.withLock {
            $0.closed = true
            $0.reconnecting = nil
        }
        let text = lastError.map { "reconnection gave up: \($0)" } ?? "reconnection stopped"
        conn.finishWithoutTransport(CloseReason(code: reason.code, text: text, initiatedLocally: true, error: lastError))
    }

    /// Reconnects the namespaces and rejoins the rooms the connection had.
    private func restore() async {
        var lost = false
        for (ns, rooms) in conn.takeForRestore() {
            // Lost again meanwhile: the rest is restored after the next reconnection.
            if lost {
                conn.restoreLater(ns, rooms: rooms)
                continue
            }
            do {
                try await conn.reconnect(ns)
                for room in rooms.sorted() {
                    if let recovery = try await conn.rejoin(room, in: ns) { configuration.onRecovery?(recovery) }
                }
            } catch let error as NeffosError where error == .writeClosed || error == .reconnecting {
                // Not a refusal: the new connection was lost too (the reconnection loop runs again).
                configuration.logger.debug("connection lost while restoring; restoring after the next reconnection", metadata: ["namespace": "\(ns.namespace)"])
                conn.restoreLater(ns, rooms: rooms)
                lost = true
            } catch {
                configuration.logger.warning("could not restore a namespace after reconnecting", metadata: ["namespace": "\(ns.namespace)", "error": "\(error)"])
                await conn.fireRestoreFailure(ns, rooms: rooms)
            }
        }
    }

    fileprivate func finished(_ reason: CloseReason) {
        shared.withLock { $0.closed = true }
        publish(.closed(reason))
        finishListeners()
        let waiters = finishWaiters.withLock { w in
            w.finished = true
            defer { w.waiters = [] }
            return w.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The client's ``ConnDelegate``. It holds the client weakly: a client dropped without
/// `close()` does not keep itself alive through its connection.
private final class ClientRelay: ConnDelegate {
    struct Weak { weak var value: Client? }
    let client = Locked(Weak())

    private var target: Client? { client.withLock { $0.value } }

    func connDidOpen(_ conn: Conn) {}
    func conn(_ conn: Conn, didConnect ns: NSConn, transport: (any ConnTransport)?) {}
    func conn(_ conn: Conn, didDisconnect ns: NSConn) {}
    func conn(_ conn: Conn, didJoin room: String, in ns: NSConn, recovery: JoinRecovery?) {}
    func conn(_ conn: Conn, didLeave room: String, in ns: NSConn) {}
    func connShouldReconnect(_ conn: Conn, reason: CloseReason) -> Bool { target?.shouldReconnect() ?? false }

    func connDidClose(_ conn: Conn, reason: CloseReason) {
        if !conn.isClosed { target?.connectionLost(reason) }
    }

    func connDidFinish(_ conn: Conn, reason: CloseReason) async {
        target?.finished(reason)
    }

    func conn(_ conn: Conn, didReceiveUnmatchedReply reply: Message) -> Bool { false }
}
