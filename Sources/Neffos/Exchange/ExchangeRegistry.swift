/// One kind of exchange an application can pick by URL scheme.
public typealias ExchangePlugin = URLPlugin<any Exchange>

extension URLPlugin where Product == any Exchange {
    /// `memory://` (``InProcessExchange/shared``) and `memory://NAME` (a named bus).
    public static var memory: ExchangePlugin {
        ExchangePlugin(scheme: "memory", summary: "memory://[NAME] — servers in this process (the default)") { url in
            InProcessExchange.named(url.servers.first?.host ?? url.path)
        }
    }
}

/// The exchanges an application can choose from, by URL scheme.
///
/// ```swift
/// let registry = ExchangeRegistry([.memory, LoopbackExchange.plugin, .nats])
/// configuration.exchange = try registry.exchange(for: "nats://10.0.0.1:4222")
/// // or, from configuration (neffos.exchange.url):
/// let configured = try Server.Configuration(config: reader, exchanges: registry)
/// ```
public typealias ExchangeRegistry = URLRegistry<any Exchange>

extension URLRegistry where Product == any Exchange {
    /// The registry with the core's plugin: `memory://`.
    public static var standard: ExchangeRegistry { ExchangeRegistry([.memory]) }

    /// The exchange for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func exchange(for url: String) throws -> any Exchange {
        try make(for: url)
    }
}
