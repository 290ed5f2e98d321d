import Logging
import NIOCore
import Synchronization

extension Client {
    /// How a client behaves; every field has a documented default.
    public struct Configuration: Sendable {
        /// Extra request headers (for example authentication).
        public var headers: [(name: String, value: String)] = []
        /// The deadline for the WebSocket upgrade and the neffos handshake. Default: 10 s.
        public var handshakeTimeout: Duration = .seconds(10)
        /// The deadline of asks that do not give one. Default: 10 s.
        public var askTimeout: Duration = .seconds(10)
        /// How to reconnect; `nil` disables reconnection. Default: ``ReconnectPolicy``'s.
        public var reconnect: ReconnectPolicy? = ReconnectPolicy()
        /// Encodes and decodes typed bodies. Default: JSON.
        public var bodyCoder: any BodyCoder = JSONBodyCoder()
        /// The error texts resolved back to error values. Default: the built-in ones.
        public var knownErrors = KnownErrors()
        /// Events waiting for their handler before the client stops reading. Default: 1024.
        public var maxQueuedEvents = 1024
        /// The largest message accepted from the server. Default: 16 MiB.
        public var maxMessageSize = 16 << 20
        /// Pings the server this often and closes if it answers none of two pings; `nil` (the
        /// default) leaves the heartbeat to the server.
        public var pingInterval: Duration?
        /// Where the client logs. Default: label `neffos.client`.
        public var logger = Logger(label: "neffos.client")
        /// Whether the client asks for the history extension (the header `X-Neffos-Recovery:
        /// 1`): it then remembers, per room, the position of the last message it received
        /// there, and rejoining after a reconnection recovers what it missed from that
        /// position (rooms the server keeps history for). A server without history ignores
        /// it. Default: `true`.
        public var recovery = true
        /// Called once per room rejoined after a reconnection with a position to recover
        /// from: whether everything missed came back (``RoomRecovery/isComplete``) and how many
        /// kept messages did (they reach the room's handlers before this call).
        public var onRecovery: (@Sendable (RoomRecovery) -> Void)?

        /// The default configuration.
        public init() {}
    }
}
