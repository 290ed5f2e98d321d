// Built with the Mounts trait (on by default): without it this file is empty and the target
// has no Hummingbird or Vapor to import.
#if Mounts
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Neffos
import NeffosNIO

extension HTTPServerBuilder {
    /// An HTTP/1.1 server that serves the application's routes and upgrades the requests that
    /// reach a ``Hummingbird/RouterMethods/neffos(_:identify:)`` route to neffos connections of
    /// `server`.
    ///
    /// The upgrade request goes through `router`'s middleware first (pass the same router as
    /// the application's); once upgraded, the connection is served on its event loop by the
    /// same handlers as the standalone `WebSocketListener` (no task hop per frame), with
    /// `server`'s limits, heartbeat and timeouts.
    ///
    /// ```swift
    /// let app = Application(router: router, server: .neffos(server, router: router),
    ///                       configuration: .init(address: .hostname("0.0.0.0", port: 8080)))
    /// let group = ServiceGroup(configuration: .init(
    ///     services: [server, app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    /// try await group.run()
    /// ```
    ///
    /// On graceful shutdown the application's HTTP server stops accepting and asks every
    /// connection to quiesce: neffos connections close with 1001 (going away); then the
    /// ``Neffos/Server`` (before the app in the group) waits for their disconnect hooks and
    /// closes its exchange.
    ///
    /// - Parameters:
    ///   - server: the neffos server the connections are handed to.
    ///   - router: the application's router (its middleware sees every upgrade request).
    ///   - configuration: the HTTP/1.1 settings (idle timeout, decoder limits, extra handlers).
    public static func neffos<Router: HTTPResponderBuilder>(
        _ server: Neffos.Server, router: Router, configuration: HTTP1Channel.Configuration = .init()
    ) -> HTTPServerBuilder where Router.Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
        let upgradeResponder = router.buildResponder()
        return HTTPServerBuilder { responder in
            NeffosHTTP1Channel(responder: responder, upgradeResponder: upgradeResponder, server: server, configuration: configuration)
        }
    }
}

/// Hummingbird's HTTP/1.1 child channel, with neffos upgrades: a request that asks for a
/// WebSocket runs through the router (middleware, then the ``Hummingbird/RouterMethods/neffos(_:identify:)``
/// route); if the route accepts, the connection is upgraded and neffos's NIO handlers serve
/// it; otherwise the router's answer (a `401` from an authenticator, say) is sent and the
/// connection closes. Every other request is served exactly as by `HTTP1Channel`.
public struct NeffosHTTP1Channel<UpgradeResponder: Hummingbird.HTTPResponder>: ServerChildChannel, HTTPChannelHandler
where UpgradeResponder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    /// What became of a connection's first request.
    enum Outcome: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, Response)
        case neffos(any Channel)
    }

    /// The decision on an upgrade request.
    enum Decision: Sendable {
        case accept(UpgradeRequest)
        case refuse(Response)
    }

    /// A connection being set up.
    public struct Value: ServerChildChannelValue {
        let outcome: EventLoopFuture<Outcome>
        /// The connection.
        public let channel: any Channel
    }

    /// Answers the requests that are not upgraded (the application's).
    public let responder: HTTPChannelHandler.Responder
    let upgradeResponder: UpgradeResponder
    let server: Neffos.Server
    let configuration: HTTP1Channel.Configuration

    init(
        responder: @escaping HTTPChannelHandler.Responder, upgradeResponder: UpgradeResponder,
        server: Neffos.Server, configuration: HTTP1Channel.Configuration
    ) {
        self.responder = responder
        self.upgradeResponder = upgradeResponder
        self.server = server
        self.configuration = configuration
    }

    /// Builds the connection's pipeline: HTTP/1.1 with a WebSocket upgrader whose decision is
    /// the router's.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let server = self.server
            let configuration = self.configuration
            let decision = NIOLoopBoundBox<Decision?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Outcome>(
                maxFrameSize: WebSocketListener.maxFrameSize(server.configuration.transport),
                enableAutomaticErrorHandling: WebSocketListener.usesNIOProtocolErrorHandler,
                shouldUpgrade: { channel, head in
                    self.decide(head, channel: channel, logger: logger).map { verdict in
                        decision.value = verdict
                        if case .accept = verdict { return HTTPHeaders() }
                        return nil
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard case .accept(let request)? = decision.value else { throw ChannelError.inappropriateOperationForState }
                        try WebSocketListener.installServerPipeline(on: channel, server: server, request: request)
                        return .neffos(channel)
                    }
                })
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Outcome>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let operations = channel.pipeline.syncOperations
                        try operations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try operations.addHandlers(configuration.additionalChannelHandlers())
                        try operations.addHandler(HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if case .refuse(let response)? = decision.value { return .refused(http, response) }
                        return .http(http)
                    }
                })
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<Outcome>(upgradeConfiguration: upgrade)
            pipeline.enablePipelining = false
            pipeline.enableErrorHandling = false
            pipeline.enableResponseHeaderValidation = false
            pipeline.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            pipeline.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            pipeline.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let outcome = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            return Value(outcome: outcome, channel: channel)
        }
    }

    /// Serves the connection: HTTP requests through the application's responder, a refused
    /// upgrade's answer, or nothing (an upgraded connection is served by its handlers until it
    /// closes).
    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.outcome.get() {
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, var response):
                response.headers[.connection] = "close"
                try await http.executeThenClose { _, outbound in
                    let writer = ResponseWriter(outbound: outbound)
                    try await writer.write(response: response.head, body: response.body)
                }
            case .neffos(let channel):
                try await channel.closeFuture.get()
            }
        } catch {
            logger.debug("neffos: connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Decides an upgrade request: valid WebSocket (RFC 6455), then the router (middleware and
    /// the neffos route), then the server's own rules (origin, header bytes, connection limit,
    /// shutdown).
    private func decide(_ head: HTTPRequestHead, channel: any Channel, logger: Logger) -> EventLoopFuture<Decision> {
        let server = self.server
        if let refusal = UpgradeVerdict.protocolRefusal(of: head) {
            return channel.eventLoop.makeSucceededFuture(Self.refuse(refusal, server: server))
        }
        let promise = channel.eventLoop.makePromise(of: Decision.self)
        let upgradeResponder = self.upgradeResponder
        let remoteAddress = channel.remoteAddress
        promise.completeWithTask {
            let request = UpgradeRequest(head: head, remoteAddress: remoteAddress)
            let slot = UpgradeSlot()
            let response: Response
            do {
                response = try await UpgradeSlot.$current.withValue(slot) {
                    try await upgradeResponder.respond(
                        to: Request(head: request.http, body: .init(buffer: ByteBuffer())),
                        context: UpgradeResponder.Context(source: ApplicationRequestContextSource(channel: channel, logger: logger)))
                }
            } catch let error as any HTTPResponseError {
                // What the router's own responder makes of it; another responder's error keeps its status.
                response = .text("\(error.status.reasonPhrase)\n", status: error.status)
            } catch {
                logger.error("neffos: the router failed on an upgrade request", metadata: ["error": "\(error)"])
                response = .text("Internal Server Error\n", status: .internalServerError)
            }
            let decision = slot.decision
            guard response.status == .ok, decision.accepted else {
                UpgradeVerdict.recordRefusal("refused by the application (\(response.status.code))", on: server)
                return .refuse(response)
            }
            if let refusal = UpgradeVerdict.serverRefusal(uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, server: server) {
                return Self.refuse(refusal, server: server)
            }
            if let limit = server.configuration.transport.maxConnections {
                guard server.reserveConnectionSlot(limit: limit) else {
                    return Self.refuse((.serviceUnavailable, "the server holds \(limit) connections (transport.maxConnections)"), server: server)
                }
                channel.closeFuture.whenComplete { _ in server.releaseConnectionSlot() }
            }
            var accepted = request
            accepted.identity = decision.identity
            return .accept(accepted)
        }
        return promise.futureResult
    }

    private static func refuse(_ refusal: (status: HTTPResponse.Status, reason: String), server: Neffos.Server) -> Decision {
        UpgradeVerdict.recordRefusal(refusal.reason, on: server)
        var fields = HTTPFields()
        if refusal.status == .upgradeRequired { fields[.secWebSocketVersion] = "13" }
        return .refuse(.text("\(refusal.status.reasonPhrase): \(refusal.reason)\n", status: refusal.status, headerFields: fields))
    }
}
#endif
