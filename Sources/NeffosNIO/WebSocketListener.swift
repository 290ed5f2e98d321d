import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Neffos
import ServiceLifecycle
import Synchronization

/// A plain HTTP response, for the pages a listener serves next to its WebSocket endpoint.
public struct HTTPResponse: Sendable {
    /// The status.
    public var status: HTTPResponseStatus
    /// The headers (`Content-Length` is added).
    public var headers: HTTPHeaders
    /// The body.
    public var body: ByteBuffer

    /// A response with a body and a content type.
    public init(status: HTTPResponseStatus = .ok, contentType: String? = nil, body: ByteBuffer = ByteBuffer(), headers: HTTPHeaders = [:]) {
        self.status = status
        self.headers = headers
        if let contentType { self.headers.replaceOrAdd(name: "Content-Type", value: contentType) }
        self.body = body
    }

    /// A UTF-8 text response.
    public static func text(_ text: String, status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, contentType: contentType, body: ByteBuffer(string: text))
    }
}

/// Answers the HTTP requests that are not WebSocket upgrades (a browser page, a health
/// check). Return `nil` to let the listener answer (404, or the WebSocket endpoint's rules).
public typealias HTTPResponder = @Sendable (_ head: HTTPRequestHead) -> HTTPResponse?

/// Serves a neffos ``Server`` over WebSocket with SwiftNIO.
///
/// ```swift
/// let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 8080, path: "/echo")
/// try await listener.start()
/// ```
///
/// Or run it as a swift-service-lifecycle `Service`; on graceful shutdown it stops accepting,
/// closes every connection with 1001, waits for their disconnect hooks, and returns.
///
/// On the WebSocket path it upgrades `GET` only; `HEAD` is answered `302 Found` (neffos.js
/// probes with it before redialling); other methods get `405` with `Allow: GET`. Query
/// parameters named `X-Websocket-Header-<Name>` become request headers `<Name>`.
public final class WebSocketListener: Service, Sendable {
    /// The neffos server connections are handed to.
    public let server: Server
    /// The host to bind.
    public let host: String
    /// The WebSocket path; `nil` accepts upgrades on any path.
    public let path: String?
    private let requestedPort: Int
    private let group: any EventLoopGroup
    private let responder: HTTPResponder?
    private let state = Watched(ListenerState())

    private struct ListenerState {
        var channel: (any Channel)?
        var stopped = false
    }

    /// Creates a listener.
    ///
    /// - Parameters:
    ///   - server: the neffos server.
    ///   - host: the address to bind. Default: `127.0.0.1`.
    ///   - port: the port; `0` picks a free one (read it from ``port`` after ``start()``).
    ///   - path: the WebSocket endpoint; `nil` (the default) accepts upgrades on any path.
    ///   - group: the event loops. Default: NIO's shared group (one loop per core).
    ///   - responder: answers plain HTTP requests (pages, health checks).
    public init(
        server: Server,
        host: String = "127.0.0.1",
        port: Int = 8080,
        path: String? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        responder: HTTPResponder? = nil
    ) {
        self.server = server
        self.host = host
        self.requestedPort = port
        self.path = path
        self.group = group
        self.responder = responder
    }

    /// The bound port, once started.
    public var port: Int? { state.read { $0.channel?.localAddress?.port } }

    /// Waits until the listener is bound and returns its port (useful with port `0` when it
    /// runs as a `Service`); `nil` if it stopped or failed to bind first.
    public func boundPort() async -> Int? {
        // No deadline of its own: it ends when the listener binds, fails or stops.
        let port = try? await state.wait(timeout: nil, orThrow: { CancellationError() }) { s -> Result<Int?, any Error>? in
            if let channel = s.channel { return .success(channel.localAddress?.port) }
            return s.stopped ? .success(nil) : nil
        }
        return port ?? nil
    }

    /// Connects the server's exchange (if any), binds, and starts accepting connections;
    /// returns once listening.
    ///
    /// - Throws: the exchange's error, or the bind error (for example the port is taken).
    public func start() async throws {
        let server = self.server
        try await server.start()
        let transport = server.configuration.transport
        let path = self.path
        let responder = self.responder
        let outbox = max(1024, transport.maxOutboxBytes)
        let limit = ProcessLimits.connectionLimit(configured: transport.maxConnections)
        if let limit, limit < transport.maxConnections ?? .max {
            server.logger.warning(
                "connections are limited to \(limit) by the open-file limit (ulimit -n \(ProcessLimits.openFiles ?? 0)); raise it to hold more")
        }
        let atLimit = ThrottledWarning()
        let acceptFailed = ThrottledWarning()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                // Out of descriptors (EMFILE, ENFILE) or memory, accept fails at once each time
                // it is tried: without a pause the loop would spin at 100 % CPU.
                let backoff = AcceptBackoff(delay: Self.acceptBackoff) { error in
                    server.countAcceptError()
                    acceptFailed.log(server.logger, "accept failed (\(error)); pausing accepts for \(Self.acceptBackoff)")
                }
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(backoff) }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: outbox / 2, high: outbox))
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                if let limit {
                    guard server.reserveConnectionSlot(limit: limit) else {
                        server.countRefusedConnection()
                        atLimit.log(server.logger, "connection refused (503): the server holds \(limit) connections (transport.maxConnections)")
                        return channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler())
                        }
                    }
                    channel.closeFuture.whenComplete { _ in server.releaseConnectionSlot() }
                }
                return Self.initialize(channel, server: server, path: path, responder: responder)
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: requestedPort).get()
        } catch {
            state.update { $0.stopped = true }
            throw error
        }
        state.update { $0.channel = channel }
        server.logger.info("neffos listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "path": "\(path ?? "*")"])
    }

    /// Stops accepting, closes every connection with 1001 and waits (up to `timeout`) for
    /// their disconnect events and hooks.
    public func stop(timeout: Duration = .seconds(10)) async {
        let channel = state.update { s -> (any Channel)? in
            s.stopped = true
            defer { s.channel = nil }
            return s.channel
        }
        try? await channel?.close()
        await server.shutdown(timeout: timeout)
    }

    /// Runs until graceful shutdown, then stops (the `Service` entry point).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await stop()
    }

    /// How long the listener stops accepting after `accept` failed (out of file descriptors).
    static let acceptBackoff = Duration.milliseconds(500)

    // MARK: Pipeline

    private static func initialize(
        _ channel: any Channel, server: Server, path: String?, responder: HTTPResponder?
    ) -> EventLoopFuture<Void> {
        let transport = server.configuration.transport
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize(transport),
            automaticErrorHandling: usesNIOProtocolErrorHandler,
            shouldUpgrade: { channel, head in
                let verdict = UpgradeVerdict(head: head, server: server, path: path)
                // A refused request goes on to the HTTP handler, which answers and counts it.
                guard case .upgrade = verdict else { return channel.eventLoop.makeSucceededFuture(nil) }
                return channel.eventLoop.makeSucceededFuture([:])
            },
            upgradePipelineHandler: { channel, head in
                let request = UpgradeRequest(head: head, remoteAddress: channel.remoteAddress)
                do {
                    for name in [HTTPFallbackHandler.name, HTTPGuard.name] {
                        let context = try channel.pipeline.syncOperations.context(name: name)
                        channel.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                    }
                    try installServerPipeline(on: channel, server: server, request: request)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            })
        do {
            try channel.pipeline.syncOperations.addHandler(
                HTTPGuard(requestTimeout: transport.requestTimeout, idleTimeout: transport.idleTimeout, server: server),
                name: HTTPGuard.name)
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
                withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(
                HTTPFallbackHandler(server: server, path: path, responder: responder), name: HTTPFallbackHandler.name)
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }
}

extension WebSocketListener {
    /// Whether NIO's protocol-error handler goes into a server connection's pipeline: no. The
    /// ``WebSocketHandler`` answers a frame NIO cannot decode itself (1009 or 1002); with both,
    /// a peer got a second close frame when the server had already sent one (found by
    /// `neffos-fuzz frames`, which builds its pipeline by this too).
    package static let usesNIOProtocolErrorHandler = false

    /// The largest WebSocket frame the frame decoder of a server connection accepts
    /// (``Server/TransportConfiguration/maxFrameSize``, within what NIO allows).
    package static func maxFrameSize(_ transport: Server.TransportConfiguration) -> Int {
        max(125, min(transport.maxFrameSize, Int(UInt32.max)))
    }

    /// Installs what serves an upgraded WebSocket after NIO's frame decoder and encoder: the
    /// ``FrameValidator``, the fragment aggregator (bounded by
    /// ``Server/TransportConfiguration/maxMessageSize``) and the ``WebSocketHandler``, which
    /// hands the connection to `server` (``Server/accept(transport:request:)``) once added.
    /// Call it on the channel's event loop.
    ///
    /// The listener calls it after the upgrade; the fuzzer (`neffos-fuzz frames`) calls it on a
    /// test channel, so that both run the same pipeline.
    package static func installServerPipeline(on channel: any Channel, server: Server, request: UpgradeRequest) throws {
        let transport = server.configuration.transport
        var settings = WebSocketSettings(
            isClient: false,
            maxOutboxBytes: transport.maxOutboxBytes,
            writeTimeout: transport.writeTimeout,
            readTimeout: transport.readTimeout,
            pingInterval: transport.pingInterval,
            logger: server.logger)
        settings.closeTimeout = transport.closeTimeout
        let handler = WebSocketHandler(eventLoop: channel.eventLoop, settings: settings) { handler in
            server.accept(transport: handler, request: request)
        }
        try channel.pipeline.syncOperations.addHandlers([
            FrameValidator(peerIsClient: true),
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0,
                maxAccumulatedFrameCount: 1 << 16,
                maxAccumulatedFrameSize: max(1, transport.maxMessageSize)),
            handler,
        ])
    }
}

/// Why an HTTP request to the listener is, or is not, upgraded.
enum UpgradeVerdict {
    case upgrade
    /// Not a WebSocket request for us: the HTTP handler answers.
    case notOurs
    case refuse(HTTPResponseStatus, NeffosError)

    init(head: HTTPRequestHead, server: Server, path: String?) {
        let requestPath = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if let path, requestPath != path {
            self = .notOurs
            return
        }
        guard head.method == .GET else {
            self = .notOurs
            return
        }
        let isUpgrade = head.headers["upgrade"].contains { $0.lowercased() == "websocket" }
        guard isUpgrade else {
            self = .notOurs
            return
        }
        if let refusal = Self.refusal(of: head, server: server) {
            self = .refuse(refusal.status, NeffosError.invalidConfiguration.with(detail: refusal.reason))
            return
        }
        self = .upgrade
    }

    /// Why a WebSocket upgrade request is refused (RFC 6455 §4.2.1, the server's bounds and
    /// origin policy), or `nil` when it may upgrade.
    private static func refusal(of head: HTTPRequestHead, server: Server) -> (status: HTTPResponseStatus, reason: String)? {
        let headers = head.headers
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return (.badRequest, "a WebSocket upgrade needs HTTP/1.1 or later, not \(head.version)")
        }
        guard headers["host"].count == 1 else {
            return (.badRequest, "the upgrade request needs one Host header")
        }
        let connectionTokens = headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connectionTokens.contains("upgrade") else {
            return (.badRequest, "the upgrade request has no \"Connection: Upgrade\" header")
        }
        guard headers["sec-websocket-version"] == ["13"] else {
            return (.upgradeRequired, "unsupported Sec-WebSocket-Version \(headers["sec-websocket-version"]); this server speaks 13")
        }
        let keys = headers["sec-websocket-key"]
        guard keys.count == 1, let key = Data(base64Encoded: keys[0].trimmingCharacters(in: .whitespaces)), key.count == 16 else {
            return (.badRequest, "Sec-WebSocket-Key must be the base64 text of 16 bytes")
        }
        let transport = server.configuration.transport
        let headerBytes = head.uri.utf8.count + headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes <= transport.maxRequestHeaderBytes else {
            return (.requestHeaderFieldsTooLarge,
                    "the request line and headers take \(headerBytes) bytes; the limit is \(transport.maxRequestHeaderBytes) (transport.maxRequestHeaderBytes)")
        }
        let origin = headers.first(name: "origin")
        let originAllowed = transport.checkOrigin.map { $0(origin) }
            ?? transport.allowedOrigins.allows(origin: origin, host: headers.first(name: "host"))
        guard originAllowed else {
            return (.forbidden, "origin \(origin ?? "none") refused (transport.allowedOrigins)")
        }
        guard !server.isShuttingDown else {
            return (.serviceUnavailable, "the server is shutting down")
        }
        return nil
    }
}

extension UpgradeRequest {
    /// The request as the core sees it: path, headers with the `X-Websocket-Header-*` query
    /// parameters folded in, and the peer's address.
    init(head: HTTPRequestHead, remoteAddress: SocketAddress?) {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var headers = head.headers.map { (name: $0.name, value: $0.value) }
        if parts.count == 2 {
            headers += Self.headersFromQuery(String(parts[1]))
        }
        self.init(
            path: parts.first.map(String.init) ?? "/",
            headers: headers,
            remoteAddress: remoteAddress.map { "\($0)" })
    }

    /// The headers carried by `X-Websocket-Header-<Name>=<value>` query parameters.
    static func headersFromQuery(_ query: String) -> [(name: String, value: String)] {
        let prefix = "x-websocket-header-"
        var result: [(name: String, value: String)] = []
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let rawKey = kv.first, let key = decode(String(rawKey)) else { continue }
            guard key.count > prefix.count, key.lowercased().hasPrefix(prefix) else { continue }
            let value = kv.count == 2 ? decode(String(kv[1])) ?? "" : ""
            result.append((name: canonical(String(key.dropFirst(prefix.count))), value: value))
        }
        return result
    }

    private static func decode(_ component: String) -> String? {
        component.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// `x-username` → `X-Username`, as Go's canonical header keys.
    private static func canonical(_ name: String) -> String {
        name.split(separator: "-", omittingEmptySubsequences: false)
            .map { $0.prefix(1).uppercased() + $0.dropFirst().lowercased() }
            .joined(separator: "-")
    }
}

/// Answers the HTTP requests that were not upgraded: the application's pages, then the
/// WebSocket endpoint's rules (HEAD → 302, other methods → 405), then 404.
final class HTTPFallbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "neffos.http-fallback"

    private let server: Server
    private let path: String?
    private let responder: HTTPResponder?
    private var head: HTTPRequestHead?

    init(server: Server, path: String?, responder: HTTPResponder?) {
        self.server = server
        self.path = path
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        if let response = responder?(head) {
            send(response, context: context, head: head)
            return
        }
        let requestPath = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == nil || requestPath == path else {
            send(.text("not found\n", status: .notFound), context: context, head: head)
            return
        }
        switch head.method {
        case .HEAD:
            send(HTTPResponse(status: .found), context: context, head: head)
        case .GET:
            if case .refuse(let status, let error) = UpgradeVerdict(head: head, server: server, path: path) {
                server.countRefusedConnection()
                server.logger.debug("upgrade refused: \(error.detail ?? "")")
                server.configuration.onUpgradeError?(error)
                var response = HTTPResponse.text("\(status.reasonPhrase): \(error.detail ?? "")\n", status: status)
                if status == .upgradeRequired { response.headers.replaceOrAdd(name: "Sec-WebSocket-Version", value: "13") }
                send(response, context: context, head: head, close: true)
            } else {
                send(.text("this endpoint speaks WebSocket (neffos)\n", status: .badRequest), context: context, head: head)
            }
        default:
            var response = HTTPResponse.text("Method Not Allowed\n", status: .methodNotAllowed)
            response.headers.replaceOrAdd(name: "Allow", value: "GET")
            response.headers.replaceOrAdd(name: "X-Content-Type-Options", value: "nosniff")
            send(response, context: context, head: head)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request NIO could not parse (headers too large, not HTTP): its error handler has
        // answered 400; nothing more can be read from this connection.
        if error is HTTPParserError {
            server.countRefusedConnection()
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    private func send(_ response: HTTPResponse, context: ChannelHandlerContext, head: HTTPRequestHead, close: Bool = false) {
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: "\(response.body.readableBytes)")
        let keepAlive = head.isKeepAlive && !close
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        if head.method != .HEAD && response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let loopBound = context.loopBound
            done.whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }
}
