import ArgumentParser
import Dispatch
import Foundation
import NIOCore
import Neffos
import NeffosNIO

/// `neffos bench …`: the load generator.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a neffos server (ours, the raw NIO ceiling, or any neffos-compatible one on loopback).",
        discussion: """
            Each scenario starts the server it drives (neffos-bench-server, or neffos-raw-server with \
            --server raw), opens the clients, runs for --duration seconds printing a progress line \
            every second, then prints a summary (--json for JSON) and stops everything. --compare \
            runs the same scenario against both servers and prints the ratio. --url drives a server \
            you started (loopback only).
            """,
        subcommands: [Fanout.self, Rooms.self, Ask.self, Connect.self, Memory.self, Sweep.self, Scale.self, Hold.self, Cluster.self, Presence.self, Recovery.self, Abuse.self])
}

/// Options every scenario takes.
struct BenchOptions: ParsableArguments {
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case neffos, raw
    }

    @Option(help: "The server to start: neffos (this framework) or raw (bare SwiftNIO, the ceiling).")
    var server: Kind = .neffos

    @Flag(help: "Run against both servers and print our figure as a ratio of the raw one.")
    var compare = false

    @Option(help: "Drive a server already running at this ws:// or wss:// URL (loopback only) instead of starting one.")
    var url: String?

    @Option(help: "With --url: the server's process ID, so that its CPU (and, for memory, its resident memory) is measured.")
    var pid: Int32?

    @Option(name: .customLong("tls-ca"), help: "For a wss:// --url: the CA certificate (PEM) its chain ends at (default: the system's roots).")
    var tlsCA: String?

    @Option(help: "The exchange URL for the started neffos server (for example nats://127.0.0.1:4222).")
    var exchange: String?

    @Option(help: "History on the started neffos server: off, on (every room of `bench` keeps its broadcasts, in memory), or jetstream (in JetStream: a nats-server -js is started as its exchange).")
    var history: String = "off"

    @Flag(help: "The clients ask for the history extension (X-Neffos-Recovery: positioned broadcasts).")
    var positions = false

    @Option(help: "Seconds to measure.")
    var duration: Int = 10

    @Option(help: "Runs per server (interleaved); the median run is reported.")
    var `repeat`: Int = 1

    @Option(help: "Event loops of the generator (default: the cores).")
    var threads: Int = System.coreCount

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Flag(inversion: .prefixedNo, help: "Print a progress line every second (to standard error).")
    var progress = true

    func validate() throws {
        guard duration > 0, duration <= 3600 else { throw ValidationError("--duration must be 1…3600 seconds") }
        guard (1...20).contains(`repeat`) else { throw ValidationError("--repeat must be 1…20") }
        guard ["off", "on", "jetstream"].contains(history) else { throw ValidationError("--history is off, on or jetstream") }
        if let url {
            let parsed = try WebSocketURL(url)
            guard parsed.host == "localhost" || parsed.host.hasPrefix("127.") || parsed.host == "::1" else {
                throw ValidationError("--url must be on loopback (127.x.x.x or localhost): this generator only drives local servers")
            }
        }
    }
}

extension BenchOptions {
    /// The TLS of a `wss://` `--url`, shared by every load connection; `nil` for `ws://`.
    func tlsSession() throws -> ClientTLSSession? {
        guard let url, let parsed = try? WebSocketURL(url), parsed.isSecure else { return nil }
        return try ClientTLSSession(try tlsCA.map { try ClientTLS.trusting(certificateAuthorities: $0) } ?? .systemTrust, host: parsed.host)
    }
}

/// The generator's options of the scenarios that start their own servers (cluster, presence,
/// recovery).
struct GeneratorOptions: ParsableArguments {
    @Option(help: "Event loops of the generator.") var threads = System.coreCount
    @Flag(help: "Print the results as JSON.") var json = false
    @Flag(inversion: .prefixedNo, help: "Print a progress line every second.") var progress = true
}

/// Runs a scenario against the server(s) the options choose, with a watchdog and signal
/// handling so that nothing outlives the run.
func runScenario(
    _ options: BenchOptions, clients: Int, limit extra: Int = 0,
    _ body: @escaping @Sendable (BenchRunner, WebSocketURL, String, Int32?) async throws -> BenchResult
) async throws {
    _ = BenchProcesses.raiseFileLimit()
    installSignalHandlers()
    let kinds: [BenchOptions.Kind] = options.url != nil ? [options.server] : (options.compare ? [.neffos, .raw] : [options.server])
    startWatchdog(seconds: (options.duration + 60 + clients / 250 + extra) * kinds.count * options.repeat + 30)
    var runs: [[BenchResult]] = Array(repeating: [], count: kinds.count)
    do {
        for round in 0..<options.repeat {
        for (position, kind) in kinds.enumerated() {
            if options.progress && options.repeat > 1 {
                FileHandle.standardError.write(Data("run \(round + 1)/\(options.repeat)\n".utf8))
            }
            let target: BenchProcesses.Server?
            let url: String
            if let given = options.url {
                target = options.pid.map { BenchProcesses.Server(url: given, pid: $0) }
                url = given
            } else {
                var exchange = kind == .raw ? nil : options.exchange
                if kind != .raw, options.history == "jetstream" { exchange = try await BenchProcesses.startNATS(jetStream: true).url }
                target = try await BenchProcesses.startServer(
                    raw: kind == .raw, exchange: exchange,
                    arguments: kind == .raw || options.history == "off" ? [] : ["--history", options.history])
                url = target!.url
            }
            if options.progress { FileHandle.standardError.write(Data("\(kind.rawValue): \(url)\n".utf8)) }
            let runner = BenchRunner(
                threads: options.threads, progress: options.progress, tls: try options.tlsSession(), positions: options.positions,
                pids: target.map { [$0.pid] } ?? [])
            let result = try await body(runner, try WebSocketURL(url), options.url == nil ? kind.rawValue : url, target?.pid)
            runs[position].append(result)
            await runner.shutdown()
            await BenchProcesses.stopAll()
        }
        }
    } catch {
        await BenchProcesses.stopAll()
        throw error
    }
    // The median run of each server (by rate).
    let results = runs.map { results -> BenchResult in
        var median = results.sorted { $0.perSecond < $1.perSecond }[results.count / 2]
        if results.count > 1 {
            median.notes["runs"] = results.map { Int($0.perSecond).formatted }.joined(separator: " ")
        }
        return median
    }
    report(results, json: options.json)
}

func report(_ results: [BenchResult], json: Bool) {
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let data = try? encoder.encode(results) { print(String(decoding: data, as: UTF8.self)) }
        return
    }
    for result in results { print(result.line) }
    if results.count == 2, results[1].perSecond > 0 { print(compareLine(results[0], results[1])) }
}

/// Ours against the raw server: the throughput ratio, the server-CPU-per-operation ratio, and
/// which one to trust (the generator shares the machine: when it is busy, it bounds the
/// throughput of both servers, and only the CPU each server spent per operation compares them).
func compareLine(_ ours: BenchResult, _ raw: BenchResult) -> String {
    var text = String(format: "ratio %@/%@: throughput %.2f", ours.server, raw.server, ours.perSecond / raw.perSecond)
    if let mine = ours.serverCPUMicrosPerOperation, let theirs = raw.serverCPUMicrosPerOperation, theirs > 0 {
        text += String(format: ", server CPU per op %.2f", mine / theirs)
    }
    // The cores the machine spent in each run: the generator's and the server's.
    func used(_ result: BenchResult) -> (generator: Double, total: Double) {
        let generator = result.generatorCores ?? 0
        let server = result.seconds > 0 ? (result.serverCPUSeconds ?? 0) / result.seconds : 0
        return (generator, generator + server)
    }
    let cores = Double(System.coreCount)
    let (mine, theirs) = (used(ours), used(raw))
    if max(mine.total, theirs.total) >= 0.85 * cores {
        text += String(
            format: " (the machine was busy: %.2f and %.2f of its %.0f cores, the generator %.2f and %.2f of them; the throughput measures the generator as much as the server: trust the CPU per op)",
            mine.total, theirs.total, cores, mine.generator, theirs.generator)
    } else if ours.generatorCores != nil {
        text += String(format: " (the machine had cores to spare: %.2f and %.2f of %.0f used; both ratios hold)", mine.total, theirs.total, cores)
    }
    return text
}

let signalSources = Locked<[any DispatchSourceSignal]>([])

/// Ctrl-C or SIGTERM: kill what was started, then exit.
func installSignalHandlers() {
    for signalNumber in [SIGINT, SIGTERM] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler {
            BenchProcesses.killAllNow()
            exit(130)
        }
        source.resume()
        signalSources.withLock { $0.append(source) }
    }
}

/// The run must end within `seconds`; past that, everything is killed and the tool exits 3.
func startWatchdog(seconds: Int) {
    Task.detached {
        try? await Task.sleep(for: .seconds(seconds))
        FileHandle.standardError.write(Data("neffos bench: still running after \(seconds) s; stopping everything\n".utf8))
        BenchProcesses.killAllNow()
        exit(3)
    }
}

extension Bench {
    struct Fanout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One broadcast to every client: deliveries per second and delivery latency.")
        @OptionGroup var options: BenchOptions
        @Option(help: "Clients (the first one publishes).") var clients = 1000
        @Option(help: "Broadcasts the publisher keeps in flight.") var window = 4
        @Option(help: "A room every client joins, the broadcasts going to it (default: the namespace).") var room = ""

        func run() async throws {
            let (clients, window, duration, room) = (clients, window, Duration.seconds(options.duration), room)
            try await runScenario(options, clients: clients) { runner, url, server, pid in
                try await runner.fanout([url], server: server, clients: clients, window: window, duration: duration, room: room)
            }
        }
    }

    struct Rooms: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Room broadcasts: M rooms of K members, one publisher per room.")
        @OptionGroup var options: BenchOptions
        @Option(help: "Rooms.") var rooms = 100
        @Option(help: "Members per room (the first publishes).") var members = 10
        @Option(help: "Broadcasts each publisher keeps in flight.") var window = 1

        func run() async throws {
            let (rooms, members, window, duration) = (rooms, members, window, Duration.seconds(options.duration))
            try await runScenario(options, clients: rooms * members) { runner, url, server, _ in
                try await runner.rooms(url, server: server, rooms: rooms, members: members, window: window, duration: duration)
            }
        }
    }

    struct Ask: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Concurrent clients asking an echo event: asks per second and round-trip latency.")
        @OptionGroup var options: BenchOptions
        @Option(help: "Clients.") var clients = 64
        @Option(help: "Asks each client keeps in flight.") var inflight = 4

        func run() async throws {
            let (clients, inflight, duration) = (clients, inflight, Duration.seconds(options.duration))
            try await runScenario(options, clients: clients) { runner, url, server, _ in
                try await runner.ask(url, server: server, clients: clients, inflight: inflight, duration: duration)
            }
        }
    }

    struct Connect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Connect storm: connections (upgrade, handshake, namespace) per second.")
        @OptionGroup var options: BenchOptions
        @Option(help: "Connections to open.") var clients = 5000
        @Option(help: "Connections opening at once.") var concurrency = 256

        func run() async throws {
            let (clients, concurrency) = (clients, concurrency)
            try await runScenario(options, clients: clients) { runner, url, server, _ in
                try await runner.connectStorm(url, server: server, clients: clients, concurrency: concurrency)
            }
        }
    }

    struct Memory: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Idle memory: the server's resident memory per idle connection.")
        @OptionGroup var options: BenchOptions
        @Option(help: "Idle connections.") var clients = 10_000

        func validate() throws {
            if options.url != nil && options.pid == nil { throw ValidationError("memory reads the server's memory: with --url, give its --pid") }
        }

        func run() async throws {
            let clients = clients
            try await runScenario(options, clients: clients) { runner, url, server, pid in
                guard let pid else { throw ToolError("memory needs the server's process: start it, or give --pid") }
                return try await runner.idleMemory(url, server: server, pid: pid, clients: clients)
            }
        }
    }

    struct Abuse: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hostile clients (issue 14's eight cases) against a server a healthy client keeps asking.",
            discussion: """
                Cases: 1 frames before the handshake, 2 long room names and too many rooms, 3 a ping \
                flood that never reads, 4 slow-loris requests and idle sockets, 5 more sockets than \
                the server holds, 6 invalid UTF-8 broadcast, 7 joins as rooms accumulate, 8 a full \
                outbox then a close frame, never reading. Each prints the server's RSS (start, peak, \
                end) and CPU, the healthy client's asks and failures, and when the server closed the \
                attackers.
                """)
        @OptionGroup var options: BenchOptions
        @Option(help: "The cases to run (1…8, comma-separated); default: all.") var cases = "1,2,3,4,5,6,7,8"
        @Option(help: "Hostile connections per case (default: each case's own).") var attackers: Int?

        func validate() throws {
            if options.url != nil { throw ValidationError("abuse needs to start the server itself (to read its memory and CPU): drop --url") }
            guard !selected.isEmpty, selected.count == cases.split(separator: ",").count else {
                throw ValidationError("--cases takes numbers 1…8, comma-separated")
            }
        }

        private var selected: [AbuseCase] { cases.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)).flatMap(AbuseCase.init(rawValue:)) } }

        func run() async throws {
            let attackers = self.attackers
            var results: [BenchResult] = []
            for abuse in selected {
                let count = attackers ?? abuse.defaultAttackers
                // Slow loris and idle sockets are closed only after the server's request (10 s)
                // and idle (30 s) timeouts: that case runs long enough to see them.
                let seconds = abuse == .slowAndIdle ? max(options.duration, 35) : options.duration
                _ = BenchProcesses.raiseFileLimit()
                let server = try await BenchProcesses.startServer(raw: false, exchange: options.exchange)
                let runner = BenchRunner(threads: options.threads, progress: options.progress, tls: try options.tlsSession())
                do {
                    let result = try await runner.abuse(
                        try WebSocketURL(server.url), server: "neffos", pid: server.pid, case: abuse,
                        attackers: count, duration: .seconds(seconds))
                    if !options.json { print(result.line) }
                    results.append(result)
                } catch {
                    await runner.shutdown()
                    await BenchProcesses.stopAll()
                    throw error
                }
                await runner.shutdown()
                await BenchProcesses.stopAll()
            }
            if options.json { report(results, json: true) }
        }
    }
}
