import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Neffos
import ServiceLifecycle
import Synchronization

/// Serves a neffos ``Server`` over WebSocket with SwiftNIO, on a port of its own.
///
/// A listener only brings connections to its server: the ``Server`` owns the exchange
/// connection and the connections' lifecycle, and several listeners (and mounts in
/// Hummingbird or Vapor) may share one server. Run both as swift-service-lifecycle services,
/// the server first:
///
/// ```swift
/// let server = try Server(namespaces: namespaces)
/// let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 8080, path: "/echo")
/// let group = ServiceGroup(configuration: .init(
///     services: [server, listener], gracefulShutdownSignals: [.sigterm], logger: logger))
/// try await group.run()
/// ```
///
/// On graceful shutdown the listener stops accepting and closes the connections it brought with
/// 1001 (going away); then the server closes any left, waits for their disconnect hooks and
/// closes its exchange. Without a service group: ``start()``, then ``stop(timeout:)`` and
/// ``Server/shutdown(timeout:)``.
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
    private let responder: HTTPPageResponder?
    /// The certificate chain and key for `wss://`; `nil` serves plain `ws://`.
    public let tls: ServerTLS?
    private let state = Watched(ListenerState())

    private struct ListenerState {
        var channel: (any Channel)?
        var stopped = false
        /// The connections accepted and not yet closed (HTTP or upgraded), by channel.
        var children: [ObjectIdentifier: any Channel] = [:]
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
    ///   - tls: serves `wss://` (and `https://` pages) with this certificate chain and key;
    ///     `nil` (the default) serves plain `ws://`. ``ServerTLS/reload()`` changes the chain
    ///     for new connections without a restart.
    public init(
        server: Server,
        host: String = "127.0.0.1",
        port: Int = 8080,
        path: String? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        responder: HTTPPageResponder? = nil,
        tls: ServerTLS? = nil
    ) {
        self.tls = tls
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

    /// Connects the server's exchange if it is not yet (``Server/start()``, idempotent), binds,
    /// and starts accepting connections; returns once listening.
    ///
    /// - Throws: the exchange's error, or the bind error (for example the port is taken).
    public func start() async throws {
        let server = self.server
        try await server.start()
        let transport = server.configuration.transport
        let path = self.path
        let responder = self.responder
        let tls = self.tls
        let outbox = max(1024, transport.maxOutboxBytes)
        let limit = ProcessLimits.connectionLimit(configured: transport.maxConnections)
        if let limit, limit < transport.maxConnections ?? .max {
            server.logger.warning(
                "connections are limited to \(limit) by the open-file limit (ulimit -n \(ProcessLimits.openFiles ?? 0)); raise it to hold more")
        }
        let atLimit = ThrottledWarning()
        let acceptFailed = ThrottledWarning()
        let state = self.state
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                // Out of descriptors (EMFILE, ENFILE) or memory, accept fails at once each time
                // it is tried: without a pause the loop would spin at 100 % CPU.
                let backoff = AcceptBackoff(delay: Self.acceptBackoff) { error in
                    server.countAcceptError()
                    acceptFailed.log(server.logger, "accept failed (\(error)); pausing accepts for \(Self.acceptBackoff)")
                } onResume: {
                    server.logger.debug("accepting again after a pause")
                }
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(backoff) }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: outbox / 2, high: outbox))
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                // One slot of the connection limit, taken before anything else is set up; a
                // connection past the limit is answered 503 and closed.
                let holdsSlot = limit.map { server.reserveConnectionSlot(limit: $0) }
                guard Self.track(channel, in: state, releasingSlotOf: holdsSlot == true ? server : nil) else {
                    if holdsSlot == true { server.releaseConnectionSlot() }
                    return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                }
                if let tls {
                    do {
                        try channel.pipeline.syncOperations.addHandler(tls.makeHandler())
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                if let limit, holdsSlot == false {
                    server.countRefusedConnection()
                    atLimit.log(server.logger, "connection refused (503): the server holds \(limit) connections (transport.maxConnections)")
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler())
                    }
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
        server.logger.info("neffos listening", metadata: [
            "address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "path": "\(path ?? "*")", "scheme": "\(tls == nil ? "ws" : "wss")",
        ])
    }

    /// Stops accepting, closes the connections this listener brought with 1001 (going away),
    /// and waits up to `timeout` for their sockets to close (then closes what is left). The
    /// server goes on: its other listeners and mounts are untouched, and its disconnect hooks
    /// and exchange finish in ``Server/shutdown(timeout:)``.
    public func stop(timeout: Duration = .seconds(10)) async {
        let (channel, children) = state.update { s -> ((any Channel)?, [any Channel]) in
            s.stopped = true
            defer { s.channel = nil }
            return (s.channel, Array(s.children.values))
        }
        try? await channel?.close()
        for child in children { Self.closeGoingAway(child) }
        let closed = try? await state.wait(timeout: timeout, orThrow: { NeffosError.timeout }) { s -> Result<Bool, any Error>? in
            s.children.isEmpty ? .success(true) : nil
        }
        if closed == nil {
            for child in state.read({ Array($0.children.values) }) { child.close(promise: nil) }
        }
    }

    /// Runs until graceful shutdown, then stops accepting and closes its connections (the
    /// `Service` entry point). Put the ``Server`` in the same service group, before it.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await stop(timeout: server.configuration.shutdownTimeout)
    }

    /// The number of connections (HTTP or WebSocket) this listener holds open.
    public var openConnections: Int { state.read { $0.children.count } }

    /// Records a new connection until it closes, and then gives back its slot of `server`'s
    /// connection limit if it holds one (one close callback for both: each costs memory for as
    /// long as the connection lives); `false` once the listener stopped.
    private static func track(_ channel: any Channel, in state: Watched<ListenerState>, releasingSlotOf server: Server?) -> Bool {
        let key = ObjectIdentifier(channel)
        let tracked = state.update { s -> Bool in
            guard !s.stopped else { return false }
            s.children[key] = channel
            return true
        }
        if tracked {
            channel.closeFuture.whenComplete { _ in
                state.update { _ = $0.children.removeValue(forKey: key) }
                server?.releaseConnectionSlot()
            }
        }
        return tracked
    }

    /// Closes a connection on its loop: an upgraded one with 1001 and the closing handshake, an
    /// HTTP one at once.
    private static func closeGoingAway(_ channel: any Channel) {
        channel.eventLoop.execute {
            if let handler = try? channel.pipeline.syncOperations.handler(type: WebSocketHandler.self) {
                handler.close(code: .goingAway, reason: "server shutting down")
            } else {
                channel.close(promise: nil)
            }
        }
    }

    /// How long the listener stops accepting after `accept` failed (out of file descriptors).
    static let acceptBackoff = Duration.milliseconds(500)

    // MARK: Pipeline

    private static func initialize(
        _ channel: any Channel, server: Server, path: String?, responder: HTTPPageResponder?
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
    /// ``WebSocketHandler``, which checks and reassembles the frames itself (``InboundFrames``,
    /// messages bounded by ``Server/TransportConfiguration/maxMessageSize``) and hands the
    /// connection to `server` (``Server/accept(transport:request:)``) once added. Call it on the
    /// channel's event loop.
    ///
    /// The listener calls it after the upgrade; the fuzzer (`neffos-fuzz frames`) calls it on a
    /// test channel, so that both run the same pipeline.
    package static func installServerPipeline(on channel: any Channel, server: Server, request: UpgradeRequest) throws {
        let transport = server.configuration.transport
        // The outbox is the channel's write buffer, bounded by its high watermark: set here, so
        // that every transport (the listener, the mounts) bounds it the same way.
        let outbox = max(1024, transport.maxOutboxBytes)
        try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: outbox / 2, high: outbox))
        try channel.syncOptions?.setOption(.maxMessagesPerRead, value: 16)
        let settings = server.transportValue { WebSocketSettings(server: server) }
        let inbound = InboundFrames(peerIsClient: true, maxMessageSize: max(1, transport.maxMessageSize))
        let handler = WebSocketHandler(eventLoop: channel.eventLoop, settings: settings, inbound: inbound) { handler in
            server.accept(transport: handler, request: request)
        }
        try channel.pipeline.syncOperations.addHandler(handler)
    }
}

