import NIOCore

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
