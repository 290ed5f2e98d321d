import Foundation
import Logging
import Neffos
import NeffosNIO
import ServiceLifecycle

// The chat example: a neffos server with a browser page at `/` and its WebSocket endpoint at
// `/echo`, on the in-process exchange.
//
//   swift run neffos-chat [--host 127.0.0.1] [--port 8080]
//
// Open http://127.0.0.1:8080/ in two browser tabs, join the same room, and chat.

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = .info
    return handler
}
let logger = Logger(label: "neffos-chat")

var host = "127.0.0.1"
var port = 8080
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--host": host = arguments.next() ?? host
    case "--port": port = arguments.next().flatMap(Int.init) ?? port
    case "--help", "-h":
        print("usage: neffos-chat [--host 127.0.0.1] [--port 8080]")
        exit(0)
    default:
        logger.error("unknown argument \(argument); try --help")
        exit(2)
    }
}

var configuration = Server.Configuration()
configuration.logger = logger
let server = try Server(namespaces: Chat.namespaces, configuration: configuration)
let listener = WebSocketListener(server: server, host: host, port: port, path: "/echo", responder: Chat.responder)
let services = ServiceGroup(
    configuration: .init(services: [listener], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
logger.info("chat page on http://\(host):\(port)/ (WebSocket endpoint /echo)")
try await services.run()
