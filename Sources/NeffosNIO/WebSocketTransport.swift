import Logging
import NIOCore
import Neffos

/// Settings of a WebSocket connection's handler.
///
/// A class, one per server (``Server/transportValue(_:)``) or per dialled connection: kept
/// inline, these ~180 bytes were held once per connection.
final class WebSocketSettings: Sendable {
    let isClient: Bool
    let maxOutboxBytes: Int
    let writeTimeout: Duration?
    let readTimeout: Duration?
    let pingInterval: Duration?
    let logger: Logger
    /// How long a closing handshake may take before the socket is closed regardless.
    let closeTimeout: Duration

    init(
        isClient: Bool, maxOutboxBytes: Int, writeTimeout: Duration?, readTimeout: Duration?,
        pingInterval: Duration?, logger: Logger, closeTimeout: Duration = .seconds(2)
    ) {
        self.isClient = isClient
        self.maxOutboxBytes = maxOutboxBytes
        self.writeTimeout = writeTimeout
        self.readTimeout = readTimeout
        self.pingInterval = pingInterval
        self.logger = logger
        self.closeTimeout = closeTimeout
    }

    /// A server connection's settings, from `server`'s transport configuration.
    convenience init(server: Server) {
        let transport = server.configuration.transport
        self.init(
            isClient: false,
            maxOutboxBytes: transport.maxOutboxBytes,
            writeTimeout: transport.writeTimeout,
            readTimeout: transport.readTimeout,
            pingInterval: transport.pingInterval,
            logger: server.logger,
            closeTimeout: transport.closeTimeout)
    }
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
