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
    ///   - url: a `ws://host:port/path` or `wss://host:port/path` URL.
    ///   - namespaces: the namespaces and handlers this side declares.
    ///   - configuration: headers, timeouts, reconnection and limits.
    ///   - tls: how a `wss://` server is checked. Default: the system's trust roots and the
    ///     URL's host name (``ClientTLS/systemTrust``). Unused for `ws://`.
    ///   - group: the event loops. Default: NIO's shared group.
    /// - Throws: ``NeffosError/dialFailed`` (bad URL, refused TCP connection, a ``TLSFailure``
    ///   as its `underlying` error, an HTTP status instead of the upgrade),
    ///   ``NeffosError/handshakeRefused`` carrying the server's text as its detail,
    ///   ``NeffosError/handshakeTimeout``.
    public static func dial(
        _ url: String,
        namespaces: Namespaces,
        configuration: Configuration = Configuration(),
        tls: ClientTLS = .systemTrust,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Client {
        try namespaces.validateNames()
        let url = try WebSocketURL(url)
        let session: ClientTLSSession?
        do {
            session = url.isSecure ? try ClientTLSSession(tls, host: url.host) : nil
        } catch {
            throw NeffosError.dialFailed.with(detail: url.text).with(underlying: error)
        }
        let connector = NIOClientConnector(url: url, tls: session, configuration: configuration, group: group)
        let client = Client(namespaces: namespaces, configuration: configuration, connector: connector)
        try await client.start()
        return client
    }
}

/// Dials WebSocket connections for a ``Client``.
struct NIOClientConnector: ClientConnector {
    let url: WebSocketURL
    let tls: ClientTLSSession?
    let configuration: Client.Configuration
    let group: any EventLoopGroup

    func connect(_ conn: Conn, attempt: Int) async throws {
        var headers = configuration.headers
        if attempt > 0 { headers.append((name: "X-Websocket-Reconnect", value: "\(attempt)")) }
        if configuration.recovery { headers.append((name: RecoveryWire.header, value: "1")) }
        let settings = WebSocketSettings(
            isClient: true,
            maxOutboxBytes: 16 << 20,
            writeTimeout: nil,
            readTimeout: nil,
            pingInterval: configuration.pingInterval,
            logger: configuration.logger)
        let handshakeTimeout = configuration.handshakeTimeout
        _ = try await WebSocketDialer.connect(
            to: url, tls: tls, headers: headers, group: group, timeout: handshakeTimeout,
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
