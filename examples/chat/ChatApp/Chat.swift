import Foundation
import HTTPTypes
import Logging
import Metrics
import NIOCore
import Neffos
import NeffosNIO
import Prometheus
import ServiceLifecycle
import UnixSignals
import Configuration

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

    /// The name an upgrade request asks for (the `X-Username` header, or the
    /// `?X-Websocket-Header-X-Username=…` query parameter browsers send), trimmed; `nil` when
    /// there is none. The Hummingbird and Vapor chats refuse connections without one.
    public static func requestedName(_ request: UpgradeRequest) -> String? {
        let name = request.header("X-Username")?.trimmingCharacters(in: .whitespaces) ?? ""
        return name.isEmpty ? nil : String(name.prefix(32))
    }

    /// An announcement to a room, as `POST /announce` takes it (`{"room": "lobby", "text": "…"}`).
    public struct Announcement: Codable, Sendable {
        /// The room.
        public var room: String
        /// What to say.
        public var text: String
    }

    /// Says `announcement` to its room, on every node (a `system` line, as joins and leaves).
    public static func announce(_ announcement: Announcement, on server: Server) {
        _ = server.broadcast(Message(namespace: "default", room: announcement.room, event: "system",
                                 body: "announcement: \(announcement.text.prefix(2000))"))
    }

    /// The name a connection chose (`?X-Websocket-Header-X-Username=…`), or a guest name.
    public static func name(of conn: Conn) -> String {
        name(ofID: conn.id)
    }

    /// The chat's connection IDs carry the user's name (`alice~3f9a2c41`), so that a member
    /// another node lists (by ID) is shown by name: the server's ``Server/Configuration/idGenerator``.
    public static func connectionID(_ request: UpgradeRequest) -> String {
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "\(requestedName(request) ?? "guest-\(suffix.prefix(4))")~\(suffix)"
    }

    /// The name in a chat connection ID (what precedes its last `~`).
    public static func name(ofID id: String) -> String {
        id.lastIndex(of: "~").map { String(id[..<$0]) } ?? id
    }

    /// The chat's server settings over `configuration`: IDs that carry names, presence events
    /// for its rooms (the pages get a `presence` event for each join and leave on any node, a
    /// node that is gone included, and refresh their member list), and, unless
    /// `neffos.history.rooms` says otherwise, the last 50 lines of every room kept for an hour:
    /// a page that joins gets them at once, one that reconnects recovers what it missed.
    static func configure(_ configuration: inout Server.Configuration) {
        configuration.idGenerator = connectionID
        configuration.presence.namespaces = ["default"]
        configuration.presence.clientEvent = "presence"
        if configuration.history.rules.isEmpty {
            configuration.history.rules = [
                HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: historyLines, maxAge: .seconds(3600)), replayOnJoin: historyLines)
            ]
        }
    }

    /// The lines of a room a page that joins gets at once (a page that reconnects recovers
    /// what it missed instead).
    public static let historyLines = 50

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
        // The room's members on every node of the cluster (this node alone without an
        // exchange); a node that does not answer within a second is left out.
        events.answer("members") { ns, message in
            guard let server = ns.server else { return try Reply.encoded([String]()) }
            let members = try await server.clusterMembers(ofRoom: message.bodyString, in: ns.namespace, timeout: .seconds(1))
            return try Reply.encoded(Array(Set(members.value.map(name(ofID:)))).sorted())
        }
        return ["default": events]
    }

    /// The page and the JavaScript client, by request path: content type and bytes (`nil` for a
    /// path that is not one of them). Every way of serving the chat serves these.
    public static func asset(at path: String) -> (contentType: String, body: Data)? {
        let file: (name: String, type: String)
        switch path.split(separator: "?").first.map(String.init) ?? "/" {
        case "/", "/index.html": file = ("index.html", "text/html; charset=utf-8")
        case "/neffos-client.js": file = ("neffos-client.js", "text/javascript; charset=utf-8")
        default: return nil
        }
        guard let url = Bundle.module.url(forResource: file.name, withExtension: nil, subdirectory: "Public"),
              let data = try? Data(contentsOf: url)
        else { return ("text/plain; charset=utf-8", Data("missing asset \(file.name)\n".utf8)) }
        return (file.type, data)
    }

    /// The Prometheus text exposition of `registry`, as `/metrics` serves it.
    public static func metricsPage(_ registry: PrometheusCollectorRegistry) -> HTTPPage {
        HTTPPage(contentType: metricsContentType, body: ByteBuffer(bytes: registry.emitToBuffer()))
    }

    /// The content type of the Prometheus text exposition.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Makes Prometheus the swift-metrics backend of this process and returns its registry, to
    /// serve at `/metrics`. A program calls it once, first; the library never does.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// Serves the page, the JavaScript client and `/healthz` next to the listener's endpoint.
    public static let responder: HTTPPageResponder = { request in
        guard request.method == .get || request.method == .head else { return nil }
        let path = request.path ?? "/"
        if path.split(separator: "?").first == "/healthz" { return .text("ok\n") }
        guard let asset = asset(at: path) else { return nil }
        var page = HTTPPage(contentType: asset.contentType, body: .init(bytes: asset.body))
        page.head.headerFields[.cacheControl] = "no-cache"
        return page
    }
}

extension Chat {
    /// Runs the chat server until SIGTERM or SIGINT: the page at `/`, the WebSocket endpoint at
    /// `/echo` (`ws://`, or `wss://` when `neffos.listener.tls.*` name a certificate chain and
    /// key; SIGHUP reads those files again). Logs `chat page on http://HOST:PORT/ …` once it
    /// listens.
    ///
    /// - Parameters:
    ///   - config: the settings (``Neffos/Server/Configuration/init(config:scope:exchanges:histories:)``
    ///     and the listener's `neffos.listener.*`); the port defaults to 8080.
    ///   - exchanges: the exchanges `neffos.exchange.url` may name.
    ///   - histories: the history stores `neffos.history.store.url` may name (`memory://`
    ///     only by default).
    ///   - logger: where the server logs.
    ///   - metrics: a Prometheus registry to serve at `/metrics` (the program bootstraps
    ///     swift-metrics with it; the library never does).
    ///   - services: more services to run beside the server (an exporter of traces…).
    /// - Throws: ``Neffos/NeffosError/invalidConfiguration`` naming the key of a wrong value,
    ///   before anything starts; then the listener's bind error.
    public static func serve(
        config: ConfigReader, exchanges: ExchangeRegistry, histories: HistoryStoreRegistry = .standard, logger: Logger,
        metrics: PrometheusCollectorRegistry? = nil, services more: [any Service] = []
    ) async throws {
        var configuration = try Server.Configuration(config: config, exchanges: exchanges, histories: histories)
        configuration.logger = logger
        configure(&configuration)
        let server = try Server(namespaces: namespaces, configuration: configuration)
        let pages = responder
        let listener = try WebSocketListener(server: server, config: config, port: 8080, path: "/echo") { request in
            if let metrics, request.method == .get, request.path?.split(separator: "?").first == "/metrics" {
                return metricsPage(metrics)
            }
            return pages(request)
        }
        // The URL as logged: its password hidden.
        let exchangeURL = ConfigValues(config, scope: "neffos").text("exchange.url").flatMap { try? ExchangeURL($0) }
        logger.info("exchange \(exchangeURL.map { "\($0)" } ?? "none (this node only)")")
        let services = ServiceGroup(
            configuration: .init(services: more + [server, listener], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let scheme = listener.tls == nil ? "http" : "https"
        Task {
            if let bound = await listener.boundPort() {
                logger.info("chat page on \(scheme)://\(listener.host):\(bound)/ (WebSocket endpoint /echo, node \(server.nodeName))")
            }
        }
        if let tls = listener.tls {
            // SIGHUP: the renewed certificate files, for new connections.
            Task {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    do {
                        try tls.reload()
                        logger.info("TLS certificate reloaded from \(tls.certificateChainPath)")
                    } catch {
                        logger.error("TLS certificate not reloaded, the previous one stays: \(error)")
                    }
                }
            }
        }
        try await services.run()
    }
}
