import ArgumentParser
import Dispatch
import Foundation
import NeffosNIO
import NeffosProcess

extension Bench {
    /// `neffos bench scale`: as many connections as this machine's limits allow, the clients
    /// spread over several generator processes (`neffos bench hold`).
    struct Scale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Large scale on one box: memory per connection, connect rate and the time to broadcast to all, up to the machine's limits.",
            discussion: """
                For each size (a fresh server each), the clients are held by generator processes of at \
                most --per-generator connections each (a process may open only `ulimit -n` files), \
                connecting at once. Reported: the server's resident memory per connection, the \
                kernel's (its slab and TCP buffer memory, both ends of each loopback connection \
                counted, so halved), the connect rate, the server's CPU per connect, and --broadcasts \
                namespace broadcasts to all: the time for one to reach every client (the latest \
                receipt), with the server's CPU per delivery. A size past the server's own open-file \
                limit is not tried: the tool says which limit stops it.
                """)
        @Option(help: "Connection counts, comma-separated.") var sizes = "1000,5000,10000,19000"
        @Option(help: "The server: neffos or raw.") var server: BenchOptions.Kind = .neffos
        @Option(help: "Connections per generator process.") var perGenerator = 10_000
        @Option(help: "Broadcasts to all, one a second.") var broadcasts = 3
        @Flag(help: "Print the results as JSON.") var json = false

        private var counts: [Int] { sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func validate() throws {
            guard !counts.isEmpty, counts.allSatisfy({ $0 >= 1 }) else { throw ValidationError("--sizes takes connection counts, comma-separated") }
            guard (100...19_000).contains(perGenerator) else { throw ValidationError("--per-generator must be 100…19000") }
            guard (1...20).contains(broadcasts) else { throw ValidationError("--broadcasts must be 1…20") }
        }

        func run() async throws {
            _ = BenchProcesses.raiseFileLimit()
            installSignalHandlers()
            startWatchdog(seconds: counts.reduce(0) { $0 + 90 + $1 / 200 } + 60)
            var rows: [ScaleRow] = []
            for size in counts {
                do {
                    let row = try await ScaleRun(size: size, raw: server == .raw, perGenerator: perGenerator, broadcasts: broadcasts).measure()
                    if !json { print(row.line) }
                    rows.append(row)
                    await BenchProcesses.stopAll()
                    if row.stoppedBy != nil { break }
                } catch {
                    await BenchProcesses.stopAll()
                    throw error
                }
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            } else {
                print(ScaleRow.table(rows))
            }
        }
    }

    /// A generator process of `neffos bench scale`: holds `--clients` receivers, prints `ready`
    /// once all are connected, and on SIGUSR1 prints what they received (`done …`) and exits.
    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A generator process of `neffos bench scale` (started by it).", shouldDisplay: false)
        @Option var url: String
        @Option var clients: Int
        @Option var sourceOffset = 0
        @Option var threads = 1

        func run() async throws {
            _ = BenchProcesses.raiseFileLimit()
            let runner = BenchRunner(threads: threads, progress: false)
            let target = try WebSocketURL(url)
            let started = ContinuousClock.now
            let (connections, _) = try await runner.connect(clients, sourceOffset: sourceOffset) { _ in (target, [], .receiver) }
            FileHandle.standardOutput.write(Data("ready \(connections.count) \((ContinuousClock.now - started).seconds)\n".utf8))
            await Self.signalled(SIGUSR1)
            let tally = try await runner.tally()
            let latency = tally.latency
            let percentile = { (p: Double) in latency.totalCount > 0 ? latency.valueAtPercentile(p) : 0 }
            FileHandle.standardOutput.write(Data("done \(tally.received) \(percentile(50)) \(percentile(99)) \(latency.totalCount > 0 ? latency.max : 0)\n".utf8))
            for connection in connections { connection.close() }
            await runner.shutdown()
        }

        /// Returns once the process receives `signalNumber`.
        private static func signalled(_ signalNumber: Int32) async {
            signal(signalNumber, SIG_IGN)
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
                let once = OnceBox()
                source.setEventHandler {
                    if once.take() { continuation.resume() }
                }
                source.resume()
                signalSources.withLock { $0.append(source) }
            }
        }
    }
}

/// True the first time only.
private final class OnceBox: @unchecked Sendable {
    // @unchecked Sendable: the flag is only touched under the lock.
    private let lock = NSLock()
    private var taken = false

    func take() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        defer { taken = true }
        return !taken
    }
}
