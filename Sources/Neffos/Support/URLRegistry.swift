/// What an application picks by URL scheme: an exchange (``ExchangePlugin``) or a history
/// store (``HistoryStorePlugin``).
public struct URLPlugin<Product>: Sendable {
    /// The URL scheme it answers (`nats`).
    public let scheme: String
    /// One line for error messages and help (`nats://host:port[,host:port…] — a NATS cluster`).
    public let summary: String
    /// Makes the product for a URL of this scheme.
    public let make: @Sendable (ExchangeURL) throws -> Product

    /// A plugin.
    public init(scheme: String, summary: String, make: @escaping @Sendable (ExchangeURL) throws -> Product) {
        self.scheme = scheme.lowercased()
        self.summary = summary
        self.make = make
    }
}

/// The plugins an application can choose from, by URL scheme: an immutable table built from
/// the plugins it links (``ExchangeRegistry``, ``HistoryStoreRegistry``).
///
/// An unknown scheme or a malformed URL is a start-up error that names the registered schemes.
public struct URLRegistry<Product>: Sendable {
    private let plugins: [String: URLPlugin<Product>]
    /// What the registry makes, for error messages (`exchange`, `history store`).
    private let kind: String

    /// A registry of `plugins`; a later plugin for the same scheme replaces an earlier one.
    public init(_ plugins: [URLPlugin<Product>]) {
        var table: [String: URLPlugin<Product>] = [:]
        for plugin in plugins { table[plugin.scheme] = plugin }
        self.plugins = table
        kind = Product.self == HistoryBackend.self ? "history store" : "exchange"
    }

    /// The registered schemes, sorted.
    public var schemes: [String] { plugins.keys.sorted() }

    /// A copy with `plugin` added.
    public func adding(_ plugin: URLPlugin<Product>) -> URLRegistry {
        URLRegistry(Array(plugins.values) + [plugin])
    }

    /// The product for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func make(for url: String) throws -> Product {
        let parsed = try ExchangeURL(url)
        guard let plugin = plugins[parsed.scheme] else {
            let known = plugins.values.sorted { $0.scheme < $1.scheme }.map { "  \($0.summary)" }.joined(separator: "\n")
            throw NeffosError.invalidConfiguration.with(
                detail: "no \(kind) is registered for \"\(parsed.scheme)://\" (in \(parsed)); registered:\n\(known)")
        }
        return try plugin.make(parsed)
    }
}

extension ConfigValues {
    /// The product `registry` makes for the URL at `key`, if set; a failure names the key.
    func made<Product>(_ key: String, by registry: URLRegistry<Product>) throws(NeffosError) -> Product? {
        guard let url = try string(key) else { return nil }
        do {
            return try registry.make(for: url)
        } catch let error as NeffosError {
            throw invalid(key, error.detail ?? error.text)
        } catch {
            throw invalid(key, "\(error)")
        }
    }
}
