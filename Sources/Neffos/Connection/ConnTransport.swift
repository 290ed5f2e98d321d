import NIOCore
import Synchronization

/// A WebSocket close code (RFC 6455 §7.4).
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric code.
    public let rawValue: UInt16
    /// A close code from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// 1000: normal closure.
    public static let normal = CloseCode(rawValue: 1000)
    /// 1001: the server is going away (shutdown).
    public static let goingAway = CloseCode(rawValue: 1001)
    /// 1002: protocol error.
    public static let protocolError = CloseCode(rawValue: 1002)
    /// 1003: a data type that cannot be accepted.
    public static let unacceptableData = CloseCode(rawValue: 1003)
    /// 1007: data inconsistent with the message type.
    public static let invalidData = CloseCode(rawValue: 1007)
    /// 1008: policy violation (a refused connection, a missing handshake, a slow consumer).
    public static let policyViolation = CloseCode(rawValue: 1008)
    /// 1009: a message too big to process.
    public static let messageTooBig = CloseCode(rawValue: 1009)
    /// 1011: an unexpected condition on the server.
    public static let internalError = CloseCode(rawValue: 1011)

    /// The number.
    public var description: String { String(rawValue) }
}

/// Why a connection closed.
public struct CloseReason: Sendable, CustomStringConvertible {
    /// The close code, if a close frame was exchanged.
    public var code: CloseCode?
    /// The close frame's reason text, or a description of the failure.
    public var text: String
    /// Whether this side closed the connection.
    public var initiatedLocally: Bool
    /// The error that closed the connection, if it was not an orderly close.
    public var error: (any Error)?

    /// Creates a close reason.
    public init(code: CloseCode?, text: String = "", initiatedLocally: Bool, error: (any Error)? = nil) {
        self.code = code
        self.text = text
        self.initiatedLocally = initiatedLocally
        self.error = error
    }

    /// A readable summary.
    public var description: String {
        var parts: [String] = []
        if let code { parts.append("code \(code)") }
        if !text.isEmpty { parts.append("\"\(text)\"") }
        if let error { parts.append("error: \(error)") }
        parts.append(initiatedLocally ? "closed here" : "closed by the peer")
        return parts.joined(separator: ", ")
    }
}

/// What the HTTP upgrade request said: headers (with the `X-Websocket-Header-*` query
/// parameters folded in), path and peer.
public struct UpgradeRequest: Sendable {
    /// The request path, without the query.
    public var path: String
    /// The request headers, names as sent; look them up with ``header(_:)``.
    public var headers: [(name: String, value: String)]
    /// The peer's address, as text, if known.
    public var remoteAddress: String?

    /// Creates a request description.
    public init(path: String = "/", headers: [(name: String, value: String)] = [], remoteAddress: String? = nil) {
        self.path = path
        self.headers = headers
        self.remoteAddress = remoteAddress
    }

    /// The first value of header `name` (case-insensitive), if present.
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first { $0.name.lowercased() == lowered }?.value
    }
}

/// The seam between a connection's protocol logic and the socket under it.
///
/// The NIO transport implements it; tests implement it with a recorder. All calls but
/// ``close(code:reason:)`` happen on ``eventLoop``.
package protocol ConnTransport: AnyObject, Sendable {
    /// The event loop that owns the socket.
    var eventLoop: any EventLoop { get }
    /// The write lane of that event loop (``LoopLane/lane(for:)``, looked up once).
    var lane: LoopLane { get }
    /// Queues one frame; does not flush. Returns `false` when it was not queued.
    ///
    /// A `reliable` frame (a reply to the peer's own request, an ask, a handshake frame) is
    /// never dropped by the outbox bound that broadcasts obey: it may go past that bound, up
    /// to a hard ceiling, and a transport whose ceiling is reached closes the connection
    /// (1008) instead of losing the frame silently. Other frames are dropped (and the caller
    /// counts them) while the outbox is full.
    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool
    /// Flushes what was queued (the transport may defer it to the end of a read burst).
    func flush()
    /// Sends a close frame and closes. Safe from any thread, idempotent.
    func close(code: CloseCode, reason: String)
    /// Stops or resumes reading from the socket (backpressure from the handler queue).
    func setReadingPaused(_ paused: Bool)
}

/// Keeps writes to one event loop's sockets in order.
///
/// A write made on the event loop may go out at once ("inline"), but only when no write made
/// from another thread is still queued to that loop; otherwise it queues behind them. So a
/// sequence of writes by one publisher (a connection's handlers, a task) reaches each
/// receiver in order, whether each write was made on the loop or hopped to it.
package final class LoopLane: Sendable {
    /// The event loop.
    package let loop: any EventLoop
    /// Writes queued to the loop and not yet run.
    private let queued = Atomic<Int>(0)

    private init(loop: any EventLoop) { self.loop = loop }

    /// Whether a write may run inline now: on the loop, with nothing queued before it.
    @inline(__always)
    package var canRunInline: Bool {
        loop.inEventLoop && queued.load(ordering: .relaxed) == 0
    }

    /// Runs `work` now if allowed, or queues it behind the writes already queued.
    @inline(__always)
    package func run(_ work: @escaping @Sendable () -> Void) {
        if canRunInline {
            work()
        } else {
            queue(work)
        }
    }

    /// Queues `work` to the loop (always).
    package func queue(_ work: @escaping @Sendable () -> Void) {
        queued.add(1, ordering: .relaxed)
        loop.execute {
            work()
            self.queued.subtract(1, ordering: .relaxed)
        }
    }

    private static let lanes = Locked<[ObjectIdentifier: LoopLane]>([:])

    /// The lane of `loop` (one per event loop, made on first use).
    package static func lane(for loop: any EventLoop) -> LoopLane {
        lanes.withLock { lanes in
            let key = ObjectIdentifier(loop)
            if let lane = lanes[key], lane.loop === loop { return lane }
            let lane = LoopLane(loop: loop)
            lanes[key] = lane
            return lane
        }
    }
}

extension Duration {
    /// This duration as NIO's `TimeAmount`, saturating.
    package var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if nanos.overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        return .nanoseconds(nanos.partialValue &+ attoseconds / 1_000_000_000)
    }
}
