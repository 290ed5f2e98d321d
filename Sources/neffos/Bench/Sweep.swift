import ArgumentParser
import Foundation
import NeffosNIO

extension Bench {
    struct Sweep: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cost curves: one scenario over a list of sizes, the server's CPU per operation (and memory per connection) against N.",
            discussion: """
                For each size (and each server with --compare: ours, then the raw ceiling), starts a fresh \
                server and runs the scenario: fanout to N clients, memory with N idle connections, rooms \
                with N clients in rooms of 10, rooms-count with N rooms of 2 members. Writes a table \
                (sweep-<scenario>.md) and a self-contained SVG plot (sweep-<scenario>.svg, no internet needed) \
                into --out, and prints the table. A flat curve is the goal: where it is not, the table says \
                by how much.
                """)
        @Argument(help: "fanout, memory, rooms or rooms-count.") var scenario: String
        @Option(help: "Sizes N, comma-separated.") var sizes = "100,1000,5000,10000"
        @Option(help: "Seconds to measure at each size (fanout, rooms).") var duration = 5
        @Flag(help: "Also the raw SwiftNIO server at each size.") var compare = false
        @Option(help: "The folder to write the table and the plot into.") var out = "."
        @OptionGroup var generator: GeneratorOptions

        private var sizeList: [Int] { sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func validate() throws {
            guard ["fanout", "memory", "rooms", "rooms-count"].contains(scenario) else {
                throw ValidationError("the scenario is fanout, memory, rooms or rooms-count")
            }
            guard !sizeList.isEmpty, sizeList.allSatisfy({ (2...1_000_000).contains($0) }) else { throw ValidationError("--sizes takes sizes 2…1000000, comma-separated") }
            guard (1...600).contains(duration) else { throw ValidationError("--duration must be 1…600") }
        }

        func run() async throws {
            // The folder first: a run of minutes must not end in "no such folder".
            do {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            } catch {
                throw ToolError("cannot write into --out \(out): \(error.localizedDescription)")
            }
            let fileLimit = BenchProcesses.raiseFileLimit()
            installSignalHandlers()
            let kinds: [BenchOptions.Kind] = compare ? [.neffos, .raw] : [.neffos]
            let biggest = sizeList.max() ?? 0
            startWatchdog(seconds: sizeList.count * kinds.count * (duration + 90) + sizeList.reduce(0, +) / 100 + 60)
            if biggest + 64 > fileLimit {
                FileHandle.standardError.write(Data("neffos bench sweep: N = \(biggest) needs \(biggest) sockets, this process may open \(fileLimit) files (ulimit -n); sizes past it fail\n".utf8))
            }
            var points: [SweepPoint] = []
            do {
                for size in sizeList {
                    for kind in kinds {
                        // Past our server's default limit of 10,000 connections, up to the
                        // open-file limit (the raw server has no limit of its own).
                        let server = try await BenchProcesses.startServer(
                            raw: kind == .raw, arguments: kind == .raw ? [] : ["--max-connections", "\(size + 100)"])
                        let runner = BenchRunner(threads: generator.threads, progress: generator.progress, pids: [server.pid])
                        let url = try WebSocketURL(server.url)
                        let result: BenchResult
                        switch scenario {
                        case "fanout":
                            result = try await runner.fanout([url], server: kind.rawValue, clients: size, window: 4, duration: .seconds(duration))
                        case "memory":
                            result = try await runner.idleMemory(url, server: kind.rawValue, pid: server.pid, clients: size)
                        case "rooms":
                            result = try await runner.rooms(url, server: kind.rawValue, rooms: max(1, size / 10), members: 10, window: 1, duration: .seconds(duration))
                        default:
                            result = try await runner.rooms(url, server: kind.rawValue, rooms: max(1, size / 2), members: 2, window: 1, duration: .seconds(duration))
                        }
                        await runner.shutdown()
                        await BenchProcesses.stopAll()
                        if generator.progress { FileHandle.standardError.write(Data("\(result.line)\n".utf8)) }
                        points.append(SweepPoint(size: size, server: kind.rawValue, result: result))
                    }
                }
            } catch {
                await BenchProcesses.stopAll()
                throw error
            }
            let sweep = SweepReport(scenario: scenario, points: points)
            let table = sweep.table()
            try table.write(toFile: (out as NSString).appendingPathComponent("sweep-\(scenario).md"), atomically: true, encoding: .utf8)
            try sweep.svg().write(toFile: (out as NSString).appendingPathComponent("sweep-\(scenario).svg"), atomically: true, encoding: .utf8)
            if generator.json { report(points.map(\.result), json: true) } else { print(table) }
        }
    }
}

/// One measurement of a sweep.
struct SweepPoint: Sendable {
    var size: Int
    var server: String
    var result: BenchResult

    var cpuPerOperation: Double? { result.serverCPUMicrosPerOperation }
    var bytesPerConnection: Double? { result.notes["bytesPerConnection"].flatMap(Double.init) }
}

/// A sweep's table and plot.
struct SweepReport {
    let scenario: String
    let points: [SweepPoint]

    private var servers: [String] { points.reduce(into: [String]()) { if !$0.contains($1.server) { $0.append($1.server) } } }
    private var sizes: [Int] { Array(Set(points.map(\.size))).sorted() }

    /// The metrics plotted: CPU per operation, and memory per connection for `memory`.
    private var metrics: [(name: String, unit: String, value: (SweepPoint) -> Double?)] {
        var metrics: [(name: String, unit: String, value: (SweepPoint) -> Double?)] = [("server CPU per operation", "µs", { $0.cpuPerOperation })]
        if scenario == "memory" { metrics.append(("memory per connection", "bytes", { $0.bytesPerConnection })) }
        return metrics
    }

    private func point(_ size: Int, _ server: String) -> SweepPoint? { points.first { $0.size == size && $0.server == server } }

    /// A Markdown table: a row per size, per server its operations per second and each metric;
    /// then how far each curve is from flat (largest over smallest).
    func table() -> String {
        var header = "| N |"
        var rule = "|---|"
        for server in servers {
            header += " \(server) ops/s |"
            rule += "---|"
            for metric in metrics {
                header += " \(server) \(metric.name) (\(metric.unit)) |"
                rule += "---|"
            }
        }
        var lines = ["Sweep: \(scenario)", "", header, rule]
        for size in sizes {
            var line = "| \(size.formatted) |"
            for server in servers {
                let found = point(size, server)
                line += " \(found.map { Int($0.result.perSecond).formatted } ?? "–") |"
                for metric in metrics {
                    line += " \(found.flatMap(metric.value).map { String(format: "%.2f", $0) } ?? "–") |"
                }
            }
            lines.append(line)
        }
        lines.append("")
        for server in servers {
            for metric in metrics {
                let values = sizes.compactMap { point($0, server).flatMap(metric.value) }
                guard let low = values.min(), let high = values.max(), low > 0 else { continue }
                lines.append(String(format: "%@, %@: largest / smallest %.2f over N = %@…%@", server, metric.name, high / low, sizes.first!.formatted, sizes.last!.formatted))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A self-contained SVG: one panel per metric, N on a log scale, a line per server.
    func svg() -> String {
        let (panelWidth, panelHeight, margin) = (560.0, 300.0, 60.0)
        let colors = ["#1f77b4", "#d62728", "#2ca02c"]
        let height = Double(metrics.count) * (panelHeight + margin) + margin
        var svg = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(Int(panelWidth + 2 * margin))" height="\#(Int(height))" font-family="sans-serif" font-size="12">"#
        svg += #"<rect width="100%" height="100%" fill="white"/>"#
        let logs = sizes.map { log10(Double($0)) }
        let (minX, maxX) = (logs.min() ?? 0, max((logs.max() ?? 1), (logs.min() ?? 0) + 1e-9))
        for (index, metric) in metrics.enumerated() {
            let top = margin + Double(index) * (panelHeight + margin)
            let values = points.compactMap(metric.value)
            let maxY = (values.max() ?? 1) * 1.15
            func x(_ size: Int) -> Double { margin + (log10(Double(size)) - minX) / (maxX - minX) * panelWidth }
            func y(_ value: Double) -> Double { top + panelHeight - value / maxY * panelHeight }
            svg += #"<text x="\#(margin)" y="\#(top - 12)" font-weight="bold">\#(scenario): \#(metric.name) (\#(metric.unit)) against N</text>"#
            svg += #"<line x1="\#(margin)" y1="\#(top + panelHeight)" x2="\#(margin + panelWidth)" y2="\#(top + panelHeight)" stroke="black"/>"#
            svg += #"<line x1="\#(margin)" y1="\#(top)" x2="\#(margin)" y2="\#(top + panelHeight)" stroke="black"/>"#
            for tick in 0...4 {
                let value = maxY * Double(tick) / 4
                svg += #"<text x="\#(margin - 6)" y="\#(y(value) + 4)" text-anchor="end">\#(String(format: "%.1f", value))</text>"#
                svg += #"<line x1="\#(margin)" y1="\#(y(value))" x2="\#(margin + panelWidth)" y2="\#(y(value))" stroke="lightgray"/>"#
            }
            for size in sizes {
                svg += #"<text x="\#(x(size))" y="\#(top + panelHeight + 16)" text-anchor="middle">\#(size.formatted)</text>"#
            }
            for (serverIndex, server) in servers.enumerated() {
                let color = colors[serverIndex % colors.count]
                let line = sizes.compactMap { size in point(size, server).flatMap(metric.value).map { (x(size), y($0)) } }
                svg += #"<polyline fill="none" stroke="\#(color)" stroke-width="2" points="\#(line.map { String(format: "%.1f,%.1f", $0.0, $0.1) }.joined(separator: " "))"/>"#
                for (px, py) in line { svg += #"<circle cx="\#(String(format: "%.1f", px))" cy="\#(String(format: "%.1f", py))" r="3" fill="\#(color)"/>"# }
                svg += #"<text x="\#(margin + panelWidth - 4)" y="\#(top + 16 + Double(serverIndex) * 16)" text-anchor="end" fill="\#(color)">\#(server)</text>"#
            }
        }
        return svg + "</svg>\n"
    }
}
