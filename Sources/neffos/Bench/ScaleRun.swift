import Foundation
import NeffosNIO
import NeffosProcess

/// One size of `neffos bench scale`.
struct ScaleRun {
    let size: Int
    let raw: Bool
    let perGenerator: Int
    let broadcasts: Int

    func measure() async throws -> ScaleRow {
        let server = try await BenchProcesses.startServer(raw: raw, arguments: raw ? [] : ["--max-connections", "\(size + 1000)"])
        var row = ScaleRow(server: raw ? "raw" : "neffos", connections: size)
        let limit = BenchProcesses.fileLimit(of: server.pid)
        row.serverFileLimit = limit?.soft
        if let limit, size + 64 > limit.soft {
            row.stoppedBy = "the server may open \(limit.soft.formatted) files (its ulimit -n; hard limit \(limit.hard.formatted)): \(size.formatted) connections need more; raise its ulimit -n (and fs.nr_open above the hard limit) to go further"
            return row
        }
        let kernelBefore = KernelMemory.read()
        let rssBefore = BenchProcesses.residentBytes(of: server.pid) ?? 0
        let cpuBefore = BenchProcesses.cpuSeconds(of: [server.pid])

        // The clients, in generator processes of at most perGenerator each.
        let generators = (size + perGenerator - 1) / perGenerator
        row.generators = generators
        let started = ContinuousClock.now
        var holders: [ChildProcess] = []
        for index in 0..<generators {
            let count = size / generators + (index < size % generators ? 1 : 0)
            holders.append(try BenchProcesses.startGenerator([
                "bench", "hold", "--url", server.url, "--clients", "\(count)", "--source-offset", "\(index * perGenerator)",
            ]))
        }
        for holder in holders {
            do {
                _ = try await holder.waitForOutput(containing: "ready", timeout: .seconds(60 + size / 200))
            } catch {
                throw ToolError("a generator did not connect its clients: \(error); it wrote:\n\(holder.text.suffix(800))")
            }
        }
        let connectSeconds = (ContinuousClock.now - started).seconds
        row.connectsPerSecond = Double(size) / connectSeconds
        row.serverCPUMicrosPerConnect = (BenchProcesses.cpuSeconds(of: [server.pid]) - cpuBefore) / Double(size) * 1e6
        row.bytesPerConnection = Double((BenchProcesses.residentBytes(of: server.pid) ?? 0) - rssBefore) / Double(size)
        if let before = kernelBefore, let after = KernelMemory.read() {
            row.kernelBytesPerConnection = after.minus(before) / Double(size)
        }

        // Broadcasts to all, one a second, from a publisher of this process.
        let runner = BenchRunner(threads: 1, progress: false, pids: [server.pid])
        do {
            let url = try WebSocketURL(server.url)
            let (publisher, _) = try await runner.connect(1, sourceOffset: generators * perGenerator) { _ in
                (url, [], .pacedPublisher(perSecond: 1, room: ""))
            }
            let (_, _, cpu) = try await runner.run("broadcasts", active: publisher, duration: .milliseconds(broadcasts * 1000 + 500))
            let sent = try await runner.tally().sent
            for connection in publisher { connection.close() }
            await runner.shutdown()
            var received = 0
            var medians: [UInt64] = []
            var slowest: UInt64 = 0
            for holder in holders {
                kill(holder.pid, SIGUSR1)
                let line = try await holder.waitForOutput(containing: "done", timeout: .seconds(30))
                let words = line.split(separator: " ").compactMap { UInt64($0) }
                guard words.count == 4 else { throw ToolError("unexpected line from a generator: \(line)") }
                received += Int(words[0])
                medians.append(words[1])
                slowest = max(slowest, words[3])
            }
            row.broadcasts = sent
            row.deliveries = received
            row.expectedDeliveries = sent * size
            row.deliveryP50Milliseconds = Double(medians.sorted()[medians.count / 2]) / 1e6
            row.timeToAllMilliseconds = Double(slowest) / 1e6
            row.serverCPUMicrosPerDelivery = (cpu.server ?? 0) / Double(max(1, sent * size)) * 1e6
        } catch {
            await runner.shutdown()
            throw error
        }
        return row
    }
}

/// One size's figures.
struct ScaleRow: Codable, Sendable {
    var server: String
    var connections: Int
    var generators = 0
    /// The server process's open-file limit (soft).
    var serverFileLimit: Int?
    var bytesPerConnection = 0.0
    /// The kernel's memory per connection (slab and TCP buffers), both ends of the loopback
    /// connection together.
    var kernelBytesPerConnection: Double?
    var connectsPerSecond = 0.0
    var serverCPUMicrosPerConnect = 0.0
    var broadcasts = 0
    var deliveries = 0
    var expectedDeliveries = 0
    var deliveryP50Milliseconds = 0.0
    /// The latest receipt of any broadcast: the time for one to reach every client.
    var timeToAllMilliseconds = 0.0
    var serverCPUMicrosPerDelivery = 0.0
    /// Why this size was not run (a limit), if it was not.
    var stoppedBy: String?

    init(server: String, connections: Int) {
        self.server = server
        self.connections = connections
    }

    var line: String {
        if let stoppedBy { return "scale [\(server)] \(connections.formatted): not run: \(stoppedBy)" }
        return String(
            format: "scale [%@] %@ connections (%d generators): %.0f bytes/connection in the server, %@ in the kernel (both ends); %.0f connects/s, %.0f µs server CPU per connect; %d broadcasts: %@/%@ delivered, p50 %.1f ms, all reached in %.1f ms, %.2f µs server CPU per delivery",
            server, connections.formatted, generators, bytesPerConnection, kernelBytesPerConnection.map { String(format: "%.0f", $0) } ?? "?",
            connectsPerSecond, serverCPUMicrosPerConnect, broadcasts, deliveries.formatted, expectedDeliveries.formatted,
            deliveryP50Milliseconds, timeToAllMilliseconds, serverCPUMicrosPerDelivery)
    }

    static func table(_ rows: [ScaleRow]) -> String {
        var lines = [
            "| server | connections | generators | server bytes/conn | kernel bytes/conn (both ends) | connects/s | µs CPU/connect | delivered | p50 / all reached (ms) | µs CPU/delivery |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows {
            if let stoppedBy = row.stoppedBy {
                lines.append("| \(row.server) | \(row.connections.formatted) | not run: \(stoppedBy) | | | | | | | |")
                continue
            }
            lines.append(String(
                format: "| %@ | %@ | %d | %.0f | %@ | %.0f | %.0f | %@/%@ | %.1f / %.1f | %.2f |",
                row.server, row.connections.formatted, row.generators, row.bytesPerConnection,
                row.kernelBytesPerConnection.map { String(format: "%.0f", $0) } ?? "?", row.connectsPerSecond, row.serverCPUMicrosPerConnect,
                row.deliveries.formatted, row.expectedDeliveries.formatted, row.deliveryP50Milliseconds, row.timeToAllMilliseconds,
                row.serverCPUMicrosPerDelivery))
        }
        return lines.joined(separator: "\n")
    }
}

/// The kernel's memory that grows with sockets: its slab (socket, inode, file and TCP
/// structures) and the TCP buffers (`/proc/net/sockstat`).
struct KernelMemory {
    var slabBytes: Double
    var tcpBufferBytes: Double

    static func read() -> KernelMemory? {
        guard let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let sockstat = try? String(contentsOfFile: "/proc/net/sockstat", encoding: .utf8),
            let slab = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("Slab:") })?.split(separator: " ").dropFirst().first.flatMap({ Double($0) }),
            let tcp = sockstat.split(separator: "\n").first(where: { $0.hasPrefix("TCP:") })
        else { return nil }
        let words = tcp.split(separator: " ")
        guard let memIndex = words.firstIndex(of: "mem"), memIndex + 1 < words.count, let pages = Double(words[memIndex + 1]) else { return nil }
        return KernelMemory(slabBytes: slab * 1024, tcpBufferBytes: pages * 4096)
    }

    func minus(_ other: KernelMemory) -> Double {
        (slabBytes - other.slabBytes) + (tcpBufferBytes - other.tcpBufferBytes)
    }
}
