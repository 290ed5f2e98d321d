import ArgumentParser
import ChatApp
import Logging
import Neffos
import NeffosNATS
import Prometheus
import ServiceLifecycle
#if OTel
import Foundation
import OTel
#endif

/// `neffos serve`: the chat example server, on any exchange.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the chat example server (page at /, WebSocket at /echo) on a chosen exchange.",
        discussion: """
            Prometheus metrics are served at /metrics. Every setting is read from the flags, then from NEFFOS_* environment \
            variables, then from --config (JSON or YAML), under the keys of Server.Configuration(config:) and the listener \
            (neffos.exchange.url, neffos.listener.port, neffos.listener.tls.certificate, neffos.limits.rooms, …); the \
            environment variable of a key is its name in capitals with _ (NEFFOS_LIMITS_ROOMS). A wrong value stops \
            start-up with a line naming its key. With a certificate, the page and the endpoint are served over TLS \
            (https://, wss://), and SIGHUP reads the certificate files again. Exchanges: \
            \(Serve.registry.schemes.map { "\($0)://" }.joined(separator: ", ")); none: this process only. Rooms keep \
            their last lines in this node's memory, or in JetStream for the whole cluster with \
            neffos.history.store.url=nats://HOST:PORT (nats-server -js).
            """)

    /// The exchanges the tool links.
    static let registry = ExchangeRegistry([.memory, .nats, .natsTLS])
    /// The history stores the tool links: this node's memory, or JetStream for the cluster.
    static let histories = HistoryStoreRegistry([.memory, .jetStream, .jetStreamTLS])

    @Option(help: "The address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "The port, 0 picks a free one (default 8080).") var port: Int?
    @Option(help: "The exchange URL, e.g. nats://127.0.0.1:4222.") var exchange: String?
    @Option(help: "A configuration file, JSON or YAML.") var config: String?
    @Option(help: "This node's name in a cluster (default: a random one).") var node: String?
    @Option(name: .customLong("tls-cert"), help: "A PEM certificate chain: serve https:// and wss://.") var tlsCertificate: String?
    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.") var tlsKey: String?

    func validate() throws {
        if let port, !(0...65_535).contains(port) { throw ValidationError("--port must be 0…65535") }
    }

    /// The flags given, by the configuration key each sets.
    var overrides: [String: String] {
        let flags: [(Chat.Flag, String?)] = [
            (.host, host), (.port, port.map(String.init)), (.exchange, exchange), (.node, node),
            (.tlsCertificate, tlsCertificate), (.tlsKey, tlsKey),
        ]
        return Dictionary(uniqueKeysWithValues: flags.compactMap { flag, value in value.map { (flag.key, $0) } })
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = .info
            return handler
        }
        let metrics = Chat.bootstrapMetrics()
        let logger = Logger(label: "neffos-serve")
        do {
            let reader = try await Server.Configuration.reader(overrides: overrides, file: config)
            try await Chat.serve(config: reader, exchanges: Self.registry, histories: Self.histories, logger: logger, metrics: metrics, services: try Self.tracingServices(logger))
        } catch let error as NeffosError where error == .invalidConfiguration {
            // One line naming the key, and a status for scripts.
            logger.error("cannot start: \(error)")
            throw ExitCode(2)
        }
    }

    /// With the OTel trait and OTEL_EXPORTER_OTLP_ENDPOINT set: swift-otel as the tracer,
    /// exporting spans over OTLP/HTTP (metrics stay with Prometheus, logs on standard output).
    static func tracingServices(_ logger: Logger) throws -> [any Service] {
        #if OTel
        guard ProcessInfo.processInfo.environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != nil else { return [] }
        var otel = OTel.Configuration.default
        otel.serviceName = "neffos"
        otel.metrics.enabled = false
        otel.logs.enabled = false
        logger.info("exporting spans to \(ProcessInfo.processInfo.environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "?") (OTLP/HTTP)")
        return [try OTel.bootstrap(configuration: otel)]
        #else
        return []
        #endif
    }
}
