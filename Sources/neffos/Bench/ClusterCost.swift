import Foundation
import NeffosNIO
import NeffosProcess

/// What a cluster costs as it grows (`neffos bench cluster --cost 1,3,5`): for each node count,
/// a fresh nats-server and that many nodes on it, then three measurements.
///
/// 1. Saturation: the clients spread evenly over the nodes, one publisher broadcasting to the
///    namespace with `window` broadcasts in flight. Deliveries per second, the nodes' CPU per
///    delivery (all nodes, user + system) and deliveries per node-CPU-second, the nats-server's
///    own CPU, and its message counters (`/varz`) per broadcast: publishes in, deliveries out.
/// 2. Latency at a fixed offered load: the publisher on node 1 sends `rate` broadcasts a second
///    from a timer, whatever comes back, and every other client sits on another node (on the
///    same one when there is one node): the cross-node delivery latency well below saturation.
/// 3. A room that lives on one node: its members and publisher all on node 1, broadcasting as
///    fast as delivered. What the other nodes spend meanwhile (cores) and what the bus delivers
///    per broadcast: a room with no member elsewhere should cost the other nodes nothing.
struct ClusterCost {
    let clients: Int
    let window: Int
    let duration: Int
    let rate: Int
    let threads: Int
    let progress: Bool
    /// Whether each row is printed as a line when measured (not with `--json`).
    let printsLines: Bool

    /// One row of the table: one node count.
    struct Row: Codable, Sendable {
        var nodes: Int
        var clients: Int
        var deliveriesPerSecond: Double
        var nodesCPUMicrosPerDelivery: Double
        var deliveriesPerNodeCPUSecond: Double
        var natsCPUSeconds: Double
        var natsCPUMicrosPerBroadcast: Double
        var busPublishesPerBroadcast: Double
        var busDeliveriesPerBroadcast: Double
        var pacedBroadcastsPerSecond: Int
        var pacedDeliveriesPerSecond: Double
        var crossNodeP50Milliseconds: Double
        var crossNodeP99Milliseconds: Double
        var pacedNodesCores: Double
        /// Phase 3 (nodes > 1): the cores the nodes without the room's members used.
        var oneNodeRoomOtherNodesCores: Double?
        var oneNodeRoomBroadcastsPerSecond: Double?
        var oneNodeRoomBusDeliveriesPerBroadcast: Double?
    }

    func run(nodeCounts: [Int]) async throws -> [Row] {
        var rows: [Row] = []
        for nodes in nodeCounts {
            let row = try await measure(nodes: nodes)
            rows.append(row)
            if printsLines { print(Self.line(row)) }
        }
        return rows
    }

    private func measure(nodes: Int) async throws -> Row {
        let nats = try await BenchProcesses.startNATS()
        var runner: BenchRunner?
        do {
            guard let natsPID = nats.pid else { throw ToolError("the nats-server's PID is unknown") }
            var servers: [BenchProcesses.Server] = []
            for _ in 0..<nodes { servers.append(try await BenchProcesses.startServer(raw: false, exchange: nats.url)) }
            let probe = WindowProbe(nats: nats, pids: [natsPID] + servers.dropFirst().map(\.pid))
            let started = BenchRunner(threads: threads, progress: progress, pids: servers.map(\.pid)) { starts in
                await probe.mark(starts: starts)
            }
            runner = started
            let row = try await measure(urls: try servers.map { try WebSocketURL($0.url) }, runner: started, probe: probe)
            await started.shutdown()
            await BenchProcesses.stopAll()
            return row
        } catch {
            await runner?.shutdown()
            await BenchProcesses.stopAll()
            throw error
        }
    }

    private func measure(urls: [WebSocketURL], runner: BenchRunner, probe: WindowProbe) async throws -> Row {
        let nodes = urls.count
        // 1. Saturation.
        let saturated = try await runner.fanout(urls, server: "neffos ×\(nodes)", clients: clients, window: window, duration: .seconds(duration))
        let busy = await probe.window()
        let broadcasts = max(1, Double(saturated.operations) / Double(clients))
        let nodesCPU = saturated.serverCPUSeconds ?? 0

        // 2. Latency at a fixed offered load, the receivers on the other nodes.
        let paced = try await pacedLatency(urls, runner: runner)

        // 3. A room on one node.
        var oneNode: (cores: Double, perSecond: Double, busPerBroadcast: Double)?
        if nodes > 1 {
            let members = max(2, clients / nodes)
            let (connections, _) = try await runner.connect(members) { index in
                (urls[0], ["solo"], index == 0 ? .publisher(window: window, room: "solo") : .receiver)
            }
            let (end, _, cpu) = try await runner.run("one-node room", active: [connections[0]], duration: .seconds(duration))
            for connection in connections { connection.close() }
            let room = await probe.window()
            let roomBroadcasts = max(1, Double(end.received) / Double(members))
            oneNode = (room.cpu[1...].reduce(0, +) / cpu.wall, roomBroadcasts / cpu.wall, room.delivered / roomBroadcasts)
        }

        return Row(
            nodes: nodes, clients: clients,
            deliveriesPerSecond: saturated.perSecond,
            nodesCPUMicrosPerDelivery: nodesCPU / Double(max(1, saturated.operations)) * 1e6,
            deliveriesPerNodeCPUSecond: nodesCPU > 0 ? Double(saturated.operations) / nodesCPU : 0,
            natsCPUSeconds: busy.cpu[0],
            natsCPUMicrosPerBroadcast: busy.cpu[0] / broadcasts * 1e6,
            busPublishesPerBroadcast: busy.published / broadcasts,
            busDeliveriesPerBroadcast: busy.delivered / broadcasts,
            pacedBroadcastsPerSecond: rate,
            pacedDeliveriesPerSecond: paced.deliveriesPerSecond,
            crossNodeP50Milliseconds: paced.p50, crossNodeP99Milliseconds: paced.p99,
            pacedNodesCores: paced.cores,
            oneNodeRoomOtherNodesCores: oneNode?.cores,
            oneNodeRoomBroadcastsPerSecond: oneNode?.perSecond,
            oneNodeRoomBusDeliveriesPerBroadcast: oneNode?.busPerBroadcast)
    }

    /// Phase 2: `rate` broadcasts a second from node 1, received on the other nodes.
    private func pacedLatency(_ urls: [WebSocketURL], runner: BenchRunner) async throws
        -> (deliveriesPerSecond: Double, p50: Double, p99: Double, cores: Double)
    {
        let receiversNodes = urls.count == 1 ? urls : Array(urls.dropFirst())
        let (connections, _) = try await runner.connect(clients) { index in
            index == 0
                ? (urls[0], [], .pacedPublisher(perSecond: rate, room: ""))
                : (receiversNodes[(index - 1) % receiversNodes.count], [], .receiver)
        }
        defer { for connection in connections { connection.close() } }
        let (end, drained, cpu) = try await runner.run("paced \(rate)/s", active: [connections[0]], duration: .seconds(duration))
        let latency = drained.latency
        let p50 = latency.totalCount > 0 ? Double(latency.valueAtPercentile(50)) / 1e6 : 0
        let p99 = latency.totalCount > 0 ? Double(latency.valueAtPercentile(99)) / 1e6 : 0
        return (Double(end.received) / cpu.wall, p50, p99, (cpu.server ?? 0) / cpu.wall)
    }

    /// A row as a line of text.
    static func line(_ row: Row) -> String {
        var text = String(
            format: "cluster cost: %d node(s), %d clients: %.0f deliveries/s, nodes %.2f µs/delivery (%.0f deliveries per node-CPU-second), nats-server %.2f CPU-s (%.1f µs/broadcast), bus %.2f in and %.2f out per broadcast; at %d broadcasts/s (%.0f deliveries/s, nodes %.2f cores) cross-node p50 %.2f ms p99 %.2f ms",
            row.nodes, row.clients, row.deliveriesPerSecond, row.nodesCPUMicrosPerDelivery, row.deliveriesPerNodeCPUSecond,
            row.natsCPUSeconds, row.natsCPUMicrosPerBroadcast, row.busPublishesPerBroadcast, row.busDeliveriesPerBroadcast,
            row.pacedBroadcastsPerSecond, row.pacedDeliveriesPerSecond, row.pacedNodesCores, row.crossNodeP50Milliseconds, row.crossNodeP99Milliseconds)
        if let cores = row.oneNodeRoomOtherNodesCores, let perSecond = row.oneNodeRoomBroadcastsPerSecond,
            let bus = row.oneNodeRoomBusDeliveriesPerBroadcast
        {
            text += String(format: "; a room on one node (%.0f broadcasts/s): the other nodes %.3f cores, bus %.2f out per broadcast", perSecond, cores, bus)
        }
        return text
    }

    /// The rows as a Markdown table.
    static func table(_ rows: [Row]) -> String {
        var lines = [
            "| nodes | deliveries/s | nodes µs/delivery | deliveries per node-CPU-s | nats-server µs/broadcast | bus in / out per broadcast | cross-node p50 / p99 at fixed load | one-node room: other nodes' cores, bus out per broadcast |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows {
            let room = row.oneNodeRoomOtherNodesCores.map {
                String(format: "%.3f, %.2f", $0, row.oneNodeRoomBusDeliveriesPerBroadcast ?? 0)
            } ?? "–"
            lines.append(String(
                format: "| %d | %.0f | %.2f | %.0f | %.1f | %.2f / %.2f | %.2f / %.2f ms (%d/s) | %@ |",
                row.nodes, row.deliveriesPerSecond, row.nodesCPUMicrosPerDelivery, row.deliveriesPerNodeCPUSecond,
                row.natsCPUMicrosPerBroadcast, row.busPublishesPerBroadcast, row.busDeliveriesPerBroadcast,
                row.crossNodeP50Milliseconds, row.crossNodeP99Milliseconds, row.pacedBroadcastsPerSecond, room))
        }
        return lines.joined(separator: "\n")
    }
}

/// The nats-server's counters and the CPU of chosen processes over the runner's measured
/// windows (``BenchRunner/onWindow``).
actor WindowProbe {
    private let nats: NATSServer
    private let pids: [Int32]
    private var start: (bus: BusCounters, cpu: [Double])?
    private var last: (published: Double, delivered: Double, cpu: [Double]) = (0, 0, [])

    init(nats: NATSServer, pids: [Int32]) {
        self.nats = nats
        self.pids = pids
    }

    func mark(starts: Bool) async {
        guard let bus = try? await BusCounters(nats) else { return }
        let cpu = pids.map { BenchProcesses.cpuSeconds(of: [$0]) }
        if starts {
            start = (bus, cpu)
        } else if let start {
            let delta = bus.minus(start.bus)
            last = (delta.published, delta.delivered, zip(cpu, start.cpu).map { $0 - $1 })
        }
    }

    /// The last window: bus messages in and out, and each watched process's CPU seconds (in
    /// the order given).
    func window() -> (published: Double, delivered: Double, cpu: [Double]) {
        last.cpu.isEmpty ? (last.published, last.delivered, pids.map { _ in 0 }) : last
    }
}
