// Built with the Mounts trait (on by default): without it this file is empty and the target
// has no Hummingbird or Vapor to import.
#if Mounts
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Neffos
import NeffosNIO
import ServiceLifecycle
import Vapor

extension RoutesBuilder {
    /// Serves neffos at `path` (a WebSocket endpoint) on this Vapor application, behind the
    /// middleware of this routes builder.
    ///
    /// An upgrade request reaches the route only if every middleware lets it through: an
    /// authenticator (or a guard) that answers `401` refuses the connection, and the client
    /// gets that answer. `identify` runs last, with the request as the middleware left it
    /// (`req.auth`, `req.storage`); what it returns becomes the connection's
    /// ``Neffos/UpgradeRequest/identity`` (read it in the server's ID generator or connect
    /// hook); throw an `Abort` from it to refuse.
    ///
    /// Once upgraded, the connection is served on its event loop by the same handlers as the
    /// standalone `WebSocketListener` (no task hop per frame; not websocket-kit), with
    /// `server`'s limits, heartbeat and timeouts.
    ///
    /// ```swift
    /// app.grouped(UserAuthenticator(), User.guardMiddleware())
    ///     .neffos("echo", server: server) { req in try req.auth.require(User.self).name }
    /// ```
    ///
    /// The server counts the refusals it makes (``Neffos/Server/Statistics/refusedConnections``:
    /// bad upgrades, origin, bounds, shutdown); a refusal by your middleware happens before the
    /// route is reached and is yours to count.
    ///
    /// A `GET` without an upgrade is answered `400`; `HEAD` is answered `302 Found`, as the
    /// standalone listener does (neffos.js probes with it before it redials).
    @discardableResult
    public func neffos(
        _ path: PathComponent..., server: Neffos.Server,
        identify: @escaping @Sendable (Request) async throws -> (any Sendable)? = { _ in nil }
    ) -> Route {
        neffos(path, server: server, identify: identify)
    }

    /// Serves neffos at `path`, given as an array of components (see the variadic form).
    @discardableResult
    public func neffos(
        _ path: [PathComponent], server: Neffos.Server,
        identify: @escaping @Sendable (Request) async throws -> (any Sendable)? = { _ in nil }
    ) -> Route {
        on(.HEAD, path) { _ async -> Response in Response(status: .found) }
        return on(.GET, path) { req async throws -> Response in
            let head = HTTPRequestHead(version: req.version, method: req.method, uri: req.url.string, headers: req.headers)
            guard head.headers["upgrade"].contains(where: { $0.lowercased() == "websocket" }) else {
                return Response(status: .badRequest, body: .init(string: "this endpoint speaks WebSocket (neffos)\n"))
            }
            if let refusal = UpgradeVerdict.protocolRefusal(of: head) {
                return NeffosRefusal.response(refusal, server: server)
            }
            let identity = try await identify(req)
            if let refusal = UpgradeVerdict.serverRefusal(uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, server: server) {
                return NeffosRefusal.response(refusal, server: server)
            }
            if let limit = server.configuration.transport.maxConnections, server.connectionSlotsTaken >= limit {
                return NeffosRefusal.response((.serviceUnavailable, "the server holds \(limit) connections (transport.maxConnections)"), server: server)
            }
            let request = UpgradeRequest(head: head, remoteAddress: req.remoteAddress, identity: identity)
            let response = Response(status: .switchingProtocols)
            response.upgrader = NeffosUpgrader(server: server, request: request)
            return response
        }
    }
}

/// The answer to a refused upgrade.
enum NeffosRefusal {
    static func response(_ refusal: (status: HTTPTypes.HTTPResponse.Status, reason: String), server: Neffos.Server) -> Response {
        UpgradeVerdict.recordRefusal(refusal.reason, on: server)
        var headers: HTTPHeaders = ["Content-Type": "text/plain; charset=utf-8", "Connection": "close"]
        if refusal.status == .upgradeRequired { headers.add(name: "Sec-WebSocket-Version", value: "13") }
        return Response(
            status: HTTPResponseStatus(statusCode: refusal.status.code),
            headers: headers,
            body: .init(string: "\(refusal.status.reasonPhrase): \(refusal.reason)\n"))
    }
}

/// Upgrades an accepted request to a neffos connection: NIO's WebSocket upgrader, then the
/// listener's pipeline (frame validation, aggregation, ``WebSocketListener``'s handler).
struct NeffosUpgrader: Upgrader {
    let server: Neffos.Server
    let request: UpgradeRequest

    func applyUpgrade(req: Request, res: Response) -> any HTTPServerProtocolUpgrader {
        let server = server
        let request = request
        return NIOWebSocketServerUpgrader(
            maxFrameSize: WebSocketListener.maxFrameSize(server.configuration.transport),
            automaticErrorHandling: WebSocketListener.usesNIOProtocolErrorHandler,
            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture([:]) },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    if let limit = server.configuration.transport.maxConnections {
                        // Checked by the route; taken here, where the socket's end is known.
                        guard server.reserveConnectionSlot(limit: limit) else {
                            UpgradeVerdict.recordRefusal("the server holds \(limit) connections (transport.maxConnections)", on: server)
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in server.releaseConnectionSlot() }
                    }
                    try WebSocketListener.installServerPipeline(on: channel, server: server, request: request)
                }
            })
    }
}

/// Runs a Vapor application as a swift-service-lifecycle `Service`, so that it shuts down
/// with the neffos ``Neffos/Server`` in one `ServiceGroup`.
///
/// It boots the application and starts its HTTP server (no command-line parsing, no signal
/// handlers of Vapor's: the group handles signals); on graceful shutdown it stops the HTTP
/// server, which asks every connection to quiesce (neffos connections close with 1001, once),
/// then shuts the application down.
///
/// ```swift
/// let app = try await Application.make(.production)
/// app.neffos("echo", server: server)
/// let group = ServiceGroup(configuration: .init(
///     services: [server, VaporApplicationService(app, address: .hostname("0.0.0.0", port: 8080))],
///     gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
/// try await group.run()
/// ```
public final class VaporApplicationService: Service, Sendable {
    /// The application.
    public let app: Application
    private let address: BindAddress?
    private let started = Watched<Int??>(nil)

    /// Wraps `app`, to listen on `address` (or the application's `http.server.configuration`).
    public init(_ app: Application, address: BindAddress? = nil) {
        self.app = app
        self.address = address
    }

    /// Waits until the HTTP server listens and returns its port (useful with port 0); `nil`
    /// if it failed to start.
    public func boundPort() async -> Int? {
        let port = try? await started.wait(timeout: nil, orThrow: { CancellationError() }) { state -> Result<Int?, any Error>? in
            state.map { .success($0) }
        }
        return port ?? nil
    }

    /// Boots, serves until graceful shutdown (or cancellation), then stops and shuts down.
    public func run() async throws {
        do {
            try await app.asyncBoot()
            try await app.server.start(address: address)
        } catch {
            started.update { $0 = .some(nil) }
            try? await app.asyncShutdown()
            throw error
        }
        started.update { $0 = .some(self.app.http.server.shared.localAddress?.port) }
        try? await gracefulShutdown()
        await app.server.shutdown()
        try await app.asyncShutdown()
    }
}
#endif
