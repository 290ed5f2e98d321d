import Neffos

/// The exchanges this example can run on, by URL scheme.
enum ChatExchanges {
    static let registry = ExchangeRegistry.standard
}
