import ArgumentParser
import Foundation
import Neffos
import NeffosNIO
import NeffosProcess
import NIOCore
import NIOPosix

extension Bench {
    struct Presence: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cluster presence over NATS: joins and leaves per second, presence events, room-listing latency under churn, bus messages per join, and fan-out with presence on and off.",
            discussion: """
                Starts one nats-server and --nodes bench servers with presence on namespace `bench`. \
                --clients members sit in --rooms rooms, spread over the nodes (so every node follows \
                every room); --churners more join and leave their room as fast as the server \
                acknowledges. Phase 1 measures the churn alone: acknowledgements per second, the \
                presence events the nodes raised, and the bus messages per join or leave (nats-server's \
                /varz, less the heartbeats' rate measured idle before). Phase 2 adds --queriers clients \
                each asking for a room's members across the cluster, one ask in flight: its round trip \
                is the query latency; phase 3 measures it again without the churn. Then the same cluster runs the fan-out scenario with presence on \
                and off (a fresh cluster each), with the servers' CPU per delivery. \
                Needs nats-server and a release neffos-bench-server built with the NATS trait.
                """)
        @Option(help: "Members sitting in rooms, spread evenly over the nodes.") var clients = 3000
        @Option(help: "Nodes.") var nodes = 3
        @Option(help: "Rooms.") var rooms = 100
        @Option(help: "Clients joining and leaving continuously (beyond --clients).") var churners = 300
        @Option(help: "Clients asking for a room's members, one ask in flight each.") var queriers = 8
        @Option(help: "Clients of the fan-out comparison (0: skip it).") var fanoutClients = 1000
        @Flag(help: "Also deliver the `presence` client event to the rooms' members.") var events = false
        @Option(help: "Fan-out runs with presence on and off (interleaved); the median of each is reported.") var `repeat` = 1
        @Option(help: "Seconds to measure each phase.") var duration = 10
        @OptionGroup var generator: GeneratorOptions

        func validate() throws {
            guard (2...16).contains(nodes) else { throw ValidationError("--nodes must be 2…16") }
            guard rooms > 0, clients >= rooms else { throw ValidationError("--clients must be at least --rooms (every room has members)") }
            guard churners > 0, queriers > 0 else { throw ValidationError("--churners and --queriers must be at least 1") }
            guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be 1…600 seconds") }
            guard (1...9).contains(`repeat`) else { throw ValidationError("--repeat must be 1…9") }
        }

        func run() async throws {
            _ = BenchProcesses.raiseFileLimit()
            installSignalHandlers()
            let total = clients + churners + queriers
            startWatchdog(seconds: (3 + 2 * `repeat`) * (duration + 30) + 120 + (total + 2 * `repeat` * fanoutClients) / 100)
            var results: [BenchResult] = []
            do {
                results += try await churnAndQueries()
                await BenchProcesses.stopAll()
                if fanoutClients > 0 {
                    // On and off interleaved; the median run of each (by CPU per delivery).
                    var runs: [String: [BenchResult]] = [:]
                    for _ in 0..<`repeat` {
                        for mode in ["on", "off"] {
                            runs[mode, default: []].append(try await fanout(presence: mode))
                            await BenchProcesses.stopAll()
                        }
                    }
                    for mode in ["on", "off"] {
                        let sorted = runs[mode, default: []].sorted { cpuPerDelivery($0) < cpuPerDelivery($1) }
                        var median = sorted[sorted.count / 2]
                        if sorted.count > 1 { median.notes["runsCPUMicrosPerDelivery"] = sorted.map { String(format: "%.2f", cpuPerDelivery($0)) }.joined(separator: " ") }
                        results.append(median)
                    }
                }
            } catch {
                await BenchProcesses.stopAll()
                throw error
            }
            report(results, json: generator.json)
        }

        private func cpuPerDelivery(_ result: BenchResult) -> Double {
            result.serverCPUMicrosPerOperation ?? .infinity
        }

        /// A cluster of `nodes` bench servers on one nats-server.
        private func cluster(presence: String) async throws -> (NATSServer, [BenchProcesses.Server]) {
            let nats = try await BenchProcesses.startNATS()
            var servers: [BenchProcesses.Server] = []
            for _ in 0..<nodes {
                servers.append(try await BenchProcesses.startServer(raw: false, exchange: nats.url, arguments: ["--presence", presence]))
            }
            return (nats, servers)
        }

        private func churnAndQueries() async throws -> [BenchResult] {
            let (nats, servers) = try await cluster(presence: events ? "events" : "on")
            let (rooms, clients, churners, nodes) = (rooms, clients, churners, nodes)
            let urls = try servers.map { try WebSocketURL($0.url) }
            let probes = try await servers.asyncMap { try await NodeProbe(url: $0.url) }
            defer { for probe in probes { probe.close() } }
            // Every node must know every other before the clients come (a query asks the nodes
            // it knows).
            let deadline = ContinuousClock.now + .seconds(20)
            while try await probes.asyncMap({ try await $0.stats().nodes }).contains(where: { $0 < nodes }) {
                guard ContinuousClock.now < deadline else { throw ToolError("the \(nodes) nodes did not all see each other within 20 s") }
                try await Task.sleep(for: .milliseconds(100))
            }
            let members = BenchRunner(threads: generator.threads, progress: generator.progress)
            let askers = BenchRunner(threads: 1, progress: generator.progress)
            // Each room's members and churners spread round-robin over the nodes.
            let (connections, _) = try await members.connect(clients + churners) { index in
                let (room, url) = ("r\(index % rooms)", urls[(index / rooms) % nodes])
                return index < clients ? (url, [room], .receiver) : (url, [], .churner(room: room))
            }
            let (queryConnections, _) = try await askers.connect(queriers) { index in
                (urls[index % nodes], [], .asker(inflight: 1, event: "members", room: "r\(index % rooms)"))
            }
            let churning = Array(connections[clients...])

            // The bus's idle rate (heartbeats), to subtract from what the churn costs.
            let idleSeconds = 3.0
            let idleStart = try await BusCounters(nats)
            try await Task.sleep(for: .seconds(idleSeconds))
            let idleRate = try await BusCounters(nats).minus(idleStart).scaled(1 / idleSeconds)

            // Phase 1: churn alone.
            let busBefore = try await BusCounters(nats)
            let eventsBefore = try await probes.asyncMap { try await $0.stats().events }.reduce(0, +)
            let churnStart = ContinuousClock.now
            let (churnEnd, churned, _) = try await members.run("churn", active: churning, duration: .seconds(duration))
            let churnSeconds = (ContinuousClock.now - churnStart).seconds
            let bus = try await BusCounters(nats).minus(busBefore).minus(idleRate.scaled(churnSeconds))
            let raised = try await probes.asyncMap { try await $0.stats().events }.reduce(0, +) - eventsBefore
            let changes = max(1, churned.received)
            var churn = BenchResult(
                scenario: "presence-churn", server: "neffos ×\(nodes) over NATS", clients: clients + churners,
                seconds: Double(duration), operations: churnEnd.received, perSecond: Double(churnEnd.received) / Double(duration),
                p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
                errors: churned.errors, drops: 0)
            churn.latency(churned.latency)
            churn.notes["rooms"] = "\(rooms)"
            churn.notes["churners"] = "\(churners)"
            churn.notes["presenceEventsPerSecond"] = Int(Double(raised) / churnSeconds).formatted
            churn.notes["eventsPerChange"] = String(format: "%.2f", Double(raised) / Double(changes))
            churn.notes["busPublishesPerChange"] = String(format: "%.2f", bus.published / Double(changes))
            churn.notes["busDeliveriesPerChange"] = String(format: "%.2f", bus.delivered / Double(changes))
            churn.notes["busIdlePublishesPerSecond"] = String(format: "%.1f", idleRate.published)
            if events { churn.notes["clientEventsPerSecond"] = Int(Double(churned.presence) / churnSeconds).formatted }

            // Phase 2: room listings while the churn goes on; phase 3: without it.
            var results = [churn]
            for churning in [churning, []] {
                for connection in churning { connection.start() }
                let (queryEnd, queried, _) = try await askers.run("query", active: queryConnections, duration: .seconds(duration))
                for connection in churning { connection.stop() }
                var query = BenchResult(
                    scenario: "presence-query", server: "neffos ×\(nodes) over NATS", clients: queriers,
                    seconds: Double(duration), operations: queryEnd.received, perSecond: Double(queryEnd.received) / Double(duration),
                    p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
                    errors: queried.errors, drops: max(0, queried.sent - queried.received))
                query.latency(queried.latency)
                query.notes["during"] = churning.isEmpty ? "no churn" : "\(churners) churners"
                query.notes["roomSize"] = "\(clients / rooms)"
                results.append(query)
            }
            for connection in connections + queryConnections { connection.close() }
            await members.shutdown()
            await askers.shutdown()
            return results
        }

        private func fanout(presence: String) async throws -> BenchResult {
            let (_, servers) = try await cluster(presence: presence)
            let runner = BenchRunner(threads: generator.threads, progress: generator.progress, pids: servers.map(\.pid))
            var result = try await runner.fanout(
                try servers.map { try WebSocketURL($0.url) }, server: "neffos ×\(nodes) over NATS, presence \(presence)",
                clients: fanoutClients, window: 4, duration: .seconds(duration), warmUp: .seconds(1))
            result.notes["presence"] = presence
            await runner.shutdown()
            return result
        }
    }
}

/// A plain client on one node that asks it for its `stats`.
private struct NodeProbe {
    let client: Client
    let ns: NSConn

    init(url: String) async throws {
        client = try await Client.dial(url, namespaces: ["bench": Events()])
        ns = try await client.connect("bench")
    }

    /// The node's counters: presence events raised, bus payloads published and delivered, nodes known.
    func stats() async throws -> (events: Int, published: Int, delivered: Int, nodes: Int) {
        let reply = try await ns.ask("stats", "")
        let fields = reply.bodyString.split(separator: " ").compactMap { Int($0) }
        guard fields.count == 4 else { throw ToolError("unexpected stats from the bench server: \(reply.bodyString)") }
        return (fields[0], fields[1], fields[2], fields[3])
    }

    func close() {
        let client = client
        Task { await client.close() }
    }
}

/// nats-server's message counters (`/varz`): messages published in, and delivered out.
struct BusCounters {
    var published: Double
    var delivered: Double

    init(published: Double, delivered: Double) {
        self.published = published
        self.delivered = delivered
    }

    init(_ nats: NATSServer) async throws {
        let body = try await nats.monitor("varz")
        guard let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let received = object["in_msgs"] as? Int, let sent = object["out_msgs"] as? Int
        else { throw ToolError("unexpected /varz from nats-server: \(body.prefix(200))") }
        self.init(published: Double(received), delivered: Double(sent))
    }

    func minus(_ other: BusCounters) -> BusCounters {
        BusCounters(published: published - other.published, delivered: delivered - other.delivered)
    }

    func scaled(_ factor: Double) -> BusCounters {
        BusCounters(published: published * factor, delivered: delivered * factor)
    }
}

extension Array {
    /// `transform` applied to each element in turn.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async throws -> [T] {
        var results: [T] = []
        results.reserveCapacity(count)
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
