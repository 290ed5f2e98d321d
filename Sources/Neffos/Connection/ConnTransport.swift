import NIOCore

/// What carries one neffos connection: a WebSocket implementation, seen from the server.
///
/// This is the seam between the connection's protocol logic (``Conn`` and its state machine)
/// and whatever moves its frames. `NeffosNIO`'s `WebSocketListener` and the Hummingbird and
/// Vapor mounts implement it; so can any WebSocket library.
///
/// ## Driving a connection
///
/// A transport that has completed a WebSocket upgrade hands itself to the server, then feeds
/// the connection what arrives, all on its ``eventLoop``:
///
/// ```swift
/// let conn = server.accept(transport: myTransport, request: UpgradeRequest(httpRequest))
/// // for each complete text or binary message (fragments joined, UTF-8 of text checked):
/// conn.transportReceived(payload, binary: false)
/// // once, when the socket is gone (either side closed it):
/// conn.transportClosed(CloseReason(code: peerCode, text: peerReason, initiatedLocally: false))
/// ```
///
/// The server answers through this protocol's methods (the connection's actions):
/// ``write(_:binary:reliable:)`` and ``flush()`` for frames out, ``close(code:reason:)`` to end
/// the connection, ``setReadingPaused(_:)`` for backpressure.
///
/// ## Backpressure, both ways
///
/// - **Server → transport ("stop reading")**: when the connection's handler queue is full
///   (``Server/Configuration/maxQueuedEvents``, ``Server/Configuration/maxQueuedBytes``) the
///   server calls `setReadingPaused(true)`; the transport must stop reading from its socket
///   (for NIO: stop calling `read()`) until `setReadingPaused(false)`. Frames already read may
///   still be delivered.
/// - **Transport → server ("stop sending")**: ``write(_:binary:reliable:)`` returns `false`
///   when the transport's outbox is full (``Server/TransportConfiguration/maxOutboxBytes``).
///   The server then drops that broadcast frame for this slow reader and counts it
///   (``Server/Statistics/droppedFrames``) instead of buffering without bound. A `reliable`
///   frame (a reply, an ask, a handshake frame) must not be dropped: queue it past the bound up
///   to a hard ceiling, and past that close the connection with ``CloseCode/policyViolation``.
///
/// ## Threading
///
/// Every call but ``close(code:reason:)`` is made on ``eventLoop``; `close` may come from any
/// thread and must be idempotent (one close frame, however often it is called). A transport
/// that is not built on SwiftNIO gives an event loop of its own choosing (for example one of
/// `MultiThreadedEventLoopGroup.singleton`'s) and calls the connection's inputs on it.
///
/// SwiftNIO transports keep the per-frame path on the event loop: no task hop per frame.
public protocol ConnectionTransport: AnyObject, Sendable {
    /// The event loop that owns the socket; every input and output happens on it.
    var eventLoop: any EventLoop { get }
    /// Queues one frame; does not flush. Returns `false` when it was not queued (the outbox is
    /// full and the frame is not `reliable`, or the connection is closing).
    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool
    /// Sends what was queued (the transport may defer it to the end of a read burst).
    func flush()
    /// Sends a close frame with `code` and `reason` and closes once the peer answered (or a
    /// deadline passed). Safe from any thread; idempotent.
    func close(code: CloseCode, reason: String)
    /// Stops (`true`) or resumes (`false`) reading from the socket.
    func setReadingPaused(_ paused: Bool)
}

/// The transport as the core uses it: a ``ConnectionTransport`` with its event loop's write
/// lane looked up once. The NIO transport conforms directly; any other is wrapped
/// (``LanedTransport``).
package protocol ConnTransport: ConnectionTransport {
    /// The write lane of ``ConnectionTransport/eventLoop`` (``LoopLane/lane(for:)``).
    var lane: LoopLane { get }
}

/// A ``ConnectionTransport`` from outside the package, with its lane.
final class LanedTransport: ConnTransport {
    let base: any ConnectionTransport
    let eventLoop: any EventLoop
    let lane: LoopLane

    init(_ base: any ConnectionTransport) {
        self.base = base
        self.eventLoop = base.eventLoop
        self.lane = LoopLane.lane(for: base.eventLoop)
    }

    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool { base.write(frame, binary: binary, reliable: reliable) }
    func flush() { base.flush() }
    func close(code: CloseCode, reason: String) { base.close(code: code, reason: reason) }
    func setReadingPaused(_ paused: Bool) { base.setReadingPaused(paused) }
}
