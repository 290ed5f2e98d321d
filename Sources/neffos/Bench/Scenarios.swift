import Foundation
import Histogram
import NIOCore
import Neffos
import NeffosNIO

/// The benchmark scenarios. Each runs against one server URL and returns what it measured.
extension BenchRunner {
    /// Fan-out: one publisher broadcasts to all `clients` (itself included), keeping `window`
    /// broadcasts in flight; deliveries per second and delivery latency.
    /// With `room`, every client joins it and the broadcasts go to it instead of the namespace.
    func fanout(_ urls: [WebSocketURL], server: String, clients: Int, window: Int, duration: Duration, warmUp: Duration = .zero, room: String = "") async throws -> BenchResult {
        let (connections, _) = try await connect(clients) { index in
            (urls[index % urls.count], room.isEmpty ? [] : [room], index == 0 ? .publisher(window: window, room: room) : .receiver)
        }
        defer { for connection in connections { connection.close() } }
        if warmUp > .zero { _ = try await run("warm-up", active: [connections[0]], duration: warmUp) }
        let (end, drained, cpu) = try await run("fanout", active: [connections[0]], duration: duration)
        var result = BenchResult(
            scenario: "fanout", server: server, clients: clients, seconds: duration.seconds,
            operations: end.received, perSecond: Double(end.received) / duration.seconds,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: drained.errors, drops: max(0, drained.sent * clients - drained.received))
        result.latency(drained.latency)
        result.cpu(cpu, operations: end.received)
        result.notes["broadcasts"] = drained.sent.formatted
        if urls.count > 1 { result.notes["nodes"] = "\(urls.count)" }
        if !room.isEmpty { result.notes["room"] = room }
        return result
    }

    /// Rooms: `rooms` rooms of `members` members; the first member of each room publishes to
    /// it, `window` in flight each.
    func rooms(_ url: WebSocketURL, server: String, rooms: Int, members: Int, window: Int, duration: Duration) async throws -> BenchResult {
        let clients = rooms * members
        let (connections, _) = try await connect(clients) { index in
            let room = "r\(index % rooms)"
            return (url, [room], index < rooms ? .publisher(window: window, room: room) : .receiver)
        }
        defer { for connection in connections { connection.close() } }
        let (end, drained, cpu) = try await run("rooms", active: Array(connections.prefix(rooms)), duration: duration)
        var result = BenchResult(
            scenario: "rooms", server: server, clients: clients, seconds: duration.seconds,
            operations: end.received, perSecond: Double(end.received) / duration.seconds,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: drained.errors, drops: max(0, drained.sent * members - drained.received))
        result.latency(drained.latency)
        result.cpu(cpu, operations: end.received)
        result.notes["rooms"] = "\(rooms)×\(members)"
        result.notes["broadcasts"] = drained.sent.formatted
        return result
    }

    /// Ask: `clients` clients each keep `inflight` `echo` asks going; asks per second and
    /// round-trip latency.
    func ask(_ url: WebSocketURL, server: String, clients: Int, inflight: Int, duration: Duration) async throws -> BenchResult {
        let (connections, _) = try await connect(clients) { _ in (url, [], .asker(inflight: inflight)) }
        defer { for connection in connections { connection.close() } }
        let (end, drained, cpu) = try await run("ask", active: connections, duration: duration)
        var result = BenchResult(
            scenario: "ask", server: server, clients: clients, seconds: duration.seconds,
            operations: end.received, perSecond: Double(end.received) / duration.seconds,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: drained.errors, drops: max(0, drained.sent - drained.received))
        result.latency(drained.latency)
        result.cpu(cpu, operations: end.received)
        result.notes["inflight"] = "\(inflight) per client"
        return result
    }

    /// Connect storm: `clients` connections (upgrade, `M`/`A`, namespace connect), at most
    /// `concurrency` at once; connections per second and setup latency.
    func connectStorm(_ url: WebSocketURL, server: String, clients: Int, concurrency: Int) async throws -> BenchResult {
        let start = ContinuousClock.now
        let mark = CPUMark(pids)
        let (connections, setup) = try await connect(clients, concurrency: concurrency) { _ in (url, [], .receiver) }
        let cpu = mark.window()
        let elapsed = (ContinuousClock.now - start).seconds
        for connection in connections { connection.close() }
        var result = BenchResult(
            scenario: "connect", server: server, clients: clients, seconds: elapsed,
            operations: connections.count, perSecond: Double(connections.count) / elapsed,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: clients - connections.count, drops: 0)
        result.latency(setup)
        result.cpu(cpu, operations: connections.count)
        result.notes["concurrency"] = "\(concurrency)"
        return result
    }

    /// Idle memory: the server's resident memory per idle connection (each connected to the
    /// namespace and joined to a room); the CPU is the connects' (the operations).
    func idleMemory(_ url: WebSocketURL, server: String, pid: Int32, clients: Int) async throws -> BenchResult {
        // A few connections first, so that one-time allocations do not count per connection
        // (within the `clients`: a server's connection limit is usually a round number).
        let warmCount = min(10, clients / 10)
        let clients = clients - warmCount
        let (warm, _) = try await connect(warmCount) { _ in (url, ["idle"], .receiver) }
        guard let before = BenchProcesses.residentBytes(of: pid) else { throw ToolError("cannot read /proc/\(pid)/status") }
        let start = ContinuousClock.now
        let mark = CPUMark([pid])
        let (connections, setup) = try await connect(clients) { _ in (url, ["idle"], .receiver) }
        let cpu = mark.window()
        let elapsed = (ContinuousClock.now - start).seconds
        guard let after = BenchProcesses.residentBytes(of: pid) else { throw ToolError("cannot read /proc/\(pid)/status") }
        for connection in connections + warm { connection.close() }
        var result = BenchResult(
            scenario: "memory", server: server, clients: clients, seconds: elapsed,
            operations: connections.count, perSecond: Double(connections.count) / elapsed,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: clients - connections.count, drops: 0)
        result.latency(setup)
        result.cpu(cpu, operations: connections.count)
        result.notes["rssBeforeMiB"] = String(format: "%.1f", Double(before) / 1_048_576)
        result.notes["rssAfterMiB"] = String(format: "%.1f", Double(after) / 1_048_576)
        result.notes["bytesPerConnection"] = "\(max(0, after - before) / max(1, connections.count))"
        return result
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
