import Foundation
import Logging
import Neffos
import NeffosNIO
import ServiceLifecycle

/// The chat application: its namespace and events, and the page it serves. The `neffos-chat`
/// example and the `neffos serve` command run it.
public enum Chat {
    /// One line of chat, as broadcast to a room.
    public struct Line: Codable, Sendable {
        /// Who wrote it.
        public var from: String
        /// What they wrote.
        public var text: String

        /// A line from `from`.
        public init(from: String, text: String) {
            self.from = from
            self.text = text
        }
    }

    /// The name a connection chose (`?X-Websocket-Header-X-Username=…`), or a guest name.
    public static func name(of conn: Conn) -> String {
        if let name = conn.store.get("name", as: String.self) { return name }
        let requested = conn.request.header("X-Username")?.trimmingCharacters(in: .whitespaces) ?? ""
        let name = requested.isEmpty ? "guest-\(conn.id.prefix(4))" : String(requested.prefix(32))
        conn.store["name"] = name
        return name
    }

    /// The `default` namespace: rooms, chat lines, join/leave notices, and a members ask.
    public static var namespaces: Namespaces {
        var events = Events()
        events.on(.roomJoined) { ns, message in
            ns.broadcast(Message(namespace: ns.namespace, room: message.room, event: "system",
                                 body: "\(name(of: ns.conn)) joined \(message.room)"))
        }
        events.on(.roomLeft) { ns, message in
            ns.broadcastOthers(Message(namespace: ns.namespace, room: message.room, event: "system",
                                       body: "\(name(of: ns.conn)) left \(message.room)"))
        }
        events.on("chat") { ns, message in
            guard !message.room.isEmpty, ns.isJoined(message.room) else { throw NeffosError.badRoom }
            let line = Line(from: name(of: ns.conn), text: String(message.bodyString.prefix(2000)))
            ns.broadcast(try Message(namespace: ns.namespace, room: message.room, event: "chat", encoding: line))
        }
        events.answer("members") { ns, message in
            let names = ns.server?.members(ofRoom: message.bodyString, in: ns.namespace).map { name(of: $0.conn) } ?? []
            return try Reply.encoded(names.sorted())
        }
        return ["default": events]
    }

    /// Serves the page and the JavaScript client.
    public static let responder: HTTPResponder = { head in
        guard head.method == .GET || head.method == .HEAD else { return nil }
        switch head.uri.split(separator: "?").first.map(String.init) ?? "/" {
        case "/", "/index.html": return asset("index.html", type: "text/html; charset=utf-8")
        case "/neffos-client.js": return asset("neffos-client.js", type: "text/javascript; charset=utf-8")
        case "/healthz": return .text("ok\n")
        default: return nil
        }
    }

    private static func asset(_ name: String, type: String) -> HTTPResponse? {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Public"),
              let data = try? Data(contentsOf: url)
        else { return .text("missing asset \(name)\n", status: .internalServerError) }
        var response = HTTPResponse(contentType: type, body: .init(bytes: data))
        response.headers.add(name: "Cache-Control", value: "no-cache")
        return response
    }
}

extension Chat {
    /// Runs the chat server until SIGTERM or SIGINT: the page at `/`, the WebSocket endpoint at
    /// `/echo`. Logs `chat page on http://HOST:PORT/ …` once it listens.
    ///
    /// - Parameters:
    ///   - host: the address to listen on.
    ///   - port: the port (0 picks a free one).
    ///   - configuration: the server's configuration (its exchange, node name, logger).
    public static func serve(host: String, port: Int, configuration: Server.Configuration) async throws {
        let logger = configuration.logger
        let server = try Server(namespaces: namespaces, configuration: configuration)
        let listener = WebSocketListener(server: server, host: host, port: port, path: "/echo", responder: responder)
        let services = ServiceGroup(
            configuration: .init(services: [listener], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        Task {
            if let bound = await listener.boundPort() {
                logger.info("chat page on http://\(host):\(bound)/ (WebSocket endpoint /echo, node \(server.nodeName))")
            }
        }
        try await services.run()
    }
}
