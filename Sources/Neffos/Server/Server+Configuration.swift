#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Tracing

extension Server {
    /// How a server behaves; every field has a documented default.
    public struct Configuration: Sendable {
        /// The deadline of asks that do not give one. Default: 10 s.
        public var askTimeout: Duration = .seconds(10)
        /// How long a connection may take to send `M` before it is closed (1008). `nil` waits
        /// forever (as the Go server does). Default: 10 s.
        public var handshakeTimeout: Duration? = .seconds(10)
        /// How long graceful shutdown (``Server/run()`` as a `Service`) waits for the
        /// connections it closed to finish their disconnect hooks. Default: 10 s.
        public var shutdownTimeout: Duration = .seconds(10)
        /// Makes the ID of each new connection. Default: a random UUIDv4, lower case.
        /// IDs you generate need not be unique; a message sent `to` an ID reaches every
        /// connection bearing it.
        public var idGenerator: @Sendable (UpgradeRequest) -> String = { _ in Server.randomConnectionID() }
        /// Encodes and decodes typed bodies. Default: JSON.
        public var bodyCoder: any BodyCoder = JSONBodyCoder()
        /// The error texts resolved back to error values. Default: the built-in ones.
        public var knownErrors = KnownErrors()
        /// What a client receives when a handler or the on-connect hook throws. Default:
        /// ``HandlerErrorPolicy/describe`` (the error's text, as neffos does); see
        /// ``HandlerErrorPolicy/generic(_:)`` to keep internal errors on the server.
        public var handlerErrors = HandlerErrorPolicy.describe
        /// Events a connection may have waiting for their handler before the server stops
        /// reading from it (backpressure). Also the number of frames a client may send before
        /// the handshake completes (with at most ``Server/TransportConfiguration/maxMessageSize``
        /// bytes in all); past either, it is closed (1008). Default: 1024.
        public var maxQueuedEvents = 1024
        /// Body bytes a connection may have waiting for their handler before the server stops
        /// reading from it (backpressure), whatever their count: with slow asynchronous
        /// handlers, 1,024 queued messages of 512 KiB would otherwise hold 512 MiB per
        /// connection. Default: 512 KiB (the queue always takes at least one message).
        public var maxQueuedBytes = 512 << 10
        /// Rooms a client may join, over all its namespaces; a join past it is answered with
        /// ``NeffosError/limitExceeded`` (counted in ``Server/Statistics/limitsExceeded``).
        /// Joins your server code makes (``NSConn/joinRoom(_:timeout:)``) are not limited.
        /// Default: 1,024 (raise it for a client that really follows more rooms).
        public var maxRoomsPerConnection = 1024
        /// The longest room name a client may join, in UTF-8 bytes; a longer one is answered
        /// with ``NeffosError/limitExceeded``. Default: 256.
        public var maxNameLength = 256
        /// Asks your server code may have waiting for a reply on one connection
        /// (``Conn/ask(_:timeout:)``, and the asks of its ``NSConn``s); one more throws
        /// ``NeffosError/limitExceeded`` at once (counted in
        /// ``Server/Statistics/limitsExceeded``). Default: 1,024.
        public var maxPendingAsks = 1024
        /// Asks through ``Server/ask(_:to:timeout:)`` that may wait for a reply at once, over
        /// the whole server; one more throws ``NeffosError/limitExceeded``. Default: 65,536.
        public var maxPendingServerAsks = 65536
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
        /// Where the server's spans go: handshakes, handler invocations, asks, and deliveries
        /// of what other nodes published (their trace continues here: the context travels in
        /// the exchange's envelopes). Default: `nil`, the tracer bootstrapped with
        /// swift-distributed-tracing's `InstrumentationSystem`, if any. With neither (or with
        /// the no-op tracer) the server makes no span and pays nothing for tracing.
        public var tracer: (any Tracer)?

        /// The WebSocket transport settings (used by the listener).
        public var transport = TransportConfiguration()

        /// The exchange that makes this server one node of a cluster; `nil` (the default) runs
        /// it alone. Pick one from configuration with ``ExchangeRegistry``.
        public var exchange: (any Exchange)?
        /// This node's name on the exchange. Default: a random UUID.
        public var nodeName: String?
        /// Separates clusters sharing one bus (a subject prefix). Default: `default`.
        public var clusterName = "default"
        /// How nodes notice each other (heartbeats, the node timeout) and the bounds of
        /// cluster-wide queries (``Server/clusterMembers(ofRoom:in:timeout:)``…).
        public var presence = PresenceConfiguration()
        /// The rooms that keep their broadcasts (positions, recovery on reconnect, the latest
        /// message on join) and where. Default: none.
        public var history = HistoryConfiguration()
        /// Called with each join and leave, anywhere in the cluster, of the rooms this node
        /// follows: rooms of the namespaces in ``PresenceConfiguration/namespaces`` where it
        /// has a member. Once per change; a node that is gone makes its members leave.
        public var onPresence: (@Sendable (PresenceEvent) -> Void)?
        /// Called when the node's exchange connection changes state (also logged).
        public var onExchangeStatus: (@Sendable (ExchangeStatus) -> Void)?

        /// The default configuration.
        public init() {}
    }

    /// WebSocket-level settings, applied by the listener to every connection.
    public struct TransportConfiguration: Sendable {
        /// The largest message (after reassembling fragments) accepted; a bigger one closes the
        /// connection with 1009. Also the bytes a client may send before the neffos handshake
        /// completes. Default: 512 KiB (raise it for larger uploads; see ``maxConnections``
        /// for what it costs).
        public var maxMessageSize = 512 << 10
        /// The largest single WebSocket frame accepted. Default: 512 KiB.
        public var maxFrameSize = 512 << 10
        /// Bytes a connection may have queued for sending before further broadcasts and emits
        /// to it are dropped (and counted). Replies to the connection's own requests and asks
        /// are never dropped: they may queue as much again, past which the connection is
        /// closed (1008, "outbox overflow"). Default: 512 KiB.
        public var maxOutboxBytes = 512 << 10
        /// The most TCP connections the server holds at once, upgraded or not, over all its
        /// listeners; one more is answered `503 Service Unavailable` and closed (counted in
        /// ``Server/Statistics/refusedConnections``). `nil`: no limit of its own. Either way
        /// the listener also stays 64 below the process's open-file limit (`ulimit -n`), so
        /// that a full server answers 503 instead of running out of descriptors.
        ///
        /// At the defaults a connection holds at most about 2 MiB however it behaves (a message
        /// being received, ``Server/Configuration/maxQueuedBytes`` waiting for handlers, twice
        /// ``maxOutboxBytes`` waiting to be sent), so 10,000 hostile connections stay within
        /// 20 GiB. Raise it for more clients on a machine with the memory, or lower the byte
        /// bounds with it. Default: 10,000.
        public var maxConnections: Int? = 10_000
        /// How long a client may take to send an HTTP request (from its first byte to its
        /// last) before the connection is closed with `408 Request Timeout`: a slow-loris
        /// defence. It ends at the upgrade. `nil`: no limit. Default: 10 s.
        public var requestTimeout: Duration? = .seconds(10)
        /// How long an HTTP connection that has not upgraded may stay open with no request in
        /// progress (a fresh socket that sends nothing, an idle keep-alive) before it is
        /// closed. `nil`: no limit. Default: 30 s.
        public var idleTimeout: Duration? = .seconds(30)
        /// The most bytes of request line and headers an upgrade request may carry (headers
        /// passed in `X-Websocket-Header-*` query parameters included): the connection keeps
        /// them for its life (``UpgradeRequest``). A bigger request is answered `431 Request
        /// Header Fields Too Large`. Default: 16 KiB.
        public var maxRequestHeaderBytes = 16 << 10
        /// Closes a connection that sent nothing (no frame, no pong) for this long (checked
        /// once a period, up to 1/32 of it late: one timer per event loop serves every
        /// connection). Default: `nil` (the ping heartbeat covers dead peers).
        public var readTimeout: Duration?
        /// Closes a connection whose outbox stayed full for this long (a client that stopped
        /// reading). Default: 30 s.
        public var writeTimeout: Duration? = .seconds(30)
        /// How long a closing handshake may take: after sending its close frame, the server
        /// waits this long for the peer's before it closes the socket regardless (a peer that
        /// never answers, or never reads). Default: 2 s.
        public var closeTimeout: Duration = .seconds(2)
        /// Pings each connection this often; a connection that sends nothing (no pong, no
        /// frame) through two pings is closed with 1008, two to three intervals after it went
        /// silent. One timer per event loop serves every connection's pings, spread over the
        /// interval; a connection's pings come every interval, the first up to 1/32 of an
        /// interval late. Default: 30 s. `nil` disables the heartbeat.
        public var pingInterval: Duration? = .seconds(30)
        /// Which browser pages may open a WebSocket: a defence against cross-site WebSocket
        /// hijacking (a page elsewhere riding on the user's cookies). Requests without an
        /// `Origin` header (native clients: the Swift and Go clients, tools) always pass.
        /// Default: ``OriginPolicy/sameOrigin`` (the page must come from the host the
        /// WebSocket is on); a page served elsewhere needs ``OriginPolicy/only(_:)``.
        public var allowedOrigins = OriginPolicy.sameOrigin
        /// Decides whether a request's `Origin` header is allowed (`nil` when absent), in
        /// place of ``allowedOrigins``. Default: `nil`.
        public var checkOrigin: (@Sendable (String?) -> Bool)?

        /// The default settings.
        public init() {}
    }
}
