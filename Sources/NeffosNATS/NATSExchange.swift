import CNATS
import Dispatch
import Logging
import NIOCore
import Neffos
import Synchronization

/// An exchange over NATS (the C client nats.c): one connection per node, subscriptions by
/// subject, no echo.
///
/// ```swift
/// configuration.exchange = try NATSExchange(url: "nats://10.0.0.1:4222,10.0.0.2:4222?name=web-1")
/// ```
///
/// When the connection drops, local delivery goes on; nats.c reconnects (to any server of the
/// list) and replays the subscriptions; publishes made meanwhile wait in its reconnect buffer
/// (``Options/reconnectBufferBytes``) and those that do not fit are dropped, counted and
/// logged. A node that cannot keep up gets slow-consumer events (``ExchangeStatus/slowConsumer(subject:dropped:)``),
/// counted too.
public struct NATSExchange: Exchange, CustomStringConvertible {
    /// How a node connects to NATS; every field has a documented default.
    public struct Options: Sendable, Equatable {
        /// The servers, `nats://host:port` (or `tls://host:port`), tried in this order unless
        /// ``randomize`` is on.
        public var servers: [String]
        /// The connection's name, shown by the server's monitoring (`/connz`). Default:
        /// `neffos <node name>`.
        public var name: String?
        /// User and password, if the server wants them.
        public var user: String?
        /// The password for ``user``.
        public var password: String?
        /// A token, if the server wants one.
        public var token: String?
        /// A credentials file (JWT and NKey seed), if the server wants one.
        public var credentialsFile: String?
        /// Whether to require TLS (nats.c's OpenSSL). Default: off (on for `tls://`).
        public var tls = false
        /// A CA bundle to verify the server's certificate with, when TLS is on.
        public var tlsCAFile: String?
        /// How long one connection attempt may take. Default: 2 s.
        public var connectTimeout: Duration = .seconds(2)
        /// The wait between rounds of reconnection attempts over the list. Default: 250 ms.
        public var reconnectWait: Duration = .milliseconds(250)
        /// A random extra wait added to ``reconnectWait``. Default: 100 ms.
        public var reconnectJitter: Duration = .milliseconds(100)
        /// Reconnection attempts before giving up; `nil` never gives up. Default: `nil`.
        public var maxReconnects: Int?
        /// Bytes of publishes kept while disconnected; beyond, publishes are dropped and
        /// counted. Default: 8 MiB.
        public var reconnectBufferBytes = 8 << 20
        /// Messages a subscription may have waiting before nats.c drops (slow consumer).
        /// Default: 65,536.
        public var pendingMessagesLimit = 65_536
        /// Bytes a subscription may have waiting before nats.c drops. Default: 64 MiB.
        public var pendingBytesLimit = 64 << 20
        /// Threads of nats.c's shared delivery pool (every subscription of the process is served
        /// by one of them, in order). Default: 2 × the cores, at least 2.
        public var deliveryThreads = max(2, 2 * NIOCore.System.coreCount)
        /// Whether to shuffle the server list. Default: off (a node keeps its preferred server).
        public var randomize = false
        /// Whether to fail over to the servers the cluster announces besides ``servers``.
        /// Default: on; off keeps the node on its listed servers only.
        public var discoveredServers = true
        /// How often nats.c pings the server to detect a dead connection. Default: 2 s.
        public var pingInterval: Duration = .seconds(2)

        /// Options for `servers` (`nats://host:port`).
        public init(servers: [String]) {
            self.servers = servers
        }
    }

    /// The options.
    public let options: Options

    /// An exchange with `options`.
    public init(options: Options) {
        self.options = options
    }

    /// An exchange from a URL:
    /// `nats://[user:password@]host[:port][,host[:port]…][?option=value&…]`.
    ///
    /// Options: `name`, `token`, `credentials` (a file), `tls` (`true`), `tlsCA` (a file),
    /// `connectTimeout`, `reconnectWait`, `reconnectJitter`, `pingInterval` (milliseconds),
    /// `maxReconnects` (`-1` forever), `reconnectBuffer` (bytes), `pendingMessages`,
    /// `pendingBytes`, `deliveryThreads`, `randomize` (`true`), `discovered` (`false`: only the
    /// listed servers). `tls://` turns TLS on.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` naming what is wrong.
    public init(url: String) throws {
        try self.init(url: ExchangeURL(url))
    }

    /// An exchange from a parsed URL (see ``init(url:)-(String)``).
    public init(url: ExchangeURL) throws {
        try self.init(url: url, alsoAccepting: [])
    }

    /// An exchange from a parsed URL whose options may also include `others` (left to the
    /// caller: a JetStream history's `storage`).
    package init(url: ExchangeURL, alsoAccepting others: Set<String>) throws {
        guard url.scheme == "nats" || url.scheme == "tls" else {
            throw NeffosError.invalidConfiguration.with(detail: "\(url) is not a nats:// URL")
        }
        guard !url.servers.isEmpty else {
            throw NeffosError.invalidConfiguration.with(detail: "\(url) names no server (nats://host:port)")
        }
        let scheme = url.scheme == "tls" || url.options["tls"] == "true" ? "tls" : "nats"
        var options = Options(servers: url.servers.map { server in
            let host = server.host.contains(":") ? "[\(server.host)]" : server.host
            return "\(scheme)://\(host):\(server.port ?? 4222)"
        })
        options.tls = scheme == "tls"
        options.user = url.user
        options.password = url.password
        var unknown = Set(url.options.keys).subtracting(others)
        func take(_ key: String) -> String? {
            unknown.remove(key)
            return url.options[key]
        }
        func integer(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let text = take(key) else { return nil }
            guard let value = Int(text), range.contains(value) else {
                throw NeffosError.invalidConfiguration.with(detail: "\(key)=\(text) in \(url) must be an integer in \(range)")
            }
            return value
        }
        options.name = take("name")
        options.token = take("token")
        options.credentialsFile = take("credentials")
        options.tlsCAFile = take("tlsCA")
        _ = take("tls")
        if let value = try integer("connectTimeout", 1...600_000) { options.connectTimeout = .milliseconds(value) }
        if let value = try integer("reconnectWait", 0...600_000) { options.reconnectWait = .milliseconds(value) }
        if let value = try integer("reconnectJitter", 0...600_000) { options.reconnectJitter = .milliseconds(value) }
        if let value = try integer("pingInterval", 100...3_600_000) { options.pingInterval = .milliseconds(value) }
        if let value = try integer("maxReconnects", -1...Int(Int32.max)) { options.maxReconnects = value < 0 ? nil : value }
        if let value = try integer("reconnectBuffer", 0...Int(Int32.max)) { options.reconnectBufferBytes = value }
        if let value = try integer("pendingMessages", 1...Int(Int32.max)) { options.pendingMessagesLimit = value }
        if let value = try integer("pendingBytes", 1...Int(Int32.max)) { options.pendingBytesLimit = value }
        if let value = try integer("deliveryThreads", 1...1024) { options.deliveryThreads = value }
        if let value = take("randomize") { options.randomize = value == "true" }
        if let value = take("discovered") { options.discoveredServers = value != "false" }
        guard unknown.isEmpty else {
            throw NeffosError.invalidConfiguration.with(detail: "unknown option(s) \(unknown.sorted().joined(separator: ", ")) in \(url)")
        }
        self.init(options: options)
    }

    /// The servers, without credentials.
    public var description: String { options.servers.joined(separator: ",") }

    /// Connects `node` with one NATS connection.
    ///
    /// - Throws: ``NeffosError/dialFailed`` when no server of the list can be reached (with
    ///   nats.c's text), or ``NeffosError/invalidConfiguration`` for rejected options.
    public func connect(
        node: String, logger: Logger,
        deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
        status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> any ExchangeConnection {
        try await NATSConnection.open(options: options, node: node, logger: logger, deliver: deliver, status: status)
    }
}

extension ExchangePlugin {
    /// `nats://host:port[,host:port…][?options]`: a NATS cluster (see ``NATSExchange``).
    public static var nats: ExchangePlugin {
        ExchangePlugin(scheme: "nats", summary: "nats://host:port[,host:port…] — a NATS cluster (nats.c)") { url in
            try NATSExchange(url: url)
        }
    }

    /// `tls://host:port[,…]`: NATS over TLS.
    public static var natsTLS: ExchangePlugin {
        ExchangePlugin(scheme: "tls", summary: "tls://host:port[,host:port…] — a NATS cluster over TLS") { url in
            try NATSExchange(url: url)
        }
    }
}
