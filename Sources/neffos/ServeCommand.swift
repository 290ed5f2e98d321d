import ArgumentParser
import ChatApp
import Logging
import Metrics
import Neffos
import NeffosNATS
import Prometheus

/// `neffos serve`: the chat example server, on any exchange.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the chat example server (page at /, WebSocket at /echo) on a chosen exchange.",
        discussion: """
            Prometheus metrics are served at /metrics. The exchange comes from --exchange, else the NEFFOS_EXCHANGE environment variable, else \
            the `exchange = …` line of --config, else memory:// (this process only). Registered: \
            \(Serve.registry.schemes.map { "\($0)://" }.joined(separator: ", ")).
            """)

    /// The exchanges the tool links.
    static let registry = ExchangeRegistry([.memory, .nats, .natsTLS])

    @Option(help: "The address to listen on.") var host = "127.0.0.1"
    @Option(help: "The port (0 picks a free one).") var port = 8080
    @Option(help: "The exchange URL, e.g. nats://127.0.0.1:4222.") var exchange: String?
    @Option(help: "A configuration file with an `exchange = URL` line.") var config: String?
    @Option(help: "This node's name in a cluster (default: a random one).") var node: String?

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0…65535") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = .info
            return handler
        }
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "neffos-serve")
        configuration.nodeName = node
        let url = try ExchangeRegistry.configuredURL(flag: exchange, file: config)
        configuration.exchange = try Self.registry.exchange(for: url)
        let parsed = try ExchangeURL(url)
        configuration.logger.info("exchange \(parsed)")
        try await Chat.serve(host: host, port: port, configuration: configuration, metrics: metrics)
    }
}
