import ArgumentParser
import Foundation
import NeffosNIO

extension Bench {
    struct Cluster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fan-out across nodes over NATS (one nats-server), against one node alone; or, with --history, the cost of keeping history on the cluster.",
            discussion: """
                Needs nats-server and a neffos-bench-server built with the NATS trait (swift build -c release --traits NATS). \
                With --history (comma-separated: off, on, jetstream), every variant runs --repeat times, interleaved, \
                on a fresh cluster (and a fresh nats-server, with -js for jetstream): every client joins one room and \
                the publisher broadcasts to it (the clients take positions when the room keeps history); each run \
                reports the nodes' CPU (all of them, user + system) per delivery; the nats-server's own is not counted.
                """)
        @Option(help: "Clients, spread evenly over the nodes.") var clients = 1000
        @Option(help: "Nodes.") var nodes = 3
        @Option(help: "Broadcasts the publisher keeps in flight.") var window = 4
        @Option(help: "Seconds to measure.") var duration = 10
        @Option(help: "History variants to compare on the cluster (off, on, jetstream; comma-separated), instead of the cluster against one node.") var history: String?
        @Option(help: "Runs per history variant (interleaved).") var `repeat` = 1
        @Option(help: "Node counts for the cost table (comma-separated, e.g. 1,3,5): per count, fan-out at saturation with the nodes' and the nats-server's CPU and bus messages per broadcast, cross-node latency at --rate, and a room on one node.") var cost: String?
        @Option(help: "With --cost: broadcasts per second of the fixed-load latency phase.") var rate = 20
        @OptionGroup var generator: GeneratorOptions

        private var variants: [String] { (history ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

        private var nodeCounts: [Int] { (cost ?? "").split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func validate() throws {
            if cost != nil {
                guard !nodeCounts.isEmpty, nodeCounts.allSatisfy({ (1...9).contains($0) }) else { throw ValidationError("--cost takes node counts 1…9, comma-separated") }
                guard history == nil else { throw ValidationError("--cost and --history are separate runs") }
                guard (1...10_000).contains(rate) else { throw ValidationError("--rate must be 1…10000") }
            }
            guard variants.allSatisfy({ ["off", "on", "jetstream"].contains($0) }) else { throw ValidationError("--history takes off, on and jetstream, comma-separated") }
            guard (1...20).contains(`repeat`) else { throw ValidationError("--repeat must be 1…20") }
        }

        func run() async throws {
            _ = BenchProcesses.raiseFileLimit()
            installSignalHandlers()
            if cost != nil {
                startWatchdog(seconds: nodeCounts.count * (3 * duration + 120 + clients / 100) + 60)
                let table = ClusterCost(clients: clients, window: window, duration: duration, rate: rate, threads: generator.threads, progress: generator.progress,
                    printsLines: !generator.json)
                let rows = try await table.run(nodeCounts: nodeCounts)
                if generator.json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: try encoder.encode(rows), as: UTF8.self))
                } else {
                    print(ClusterCost.table(rows))
                }
                return
            }
            let runs = history == nil ? 2 : variants.count * `repeat`
            startWatchdog(seconds: runs * (duration + 60 + clients / 250) + 60)
            var results: [BenchResult] = []
            do {
                if history == nil {
                    results.append(try await fanout(history: nil))
                    let single = try await BenchProcesses.startServer(raw: false)
                    let alone = BenchRunner(threads: generator.threads, progress: generator.progress, pids: [single.pid])
                    results.append(try await alone.fanout([try WebSocketURL(single.url)], server: "neffos alone", clients: clients, window: window, duration: .seconds(duration)))
                    await alone.shutdown()
                    await BenchProcesses.stopAll()
                } else {
                    for _ in 0..<`repeat` {
                        for variant in variants {
                            let result = try await fanout(history: variant)
                            if !generator.json { print(result.line) }
                            results.append(result)
                        }
                    }
                }
            } catch {
                await BenchProcesses.stopAll()
                throw error
            }
            if history == nil || generator.json { report(results, json: generator.json) }
        }

        /// One run on a fresh cluster: the namespace broadcast without `history`, else a room
        /// keeping history as `history` says.
        private func fanout(history: String?) async throws -> BenchResult {
            let nats = try await BenchProcesses.startNATS(jetStream: history == "jetstream")
            var servers: [BenchProcesses.Server] = []
            for _ in 0..<max(2, nodes) {
                servers.append(try await BenchProcesses.startServer(raw: false, exchange: nats.url, arguments: ["--history", history ?? "off"]))
            }
            let runner = BenchRunner(
                threads: generator.threads, progress: generator.progress, positions: history != nil && history != "off", pids: servers.map(\.pid))
            var result = try await runner.fanout(
                try servers.map { try WebSocketURL($0.url) }, server: "neffos ×\(servers.count) over NATS", clients: clients, window: window,
                duration: .seconds(duration), warmUp: .seconds(1), room: history == nil ? "" : "all")
            if let history { result.notes["history"] = history }
            await runner.shutdown()
            await BenchProcesses.stopAll()
            return result
        }
    }
}
