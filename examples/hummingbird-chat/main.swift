// Hummingbird comes with the Mounts trait, on by default (see Package.swift).
#if Mounts
import ChatApp
import Configuration
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Neffos
import NeffosHummingbird
import Prometheus
import ServiceLifecycle

// The chat, served by a Hummingbird application: the page and its script, a REST route, and
// the neffos endpoint on one port, with the upgrade going through the app's middleware.
//
//   swift run neffos-hummingbird-chat [--host 127.0.0.1] [--port 8080] [--config FILE.yaml]
//
// Open http://127.0.0.1:8080/ in two tabs. Announce to a room from anywhere:
//   curl -d '{"room":"lobby","text":"hello"}' http://127.0.0.1:8080/announce

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = .info
    return handler
}
let logger = Logger(label: "neffos-hummingbird-chat")
// The program picks the metrics backend (Prometheus), served at /metrics below.
let metrics = Chat.bootstrapMetrics()

// --host and --port (or NEFFOS_LISTENER_HOST/PORT, or neffos.listener.* in --config), and the
// server's settings (neffos.limits.*, neffos.timeouts.*) from the same places.
let config = await Chat.configuration(program: "neffos-hummingbird-chat", flags: [.host, .port])
let (host, port) = Chat.address(config)

/// Refuses a WebSocket connection that does not say who it is (`401`), and hands the name on as
/// the connection's identity.
struct NameRequired<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Chat.requestedName(UpgradeRequest(request.head)) != nil else {
            throw HTTPError(.unauthorized, message: "say who you are: ?X-Websocket-Header-X-Username=NAME")
        }
        return try await next(request, context)
    }
}

let configuration = Chat.serverConfiguration(config, logger: logger)
let server = try Server(namespaces: Chat.namespaces, configuration: configuration)

let router = Router()
for path in ["/", "/index.html", "/neffos-client.js"] {
    router.get(RouterPath(path)) { _, _ -> Response in
        guard let asset = Chat.asset(at: path) else { return Response(status: .notFound) }
        return Response(
            status: .ok, headers: [.contentType: asset.contentType, .cacheControl: "no-cache"],
            body: .init(byteBuffer: ByteBuffer(bytes: asset.body)))
    }
}
router.get("/healthz") { _, _ in "ok\n" }
router.get("/metrics") { _, _ in
    Response(
        status: .ok, headers: [.contentType: Chat.metricsContentType],
        body: .init(byteBuffer: ByteBuffer(bytes: metrics.emitToBuffer())))
}
router.post("/announce") { request, context -> HTTPResponse.Status in
    let announcement = try await request.decode(as: Chat.Announcement.self, context: context)
    Chat.announce(announcement, on: server)
    return .accepted
}
router.group().add(middleware: NameRequired()).neffos("/echo") { request, _ in Chat.requestedName(UpgradeRequest(request.head)) }

let (chosenHost, chosenPort) = (host, port)
let app = Application(
    router: router,
    server: .neffos(server, router: router),
    configuration: .init(address: .hostname(host, port: port), serverName: "neffos-hummingbird-chat"),
    onServerRunning: { channel in
        logger.info("chat page on http://\(chosenHost):\(channel.localAddress?.port ?? chosenPort)/ (WebSocket endpoint /echo, Hummingbird)")
    },
    logger: logger)
let group = ServiceGroup(configuration: .init(services: [server, app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
try await group.run()
#else
import Foundation

FileHandle.standardError.write(Data("neffos-hummingbird-chat: built without the Mounts trait (on by default); build with `--traits Mounts`\n".utf8))
exit(2)
#endif
