/// One kind of exchange an application can pick by URL scheme.
public struct ExchangePlugin: Sendable {
    /// The URL scheme it answers (`nats`).
    public let scheme: String
    /// One line for error messages and help (`nats://host:port[,host:port…] — a NATS cluster`).
    public let summary: String
    /// Makes the exchange for a URL of this scheme.
    public let make: @Sendable (ExchangeURL) throws -> any Exchange

    /// A plugin.
    public init(scheme: String, summary: String, make: @escaping @Sendable (ExchangeURL) throws -> any Exchange) {
        self.scheme = scheme.lowercased()
        self.summary = summary
        self.make = make
    }

    /// `memory://` (``InProcessExchange/shared``) and `memory://NAME` (a named bus).
    public static let memory = ExchangePlugin(
        scheme: "memory", summary: "memory://[NAME] — servers in this process (the default)"
    ) { url in
        InProcessExchange.named(url.servers.first?.host ?? url.path)
    }
}

/// The exchanges an application can choose from, by URL scheme: an immutable table built from
/// the plugins the application links.
///
/// ```swift
/// let registry = ExchangeRegistry([.memory, LoopbackExchange.plugin, .nats])
/// configuration.exchange = try registry.exchange(for: "nats://10.0.0.1:4222")
/// // or, from configuration (neffos.exchange.url):
/// let configured = try Server.Configuration(config: reader, exchanges: registry)
/// ```
///
/// An unknown scheme or a malformed URL is a start-up error that names the registered schemes.
public struct ExchangeRegistry: Sendable {
    private let plugins: [String: ExchangePlugin]

    /// A registry of `plugins`; a later plugin for the same scheme replaces an earlier one.
    public init(_ plugins: [ExchangePlugin]) {
        var table: [String: ExchangePlugin] = [:]
        for plugin in plugins { table[plugin.scheme] = plugin }
        self.plugins = table
    }

    /// The registry with the core's plugin: `memory://`.
    public static let standard = ExchangeRegistry([.memory])

    /// The registered schemes, sorted.
    public var schemes: [String] { plugins.keys.sorted() }

    /// A copy with `plugin` added.
    public func adding(_ plugin: ExchangePlugin) -> ExchangeRegistry {
        ExchangeRegistry(Array(plugins.values) + [plugin])
    }

    /// The exchange for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func exchange(for url: String) throws -> any Exchange {
        let parsed = try ExchangeURL(url)
        guard let plugin = plugins[parsed.scheme] else {
            let known = plugins.values.sorted { $0.scheme < $1.scheme }.map { "  \($0.summary)" }.joined(separator: "\n")
            throw NeffosError.invalidConfiguration.with(
                detail: "no exchange is registered for \"\(parsed.scheme)://\" (in \(parsed)); registered:\n\(known)")
        }
        return try plugin.make(parsed)
    }
}
