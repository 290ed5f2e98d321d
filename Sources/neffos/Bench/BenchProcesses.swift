import Foundation
import Neffos
import NeffosProcess

/// The processes a benchmark starts: bench servers, the raw NIO server, nats-server. All of
/// them are stopped when the run ends, fails, is interrupted, or overruns its time limit.
enum BenchProcesses {
    private static let children = Locked<[ChildProcess]>([])
    private static let natsServers = Locked<[NATSServer]>([])

    /// A server started for a benchmark: its WebSocket URL and PID.
    struct Server: Sendable {
        let url: String
        let pid: Int32
    }

    /// Starts `neffos-bench-server` (or `neffos-raw-server` when `raw`), optionally on
    /// `exchange` and with `extra` arguments, and waits until it listens.
    static func startServer(raw: Bool, exchange: String? = nil, arguments extra: [String] = []) async throws -> Server {
        let name = raw ? "neffos-raw-server" : "neffos-bench-server"
        let path: String
        do {
            path = try ChildProcess.sibling(name)
        } catch {
            throw ToolError("\(error); benchmarks want `swift build -c release --traits NATS`")
        }
        var arguments = ["--port", "0"]
        if let exchange { arguments += ["--exchange", exchange] }
        arguments += extra
        let process = try ChildProcess.start(path, arguments)
        children.withLock { $0.append(process) }
        let line: String
        do {
            line = try await process.waitForOutput(containing: "listening on", timeout: .seconds(30))
        } catch {
            throw ToolError("\(name) did not start: \(error)")
        }
        let words = line.split(separator: " ")
        guard let port = words.firstIndex(of: "on").flatMap({ Int(words[$0 + 1]) }),
              let pid = words.firstIndex(of: "pid").flatMap({ Int32(words[$0 + 1]) })
        else { throw ToolError("unexpected line from \(name): \(line)") }
        return Server(url: "ws://127.0.0.1:\(port)/", pid: pid)
    }

    /// Starts a `nats-server` on a free port (with JetStream on when asked).
    static func startNATS(jetStream: Bool = false) async throws -> NATSServer {
        let server = try await NATSServer.start(name: "bench-nats", jetStream: jetStream)
        natsServers.withLock { $0.append(server) }
        return server
    }

    /// Starts a generator process of this tool (`neffos bench hold …`), stopped with the rest.
    static func startGenerator(_ arguments: [String]) throws -> ChildProcess {
        let process = try ChildProcess.start(try ChildProcess.sibling("neffos"), arguments)
        children.withLock { $0.append(process) }
        return process
    }

    /// The open-file limit (soft, hard) of process `pid`, from `/proc/PID/limits`.
    static func fileLimit(of pid: Int32) -> (soft: Int, hard: Int)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") })
        else { return nil }
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        guard numbers.count >= 2 else { return nil }
        return (numbers[0], numbers[1])
    }

    /// Stops everything started so far.
    static func stopAll() async {
        let processes = children.withLock { list in
            defer { list = [] }
            return list
        }
        for process in processes {
            process.terminate()
            await process.waitForExit(timeout: .seconds(5))
        }
        let servers = natsServers.withLock { list in
            defer { list = [] }
            return list
        }
        for server in servers { await server.stop() }
    }

    /// Kills everything at once (from a signal handler or the watchdog).
    static func killAllNow() {
        for process in children.withLock({ $0 }) { process.terminate(signal: SIGKILL) }
        for server in natsServers.withLock({ $0 }) {
            if let pid = server.pid { kill(pid, SIGKILL) }
        }
    }

    /// The CPU time (user + system) the processes `pids` have spent, in seconds, summed (a
    /// process that is gone counts 0).
    static func cpuSeconds(of pids: [Int32]) -> Double {
        pids.reduce(0) { $0 + (ProcessSample(pid: $1)?.cpuSeconds ?? 0) }
    }

    /// The resident memory of process `pid`, in bytes (Linux `/proc`).
    static func residentBytes(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }

    /// Raises this process's open-file limit to its hard limit (10,000 connections need
    /// 10,000 descriptors).
    static func raiseFileLimit() -> Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(limit.rlim_cur)
    }
}

/// What stops a command of the tool, said plainly.
struct ToolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
