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

// The handler is the neffos connection's ``ConnTransport`` itself: a separate Sendable object
// around it cost every connection an allocation (~64 bytes) and every write an event-loop
// check and a pointer more.
//
// @unchecked Sendable: the handler's state is only touched on its event loop. NIO calls the
// handler there; the core calls everything of ``ConnTransport`` but `close(code:reason:)` on
// the event loop too (the transport contract, asserted in debug builds), and a close from
// another thread hops to the loop.
extension WebSocketHandler: @unchecked Sendable, ConnTransport {}
