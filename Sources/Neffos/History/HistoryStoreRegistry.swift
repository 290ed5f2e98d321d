/// One kind of history store an application can pick by URL scheme.
public struct HistoryStorePlugin: Sendable {
    /// The URL scheme it answers (`memory`).
    public let scheme: String
    /// One line for error messages and help.
    public let summary: String
    /// Makes the store for a URL of this scheme.
    public let make: @Sendable (ExchangeURL) throws -> any HistoryStore

    /// A plugin.
    public init(scheme: String, summary: String, make: @escaping @Sendable (ExchangeURL) throws -> any HistoryStore) {
        self.scheme = scheme.lowercased()
        self.summary = summary
        self.make = make
    }

    /// `memory://[?maxStreams=N&maxBytes=SIZE]`: a ``MemoryHistoryStore`` (per node).
    public static let memory = HistoryStorePlugin(
        scheme: "memory", summary: "memory://[?maxStreams=N&maxBytes=SIZE] — this node's memory (the default)"
    ) { url in
        var maxStreams = 10_000
        var maxBytes = 64 << 20
        if let text = url.options["maxStreams"] {
            guard let value = Int(text), value >= 1 else {
                throw NeffosError.invalidConfiguration.with(detail: "maxStreams must be a whole number of at least 1, got \(text) (in \(url))")
            }
            maxStreams = value
        }
        if let text = url.options["maxBytes"] {
            guard let value = ConfigParsing.byteCount(text), value >= 1 else {
                throw NeffosError.invalidConfiguration.with(detail: "maxBytes must be a byte count such as 64MiB, got \(text) (in \(url))")
            }
            maxBytes = value
        }
        return MemoryHistoryStore(maxStreams: maxStreams, maxBytes: maxBytes)
    }
}

/// The history stores an application can choose from, by URL scheme (as ``ExchangeRegistry``
/// does for exchanges).
///
/// ```swift
/// configuration.history.store = try HistoryStoreRegistry.standard.store(for: "memory://?maxStreams=1000")
/// ```
public struct HistoryStoreRegistry: Sendable {
    private let plugins: [String: HistoryStorePlugin]

    /// A registry of `plugins`; a later plugin for the same scheme replaces an earlier one.
    public init(_ plugins: [HistoryStorePlugin]) {
        var table: [String: HistoryStorePlugin] = [:]
        for plugin in plugins { table[plugin.scheme] = plugin }
        self.plugins = table
    }

    /// The registry with the core's plugin: `memory://`.
    public static let standard = HistoryStoreRegistry([.memory])

    /// The registered schemes, sorted.
    public var schemes: [String] { plugins.keys.sorted() }

    /// The store for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func store(for url: String) throws -> any HistoryStore {
        let parsed = try ExchangeURL(url)
        guard let plugin = plugins[parsed.scheme] else {
            let known = plugins.values.sorted { $0.scheme < $1.scheme }.map { "  \($0.summary)" }.joined(separator: "\n")
            throw NeffosError.invalidConfiguration.with(
                detail: "no history store is registered for \"\(parsed.scheme)://\" (in \(parsed)); registered:\n\(known)")
        }
        return try plugin.make(parsed)
    }
}
