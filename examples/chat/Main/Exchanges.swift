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

    /// What to do when a scheme this build lacks is asked for.
    static func hint(for config: ConfigReader) -> String? {
        #if NATS
        nil
        #else
        let url = config.string(forKey: "neffos.exchange.url") ?? ""
        return url.lowercased().hasPrefix("nats://") || url.lowercased().hasPrefix("tls://")
            ? "this build has no NATS exchange: run it with `swift run --traits NATS neffos-chat` (needs libnats-dev)"
            : nil
        #endif
    }
}
