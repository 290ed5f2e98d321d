import ChatApp
import Foundation
import Logging
import Metrics
import Neffos
import Prometheus

// The chat example: a neffos server with a browser page at `/` and its WebSocket endpoint at
// `/echo`, and its Prometheus metrics at `/metrics`.
//
//   swift run neffos-chat [--host 127.0.0.1] [--port 8080] [--exchange URL] [--config FILE]
//
// The exchange comes from --exchange, else NEFFOS_EXCHANGE, else the `exchange = …` line of
// --config, else memory:// (this process only). Open http://127.0.0.1:8080/ in two tabs.

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = .info
    return handler
}
let logger = Logger(label: "neffos-chat")
// The program, not the library, picks the metrics backend: Prometheus, served at /metrics.
let metrics = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))

var host = "127.0.0.1"
var port = 8080
var exchangeFlag: String?
var configFile: String?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--host": host = arguments.next() ?? host
    case "--port": port = arguments.next().flatMap(Int.init) ?? port
    case "--exchange": exchangeFlag = arguments.next()
    case "--config": configFile = arguments.next()
    case "--help", "-h":
        print("usage: neffos-chat [--host 127.0.0.1] [--port 8080] [--exchange URL] [--config FILE]")
        print("exchanges: " + ChatExchanges.registry.schemes.map { "\($0)://" }.joined(separator: ", "))
        exit(0)
    default:
        logger.error("unknown argument \(argument); try --help")
        exit(2)
    }
}

var configuration = Server.Configuration()
configuration.logger = logger
var exchangeURL = "memory://"
do {
    exchangeURL = try ExchangeRegistry.configuredURL(flag: exchangeFlag, file: configFile)
    configuration.exchange = try ChatExchanges.registry.exchange(for: exchangeURL)
    let parsed = try ExchangeURL(exchangeURL)
    logger.info("exchange \(parsed)")
} catch {
    logger.error("cannot start: \(error)")
    if let hint = ChatExchanges.hint(for: exchangeURL) { logger.error("\(hint)") }
    exit(2)
}

do {
    try await Chat.serve(host: host, port: port, configuration: configuration, metrics: metrics)
} catch {
    logger.error("stopped: \(error)")
    exit(1)
}
