import Foundation
import Histogram
import NIOCore
import NIOPosix
import Neffos
import NeffosNIO

/// What one benchmark run measured.
struct BenchResult: Codable, Sendable {
    var scenario: String
    var server: String
    var clients: Int
    var seconds: Double
    /// Deliveries (fan-out, rooms), asks, or connections.
    var operations: Int
    var perSecond: Double
    var p50Milliseconds: Double
    var p99Milliseconds: Double
    var p999Milliseconds: Double
    var maxMilliseconds: Double
    var errors: Int
    var drops: Int
    /// The servers' CPU time (user + system, every server process watched) over the measured
    /// window, and per operation; `nil` when no server process is known (a `--url` without
    /// `--pid`).
    var serverCPUSeconds: Double?
    var serverCPUMicrosPerOperation: Double?
    /// The generator's own CPU time over the same window, and the cores it used on average:
    /// near the machine's cores, the generator (not the server) bounded the throughput.
    var generatorCPUSeconds: Double?
    var generatorCores: Double?
    var notes: [String: String] = [:]

    /// Fills the CPU fields from `window`, over `operations` operations.
    mutating func cpu(_ window: CPUWindow, operations: Int) {
        generatorCPUSeconds = (window.generator * 1000).rounded() / 1000
        generatorCores = window.wall > 0 ? (window.generator / window.wall * 100).rounded() / 100 : nil
        guard let server = window.server else { return }
        serverCPUSeconds = (server * 1000).rounded() / 1000
        if operations > 0 { serverCPUMicrosPerOperation = (server / Double(operations) * 1e8).rounded() / 100 }
    }

    /// Fills the latency fields from `histogram`.
    mutating func latency(_ histogram: Histogram<UInt64>) {
        func ms(_ value: UInt64) -> Double { (Double(value) / 1e6 * 1000).rounded() / 1000 }
        guard histogram.totalCount > 0 else { return }
        p50Milliseconds = ms(histogram.valueAtPercentile(50))
        p99Milliseconds = ms(histogram.valueAtPercentile(99))
        p999Milliseconds = ms(histogram.valueAtPercentile(99.9))
        maxMilliseconds = ms(histogram.max)
    }

    /// One human-readable line.
    var line: String {
        var text = "\(scenario) [\(server)] \(clients) clients, \(String(format: "%.1f", seconds)) s: "
        text += "\(operations.formatted) ops, \(Int(perSecond).formatted)/s"
        if p50Milliseconds > 0 || p99Milliseconds > 0 {
            text += ", latency p50 \(p50Milliseconds) ms, p99 \(p99Milliseconds) ms, p99.9 \(p999Milliseconds) ms, max \(maxMilliseconds) ms"
        }
        text += ", errors \(errors), drops \(drops)"
        if let perOperation = serverCPUMicrosPerOperation, let seconds = serverCPUSeconds {
            text += ", server CPU \(String(format: "%.2f", perOperation)) µs/op (\(String(format: "%.2f", seconds)) s)"
        }
        if let cores = generatorCores { text += ", generator \(String(format: "%.2f", cores)) cores" }
        for (key, value) in notes.sorted(by: { $0.key < $1.key }) { text += ", \(key) \(value)" }
        return text
    }
}

extension Int {
    /// `1234567` → `1,234,567`.
    var formatted: String {
        let digits = Array(String(abs(self)))
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out += "," }
            out.append(digit)
        }
        return (self < 0 ? "-" : "") + out
    }
}

/// CPU times at one instant: the watched servers' and the generator's (this process).
struct CPUMark: Sendable {
    let pids: [Int32]
    let server: Double
    let generator: Double
    let time: ContinuousClock.Instant

    init(_ pids: [Int32]) {
        self.pids = pids
        server = BenchProcesses.cpuSeconds(of: pids)
        generator = BenchProcesses.cpuSeconds(of: [getpid()])
        time = ContinuousClock.now
    }

    /// The CPU spent from this mark to now.
    func window() -> CPUWindow {
        let end = CPUMark(pids)
        return CPUWindow(server: pids.isEmpty ? nil : end.server - server, generator: end.generator - generator, wall: (end.time - time).seconds)
    }
}

/// CPU spent over a measured window.
struct CPUWindow: Sendable {
    /// The watched servers' (user + system), `nil` without any.
    var server: Double?
    var generator: Double
    var wall: Double
}

/// Drives load connections against a server and measures.
final class BenchRunner: Sendable {
    let group: MultiThreadedEventLoopGroup
    let recorders: [Recorder]
    let dialer: LoadDialer
    let namespace = "bench"
    let progress: Bool
    /// The server processes whose CPU every result reports (all of a cluster's nodes).
    let pids: [Int32]

    /// Called at the start (`true`) and the end (`false`) of each measured window, right
    /// where its CPU is marked: for what a scenario counts besides (a nats-server's CPU and
    /// message counters).
    let onWindow: (@Sendable (_ starts: Bool) async -> Void)?

    init(
        threads: Int, progress: Bool, tls: ClientTLSSession? = nil, positions: Bool = false, pids: [Int32] = [],
        onWindow: (@Sendable (_ starts: Bool) async -> Void)? = nil
    ) {
        self.pids = pids
        self.onWindow = onWindow
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        var recorders: [Recorder] = []
        var table: [ObjectIdentifier: Recorder] = [:]
        for loop in group.makeIterator() {
            let recorder = Recorder(loop: loop)
            recorders.append(recorder)
            table[ObjectIdentifier(loop)] = recorder
        }
        self.recorders = recorders
        var dialer = LoadDialer(group: group, recorders: table, tls: tls)
        dialer.positions = positions
        self.dialer = dialer
        self.progress = progress
    }

    func shutdown() async {
        try? await group.shutdownGracefully()
    }

    /// The recorders' counters, merged.
    func tally() async throws -> Tally {
        var total = Tally()
        for recorder in recorders { total.add(try await recorder.snapshot().get()) }
        return total
    }

    func reset() async throws {
        for recorder in recorders { try await recorder.reset().get() }
    }

    /// Opens `count` connections (at most `concurrency` handshakes at once); `plan(i)` gives
    /// each its URL, rooms and role. Returns them in plan order, and their setup latencies.
    func connect(
        _ count: Int, concurrency: Int = 256, sourceOffset: Int = 0,
        recoverFrom: (@Sendable (Int) -> String?)? = nil,
        plan: @escaping @Sendable (Int) -> (url: WebSocketURL, rooms: [String], role: LoadRole)
    ) async throws -> ([LoadConnection], Histogram<UInt64>) {
        try Self.checkFileLimit(for: count)
        var connections: [LoadConnection?] = Array(repeating: nil, count: count)
        var opened = 0
        var setup = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
        let namespace = self.namespace
        let dialer = self.dialer
        try await withThrowingTaskGroup(of: (Int, LoadConnection, UInt64).self) { group in
            var next = 0
            func add() {
                let index = next
                next += 1
                let (url, rooms, role) = plan(index)
                group.addTask {
                    let (connection, elapsed) = try await dialer.connect(
                        to: url, namespace: namespace, rooms: rooms, role: role, sourceIndex: sourceOffset + index, recoverFrom: recoverFrom?(index))
                    return (index, connection, elapsed)
                }
            }
            while next < min(count, concurrency) { add() }
            var lastReport = monotonicNanoseconds()
            while let (index, connection, elapsed) = try await nextConnection(&group, opened: opened) {
                connections[index] = connection
                opened += 1
                _ = setup.record(elapsed)
                if next < count { add() }
                if progress && monotonicNanoseconds() - lastReport > 1_000_000_000 {
                    lastReport = monotonicNanoseconds()
                    FileHandle.standardError.write(Data("  connected \(opened.formatted)/\(count.formatted)\n".utf8))
                }
            }
        }
        // In plan order: index i is the connection plan(i) described.
        return (connections.compactMap { $0 }, setup)
    }

    /// Refuses, before dialling, more connections than this process may open files: each is a
    /// socket here, and the failure would otherwise come thousands of connections in as an
    /// obscure EMFILE.
    static func checkFileLimit(for count: Int) throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let open = Int(clamping: limit.rlim_cur)
        let spare = 64  // the process's own files: event loops, pipes, the servers' output
        guard count + spare > open else { return }
        throw ToolError(
            "\(count.formatted) connections need \(count.formatted) sockets in this generator, and it may open \(open.formatted) files (ulimit -n; hard limit \(Int(clamping: limit.rlim_max).formatted)): use at most \(max(0, open - spare).formatted) clients per generator, or raise the limit (ulimit -Hn, and fs.nr_open above it)")
    }

    /// The next connection made; a refusal past the server's connection limit (503) says so.
    private func nextConnection(
        _ group: inout ThrowingTaskGroup<(Int, LoadConnection, UInt64), any Error>, opened: Int
    ) async throws -> (Int, LoadConnection, UInt64)? {
        do {
            return try await group.next()
        } catch where "\(error)".contains("503") {
            throw ToolError("\(error), after \(opened.formatted) connections: the server refuses connections past its limit (a neffos server: neffos.limits.connections, 10,000 by default)")
        }
    }

    /// Starts `active`, prints a progress line every second for `duration`, stops them, waits
    /// until what is in flight has arrived, and returns (counters at the end of `duration`,
    /// counters after draining, the CPU spent over `duration`: the measured phase only, not the
    /// connects before it nor the drain after it).
    func run(_ label: String, active: [LoadConnection], duration: Duration) async throws -> (Tally, Tally, CPUWindow) {
        try await reset()
        let start = ContinuousClock.now
        await onWindow?(true)
        let mark = CPUMark(pids)
        for connection in active { connection.start() }
        var previous = 0
        while ContinuousClock.now - start < duration {
            let remaining = duration - (ContinuousClock.now - start)
            try await Task.sleep(for: min(.seconds(1), remaining))
            if progress {
                let now = try await tally()
                let elapsed = ContinuousClock.now - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                let p50 = now.latency.totalCount > 0 ? Double(now.latency.valueAtPercentile(50)) / 1e6 : 0
                let p99 = now.latency.totalCount > 0 ? Double(now.latency.valueAtPercentile(99)) / 1e6 : 0
                let line = String(format: "  [%@] %.0fs  received %@ (%@/s)  p50 %.2f ms  p99 %.2f ms  errors %d\n",
                                  label, seconds, now.received.formatted, (now.received - previous).formatted, p50, p99, now.errors)
                FileHandle.standardError.write(Data(line.utf8))
                previous = now.received
            }
        }
        let atEnd = try await tally()
        let cpu = mark.window()
        await onWindow?(false)
        for connection in active { connection.stop() }
        // Let what is in flight arrive: until nothing more comes for half a second (or 10 s).
        var settled = atEnd
        let drainStart = ContinuousClock.now
        while ContinuousClock.now - drainStart < .seconds(10) {
            try await Task.sleep(for: .milliseconds(500))
            let now = try await tally()
            if now.received == settled.received { break }
            settled = now
        }
        return (atEnd, settled, cpu)
    }
}
