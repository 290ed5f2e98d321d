/// One kind of history store an application can pick by URL scheme.
public typealias HistoryStorePlugin = URLPlugin<any HistoryStore>

extension URLPlugin where Product == any HistoryStore {
    /// `memory://[?maxStreams=N&maxBytes=SIZE]`: a ``MemoryHistoryStore`` (per node).
    public static var memory: HistoryStorePlugin {
        HistoryStorePlugin(scheme: "memory", summary: "memory://[?maxStreams=N&maxBytes=SIZE] — this node's memory (the default)") { url in
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
}

/// The history stores an application can choose from, by URL scheme (as ``ExchangeRegistry``
/// does for exchanges).
///
/// ```swift
/// configuration.history.store = try HistoryStoreRegistry.standard.store(for: "memory://?maxStreams=1000")
/// ```
public typealias HistoryStoreRegistry = URLRegistry<any HistoryStore>

extension URLRegistry where Product == any HistoryStore {
    /// The registry with the core's plugin: `memory://`.
    public static var standard: HistoryStoreRegistry { HistoryStoreRegistry([.memory]) }

    /// The store for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func store(for url: String) throws -> any HistoryStore {
        try make(for: url)
    }
}
