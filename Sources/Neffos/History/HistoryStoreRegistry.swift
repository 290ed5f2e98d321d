/// What a history store URL names: a store of this node (``MemoryHistoryStore``), or a
/// history shared by the cluster (JetStream, in NeffosNATS) that the server opens when it
/// starts.
public enum HistoryBackend: Sendable {
    /// A store of this node: ``Server/HistoryConfiguration/store``.
    case node(any HistoryStore)
    /// A history shared by the cluster: ``Server/HistoryConfiguration/shared``.
    case shared(any SharedHistoryConnector)
}

/// One kind of history store an application can pick by URL scheme.
public typealias HistoryStorePlugin = URLPlugin<HistoryBackend>

extension URLPlugin where Product == HistoryBackend {
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
            return .node(MemoryHistoryStore(maxStreams: maxStreams, maxBytes: maxBytes))
        }
    }
}

/// The history stores an application can choose from, by URL scheme (as ``ExchangeRegistry``
/// does for exchanges): the core's `memory://`, and what the application links (NeffosNATS's
/// `nats://`, JetStream shared by the cluster).
///
/// ```swift
/// let histories = HistoryStoreRegistry.standard.adding(.jetStream)  // NeffosNATS
/// try configuration.history.use(histories.backend(for: "nats://10.0.0.1:4222"))
/// // or, from configuration (neffos.history.store.url):
/// let configured = try Server.Configuration(config: reader, histories: histories)
/// ```
public typealias HistoryStoreRegistry = URLRegistry<HistoryBackend>

extension URLRegistry where Product == HistoryBackend {
    /// The registry with the core's plugin: `memory://`.
    public static var standard: HistoryStoreRegistry { HistoryStoreRegistry([.memory]) }

    /// What `url` names.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func backend(for url: String) throws -> HistoryBackend {
        try make(for: url)
    }
}

extension Server.HistoryConfiguration {
    /// Keeps the rules' rooms where `backend` says: a store of this node (replacing
    /// ``store``, no shared history), or a history shared by the cluster (``shared``).
    public mutating func use(_ backend: HistoryBackend) {
        switch backend {
        case .node(let node):
            store = node
            shared = nil
        case .shared(let connector):
            shared = connector
        }
    }
}
