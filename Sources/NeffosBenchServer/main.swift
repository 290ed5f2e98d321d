import Foundation
import InMemoryTracing
import Logging
import Neffos
import NeffosNIO
import ServiceLifecycle
import Tracing

#if Mounts
import Hummingbird
import NeffosHummingbird
import NeffosVapor
import Vapor
#endif

#if NATS
import NeffosNATS
#endif

// The server `neffos bench` drives: namespace `bench` with an `echo` ask, an `askback` ask
// (the server asks the sender `askback` with the same body and answers with the reply's
// body) and a `broadcast` event that re-broadcasts its body as `tick` to the namespace, or to
// the message's room. With --presence on (or events), namespace `bench` keeps cluster
// presence: a `members` ask lists the message's room across the cluster and answers with the
// ask's body (an error when a node did not answer), and `stats` answers
// `<presence events> <bus published> <bus delivered> <nodes known>` (this node's counters); with events,
// members also get the `presence` client event.
//
//   neffos-bench-server [--port 0] [--exchange URL] [--mount listener|hummingbird|vapor]
//                       [--tls-cert FILE --tls-key FILE] [--tracer none|noop|memory]
//                       [--presence off|on|events] [--history off|on|jetstream] [--max-connections N]
//                       [--log-level L]
//
// --history jetstream keeps the history in JetStream on the --exchange nats:// server (which
// must run with -js).
//
// --mount picks the transport, all serving the same events at `/`: the standalone
// `WebSocketListener` (the default), a Hummingbird application (`NeffosHummingbird`), or a
// Vapor application (`NeffosVapor`), so that `neffos bench` compares them.
//
// It prints `listening on <port> pid <pid>` once ready, and stops gracefully on SIGTERM or SIGINT.

var port = 0
var logLevel = Logger.Level.warning
var tracerFlag = "none"
var tlsCertificate: String?
var tlsKey: String?
var exchangeFlag: String?
var mount = "listener"
var presenceFlag = "off"
var historyFlag = "off"
var maxConnections: Int?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--port": port = arguments.next().flatMap(Int.init) ?? port
    case "--exchange": exchangeFlag = arguments.next()
    case "--mount": mount = arguments.next() ?? mount
    case "--tracer": tracerFlag = arguments.next() ?? tracerFlag
    case "--tls-cert": tlsCertificate = arguments.next()
    case "--tls-key": tlsKey = arguments.next()
    case "--presence": presenceFlag = arguments.next() ?? presenceFlag
    case "--history": historyFlag = arguments.next() ?? historyFlag
    case "--log-level": logLevel = arguments.next().flatMap(Logger.Level.init(rawValue:)) ?? logLevel
    case "--max-connections": maxConnections = arguments.next().flatMap(Int.init)
    default:
        FileHandle.standardError.write(Data("usage: neffos-bench-server [--port N] [--exchange URL] [--mount listener|hummingbird|vapor] [--tls-cert FILE --tls-key FILE] [--tracer none|noop|memory] [--presence off|on|events] [--history off|on|jetstream] [--max-connections N] [--log-level trace|debug|info|warning]\n".utf8))
        exit(2)
    }
}
let chosenLevel = logLevel
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = chosenLevel
    return handler
}

var events = Events()
events.answer("echo") { _, message in Reply(message.body, isBinary: message.isBinary) }
// Asks the sender back (a server-initiated ask to that connection, same body) and answers
// the client's ask with the body of the reply: server asks, probed from outside.
events.answer("askback") { ns, message in
    let reply = try await ns.ask("askback", message.body)
    return Reply(reply.body, isBinary: reply.isBinary)
}
events.on("broadcast") { ns, message in
    ns.server?.broadcast(Message(namespace: ns.namespace, room: message.room, event: "tick", body: message.body))
}

// For `neffos bench recovery`: `burst` broadcasts N `tick`s (timestamps) to the message's room
// and then answers; `count` broadcasts the room's next number as a `tick`; `drop` closes the
// sender's connection (its client reconnects and recovers).
events.answer("burst") { ns, message in
    guard let count = Int(message.bodyString), (1...100_000).contains(count) else { throw NeffosError.invalidPayload }
    for _ in 0..<count {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let stamp = UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
        ns.server?.broadcast(Message(namespace: ns.namespace, room: message.room, event: "tick", body: "\(stamp)"))
    }
    return Reply("\(count)")
}
let roomCounters = Locked<[String: Int]>([:])
events.on("count") { ns, message in
    let next = roomCounters.withLock { counters -> Int in
        counters[message.room, default: 0] += 1
        return counters[message.room]!
    }
    ns.server?.broadcast(Message(namespace: ns.namespace, room: message.room, event: "tick", body: "\(next)"))
}
events.on("drop") { ns, _ in ns.conn.close(code: .goingAway, reason: "asked to drop") }

/// What the `stats` ask reports, counted from the presence hook.
let presenceEvents = Locked(0)
events.answer("members") { ns, message in
    guard let server = ns.server else { throw NeffosError.writeClosed }
    let answer = try await server.clusterMembers(ofRoom: message.room, in: ns.namespace)
    guard answer.isComplete else {
        throw NeffosError.timeout.with(detail: "no answer from \(answer.missing.joined(separator: ", "))")
    }
    return Reply(message.body, isBinary: message.isBinary)
}
events.answer("stats") { ns, _ in
    let bus = ns.server?.exchangeStatistics ?? ExchangeStatistics()
    return Reply("\(presenceEvents.withLock { $0 }) \(bus.published) \(bus.delivered) \(ns.server?.clusterNodes.count ?? 0)")
}

var configuration = Neffos.Server.Configuration()
configuration.logger = Logger(label: "bench-server")
configuration.handshakeTimeout = .seconds(30)
configuration.transport.pingInterval = nil
// --max-connections: past the default 10,000, for `neffos bench scale` (the open-file limit
// still bounds it, and the listener says so).
if let maxConnections { configuration.transport.maxConnections = maxConnections }
// --tracer: what tracing costs. none: no tracer; noop: the no-op tracer (the server makes no
// span either); memory: every span recorded in memory (the cost of making them).
switch tracerFlag {
case "none": break
case "noop": configuration.tracer = NoOpTracer()
case "memory": configuration.tracer = InMemoryTracer()
default:
    FileHandle.standardError.write(Data("neffos-bench-server: --tracer is none, noop or memory\n".utf8))
    exit(2)
}
switch presenceFlag {
case "off": break
case "on", "events":
    configuration.presence.namespaces = ["bench"]
    if presenceFlag == "events" { configuration.presence.clientEvent = "presence" }
    configuration.onPresence = { _ in presenceEvents.withLock { $0 += 1 } }
default:
    FileHandle.standardError.write(Data("neffos-bench-server: --presence is off, on or events\n".utf8))
    exit(2)
}
// --history on: every room of `bench` keeps its last 20,000 broadcasts for 10 minutes, and a
// recovery sends back up to 20,000 (what `neffos bench recovery` and fan-out to a room with
// history measure).
switch historyFlag {
case "off": break
case "on", "jetstream":
    configuration.history.rules = [HistoryRule(namespace: "bench", limits: HistoryLimits(maxCount: 20_000, maxAge: .seconds(600)))]
    configuration.history.maxRecoveryMessages = 20_000
    #if NATS
    if historyFlag == "jetstream" {
        guard let url = exchangeFlag, url.hasPrefix("nats://") else {
            FileHandle.standardError.write(Data("neffos-bench-server: --history jetstream needs --exchange nats://…\n".utf8))
            exit(2)
        }
        do {
            // Opened when the server starts, with the rule's bounds as the stream's limits.
            configuration.history.use(try HistoryStoreRegistry([.jetStream]).backend(for: url))
        } catch {
            FileHandle.standardError.write(Data("neffos-bench-server: \(error)\n".utf8))
            exit(2)
        }
    }
    #endif
default:
    FileHandle.standardError.write(Data("neffos-bench-server: --history is off, on or jetstream\n".utf8))
    exit(2)
}
// Every bound at its default: the server `neffos bench abuse` attacks is the one users get.
do {
    #if NATS
    let registry = ExchangeRegistry([.memory, .nats])
    #else
    let registry = ExchangeRegistry.standard
    #endif
    if let url = exchangeFlag, !url.isEmpty { configuration.exchange = try registry.exchange(for: url) }
} catch {
    FileHandle.standardError.write(Data("neffos-bench-server: \(error)\n".utf8))
    exit(2)
}

let server = try Neffos.Server(namespaces: ["bench": events], configuration: configuration)
let announce: @Sendable (Int?) -> Void = { bound in
    if let bound {
        FileHandle.standardOutput.write(Data("listening on \(bound) pid \(ProcessInfo.processInfo.processIdentifier)\n".utf8))
    }
}
let transport: any Service
switch mount {
case "listener":
    // --tls-cert and --tls-key: wss:// (the cost of TLS, measured in BENCHMARKS.md).
    var tls: ServerTLS?
    if let tlsCertificate, let tlsKey {
        do {
            tls = try ServerTLS(certificateChain: tlsCertificate, privateKey: tlsKey)
        } catch {
            FileHandle.standardError.write(Data("neffos-bench-server: \(error)\n".utf8))
            exit(2)
        }
    }
    let listener = WebSocketListener(server: server, host: "127.0.0.1", port: port, tls: tls)
    transport = listener
    Task { announce(await listener.boundPort()) }
#if Mounts
case "hummingbird":
    let router = Router()
    router.neffos("/")
    transport = Application(
        router: router, server: .neffos(server, router: router),
        configuration: .init(address: .hostname("127.0.0.1", port: port)),
        onServerRunning: { channel in announce(channel.localAddress?.port) },
        logger: configuration.logger)
case "vapor":
    let app = try await Application.make(Environment(name: "production", arguments: ["neffos-bench-server"]))
    app.logger = configuration.logger
    app.neffos(server: server)
    let service = VaporApplicationService(app, address: .hostname("127.0.0.1", port: port))
    transport = service
    Task { announce(await service.boundPort()) }
#endif
default:
    FileHandle.standardError.write(Data("neffos-bench-server: unknown mount \(mount) (listener, or hummingbird and vapor with the Mounts trait)\n".utf8))
    exit(2)
}
let group = ServiceGroup(configuration: .init(services: [server, transport], gracefulShutdownSignals: [.sigterm, .sigint], logger: configuration.logger))
try await group.run()
