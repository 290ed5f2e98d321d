// Vapor comes with the Mounts trait, on by default (see Package.swift).
#if Mounts
import ChatApp
import Configuration
import Foundation
import Logging
import Neffos
import NeffosVapor
import Prometheus
import ServiceLifecycle
import Vapor

// The chat, served by a Vapor application: the page and its script, a REST route, and the
// neffos endpoint on one port, with the upgrade going through the app's middleware.
//
//   swift run neffos-vapor-chat [--host 127.0.0.1] [--port 8080] [--config FILE.yaml]
//
// Open http://127.0.0.1:8080/ in two tabs. Announce to a room from anywhere:
//   curl -H 'Content-Type: application/json' -d '{"room":"lobby","text":"hello"}' http://127.0.0.1:8080/announce

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = .info
    return handler
}
let logger = Logger(label: "neffos-vapor-chat")
// The program picks the metrics backend (Prometheus), served at /metrics below.
let metrics = Chat.bootstrapMetrics()

// --host and --port (or NEFFOS_LISTENER_HOST/PORT, or neffos.listener.* in --config), and the
// server's settings (neffos.limits.*, neffos.timeouts.*) from the same places.
let config = await Chat.configuration(program: "neffos-vapor-chat", flags: [.host, .port])
let (host, port) = Chat.address(config)

/// Refuses a WebSocket connection that does not say who it is (`401`).
struct NameRequired: AsyncMiddleware {
    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        guard Chat.requestedName(Self.upgradeRequest(request)) != nil else {
            throw Abort(.unauthorized, reason: "say who you are: ?X-Websocket-Header-X-Username=NAME")
        }
        return try await next.respond(to: request)
    }

    static func upgradeRequest(_ request: Request) -> UpgradeRequest {
        UpgradeRequest(path: request.url.string, headers: request.headers.map { ($0.name, $0.value) })
    }
}

let configuration = Chat.serverConfiguration(config, logger: logger)
let server = try Neffos.Server(namespaces: Chat.namespaces, configuration: configuration)

// Vapor's own command line and signal handling stay out: the service group runs the app.
let app = try await Application.make(Environment(name: "production", arguments: ["neffos-vapor-chat"]))
app.logger = logger
for path in ["", "index.html", "neffos-client.js"] {
    app.get(path.pathComponents) { _ -> Response in
        guard let asset = Chat.asset(at: "/" + path) else { return Response(status: .notFound) }
        return Response(
            status: .ok, headers: ["Content-Type": asset.contentType, "Cache-Control": "no-cache"],
            body: .init(data: asset.body))
    }
}
app.get("healthz") { _ in "ok\n" }
app.get("metrics") { _ in
    Response(status: .ok, headers: ["Content-Type": Chat.metricsContentType], body: .init(data: Data(metrics.emitToBuffer())))
}
app.post("announce") { request -> HTTPStatus in
    Chat.announce(try request.content.decode(Chat.Announcement.self), on: server)
    return .accepted
}
app.grouped(NameRequired()).neffos("echo", server: server) { request in
    Chat.requestedName(NameRequired.upgradeRequest(request))
}

let service = VaporApplicationService(app, address: .hostname(host, port: port))
let chosenHost = host
Task {
    if let bound = await service.boundPort() {
        logger.info("chat page on http://\(chosenHost):\(bound)/ (WebSocket endpoint /echo, Vapor)")
    }
}
let group = ServiceGroup(configuration: .init(services: [server, service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
try await group.run()
#else
import Foundation

FileHandle.standardError.write(Data("neffos-vapor-chat: built without the Mounts trait (on by default); build with `--traits Mounts`\n".utf8))
exit(2)
#endif
