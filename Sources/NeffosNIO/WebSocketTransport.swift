import Logging
import NIOCore
import Neffos

/// Settings of one WebSocket connection's handler.
struct WebSocketSettings: Sendable {
    var isClient: Bool
    var maxOutboxBytes: Int
    var writeTimeout: Duration?
    var readTimeout: Duration?
    var pingInterval: Duration?
    var logger: Logger
    /// How long a closing handshake may take before the socket is closed regardless.
    var closeTimeout: Duration = .seconds(2)
}

/// The Sendable face of a ``WebSocketHandler``: the neffos connection's ``ConnTransport``.
///
/// The core calls everything but ``close(code:reason:)`` on the event loop (the transport
/// contract), where the loop-bound handler is reached directly; a close from another thread
/// hops to the loop.
final class WebSocketTransport: ConnTransport {
    let eventLoop: any EventLoop
    let lane: LoopLane
    private let handler: NIOLoopBound<WebSocketHandler>

    init(_ handler: WebSocketHandler) {
        self.eventLoop = handler.eventLoop
        self.lane = LoopLane.lane(for: handler.eventLoop)
        self.handler = NIOLoopBound(handler, eventLoop: handler.eventLoop)
    }

    @inline(__always)
    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool {
        handler.value.write(frame, binary: binary, reliable: reliable)
    }

    @inline(__always)
    func flush() { handler.value.flush() }

    func setReadingPaused(_ paused: Bool) { handler.value.setReadingPaused(paused) }

    func close(code: CloseCode, reason: String) {
        if eventLoop.inEventLoop {
            handler.value.close(code: code, reason: reason)
        } else {
            eventLoop.execute { self.handler.value.close(code: code, reason: reason) }
        }
    }
}
