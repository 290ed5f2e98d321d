import ChatApp
import Foundation
import Logging
import Neffos
import Prometheus

// The chat example: a neffos server with a browser page at `/` and its WebSocket endpoint at
// `/echo`, and its Prometheus metrics at `/metrics`.
//
//   swift run neffos-chat [--host 127.0.0.1] [--port 8080] [--exchange URL] [--node NAME]
//                         [--tls-cert FILE --tls-key FILE] [--config FILE.yaml]
//
// Settings come from the flags, then NEFFOS_* environment variables (NEFFOS_EXCHANGE_URL,
// NEFFOS_LIMITS_ROOMS…), then --config; the exchange defaults to none (this process only).
// Open http://127.0.0.1:8080/ in two tabs.

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = .info
    return handler
}
let logger = Logger(label: "neffos-chat")
// The program, not the library, picks the metrics backend: Prometheus, served at /metrics.
let metrics = Chat.bootstrapMetrics()

let config = await Chat.configuration(
    program: "neffos-chat", flags: [.host, .port, .exchange, .node, .tlsCertificate, .tlsKey])
do {
    try await Chat.serve(config: config, exchanges: ChatExchanges.registry, histories: ChatExchanges.histories, logger: logger, metrics: metrics)
} catch let error as NeffosError where error == .invalidConfiguration {
    logger.error("cannot start: \(error)")
    if let hint = ChatExchanges.hint(for: config) { logger.error("\(hint)") }
    exit(2)
} catch {
    logger.error("stopped: \(error)")
    exit(1)
}
