import NIOCore
import NIOPosix
import Neffos

extension Client {
    /// Dials a neffos server over WebSocket and completes the handshake.
    ///
    /// ```swift
    /// let client = try await Client.dial("ws://127.0.0.1:8080/echo", namespaces: ["default": events])
    /// ```
    ///
    /// - Parameters:
    ///   - url: a `ws://host:port/path` URL (`wss://` is not supported: this client carries no
    ///     TLS).
    ///   - namespaces: the namespaces and handlers this side declares.
    ///   - configuration: headers, timeouts, reconnection and limits.
    ///   - group: the event loops. Default: NIO's shared group.
    /// - Throws: ``NeffosError/dialFailed`` (bad URL, refused TCP connection, an HTTP status
    ///   instead of the upgrade), ``NeffosError/handshakeRefused`` carrying the server's text
    ///   as its detail, ``NeffosError/handshakeTimeout``.
    public static func dial(
        _ url: String,
        namespaces: Namespaces,
        configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Client {
        try namespaces.validateNames()
        let connector = NIOClientConnector(url: try WebSocketURL(url), configuration: configuration, group: group)
        let client = Client(namespaces: namespaces, configuration: configuration, connector: connector)
        try await client.start()
        return client
    }
}

/// Dials WebSocket connections for a ``Client``.
struct NIOClientConnector: ClientConnector {
    let url: WebSocketURL
    let configuration: Client.Configuration
    let group: any EventLoopGroup

    func connect(_ conn: Conn, attempt: Int) async throws {
        var headers = configuration.headers
        if attempt > 0 { headers.append((name: "X-Websocket-Reconnect", value: "\(attempt)")) }
        let settings = WebSocketSettings(
            isClient: true,
            maxOutboxBytes: 16 << 20,
            writeTimeout: nil,
            readTimeout: nil,
            pingInterval: configuration.pingInterval,
            logger: configuration.logger)
        let handshakeTimeout = configuration.handshakeTimeout
        _ = try await WebSocketDialer.connect(
            to: url, headers: headers, group: group, timeout: handshakeTimeout,
            maxFrameSize: configuration.maxMessageSize, maxMessageSize: configuration.maxMessageSize,
            outboxBytes: settings.maxOutboxBytes, validatesFrames: true
        ) { channel in
            let handler = WebSocketHandler(eventLoop: channel.eventLoop, settings: settings) { handler in
                conn.attachClientTransport(handler, handshakeTimeout: handshakeTimeout)
                return conn
            }
            try channel.pipeline.syncOperations.addHandler(handler)
        }
    }
}
