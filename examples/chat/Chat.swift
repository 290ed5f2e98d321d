import Foundation
import Neffos
import NeffosNIO

/// The chat application: its namespace and events, and the page it serves.
enum Chat {
    /// One line of chat, as broadcast to a room.
    struct Line: Codable, Sendable {
        var from: String
        var text: String
    }

    /// The name a connection chose (`?X-Websocket-Header-X-Username=…`), or a guest name.
    static func name(of conn: Conn) -> String {
        if let name = conn.store.get("name", as: String.self) { return name }
        let requested = conn.request.header("X-Username")?.trimmingCharacters(in: .whitespaces) ?? ""
        let name = requested.isEmpty ? "guest-\(conn.id.prefix(4))" : String(requested.prefix(32))
        conn.store["name"] = name
        return name
    }

    /// The `default` namespace: rooms, chat lines, join/leave notices, and a members ask.
    static var namespaces: Namespaces {
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
    static let responder: HTTPResponder = { head in
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
