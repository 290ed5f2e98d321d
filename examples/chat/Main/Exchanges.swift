import Configuration
import Neffos

#if NATS
import NeffosNATS
#endif

/// The exchanges this example can run on, by URL scheme. Build with `--traits NATS` to add
/// `nats://` (it links nats.c, Debian's libnats-dev).
enum ChatExchanges {
    static let registry: ExchangeRegistry = {
        #if NATS
        ExchangeRegistry([.memory, .nats, .natsTLS])
        #else
        ExchangeRegistry([.memory])
        #endif
    }()

    /// The history stores, by URL scheme (`neffos.history.store.url`): with NATS, `nats://`
    /// keeps the rooms' lines in JetStream for the whole cluster (`nats-server -js`).
    static let histories: HistoryStoreRegistry = {
        #if NATS
        HistoryStoreRegistry([.memory, .jetStream, .jetStreamTLS])
        #else
        HistoryStoreRegistry([.memory])
        #endif
    }()

    /// What to do when a scheme this build lacks is asked for.
    static func hint(for config: ConfigReader) -> String? {
        #if NATS
        nil
        #else
        let urls = ["neffos.exchange.url", "neffos.history.store.url"].map { (config.string(forKey: $0) ?? "").lowercased() }
        return urls.contains { $0.hasPrefix("nats://") || $0.hasPrefix("tls://") }
            ? "this build has no NATS exchange or JetStream history: run it with `swift run --traits NATS neffos-chat` (needs libnats-dev)"
            : nil
        #endif
    }
}
