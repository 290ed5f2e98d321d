import ArgumentParser
import Dispatch
import Foundation
import Neffos
import NeffosProcess

/// `neffos cluster`: a NATS cluster and chat nodes on this machine, stopped together.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Run a local cluster: N nats-server processes joined by routes, and N chat nodes, one on each.",
        discussion: """
            Each node is `neffos serve` on its own port with its own NATS server, so a message sent \
            on one node's page reaches the same room on every other node. The URLs are printed once \
            everything listens. Ctrl-C or SIGTERM stops the nodes (clients get close 1001), then the \
            NATS servers. Needs nats-server (Debian: apt-get install nats-server).
            """)

    @Option(help: "Nodes, and NATS servers (1…16).") var nodes = 3
    @Option(help: "The first node's port; the others follow it (0 picks free ports).") var port = 8080
    @Option(help: "The address the nodes listen on.") var host = "127.0.0.1"
    @Option(help: "A configuration file (JSON or YAML) every node reads, as `neffos serve --config`; each node's port, exchange and name come from the cluster.") var config: String?
    @Option(help: "Stop by itself after this many seconds (default: run until Ctrl-C or SIGTERM).") var duration: Int?
    /// Set by the cluster plugin: SwiftPM starts a plugin in a process group of its own and,
    /// on Ctrl-C, ends the plugin, not what the plugin started; so the tool stops everything,
    /// as on Ctrl-C, when its standard input (a pipe from the plugin) ends.
    @Flag(help: .hidden) var stopWithParent = false

    func validate() throws {
        guard (1...16).contains(nodes) else { throw ValidationError("--nodes must be 1…16") }
        guard port == 0 || (1...(65_535 - nodes)).contains(port) else { throw ValidationError("--port must be 0, or leave room for \(nodes) ports") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
    }

    func run() async throws {
        _ = try NATSServer.executable()  // Says how to install it when missing.
        let stop = StopSignals()
        if stopWithParent { stop.stopWhenInputEnds() }
        var servers: [NATSServer] = []
        var children: [(name: String, process: ChildProcess)] = []
        var failure: (any Error)?
        do {
            servers = nodes == 1 ? [try await NATSServer.start(name: "nats-1")] : try await NATSServer.startCluster(size: nodes, name: "neffos-local")
            var lines: [String] = []
            for (index, nats) in servers.enumerated() {
                let name = "node-\(index + 1)"
                let arguments = [
                    "serve", "--host", host, "--port", "\(port == 0 ? 0 : port + index)",
                    "--exchange", nats.url, "--node", name,
                ] + (config.map { ["--config", $0] } ?? [])
                let process = try ChildProcess.start(Self.executablePath, arguments, ownProcessGroup: true)
                children.append((name, process))
                let line = try await process.waitForOutput(containing: "chat page on", timeout: .seconds(30))
                guard let page = line.split(separator: " ").first(where: { $0.hasPrefix("http://") || $0.hasPrefix("https://") }) else {
                    throw ToolError("unexpected line from \(name): \(line)")
                }
                let socket = "ws" + page.dropFirst(4) + "echo"
                lines.append("\(name)  \(page)  \(socket)  (on \(nats.name) \(nats.url), pid \(process.pid))")
            }
            for nats in servers {
                say("\(nats.name)  \(nats.url)  monitor http://127.0.0.1:\(nats.monitorPort)/  pid \(nats.pid.map(String.init) ?? "?")")
            }
            for line in lines { say(line) }
            say("cluster ready: \(nodes) node(s); open the pages above in a browser. Ctrl-C stops everything.")
            failure = await waitForEnd(children: children, stop: stop)
        } catch {
            failure = error
        }
        for (_, process) in children { process.terminate() }
        for (_, process) in children { await process.waitForExit(timeout: .seconds(5)) }
        for server in servers { await server.stop() }
        say("cluster stopped")
        if let failure { throw failure }
    }

    /// Returns when a stop signal arrives or the duration passes (`nil`), or when a node exits
    /// on its own (an error naming it); by then every node has been stopped (SIGTERM, then
    /// SIGKILL after 5 s).
    private func waitForEnd(children: [(name: String, process: ChildProcess)], stop: StopSignals) async -> (any Error)? {
        let timer = duration.map { seconds in
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                stop.cancel()
            }
        }
        defer { timer?.cancel() }
        return await withTaskGroup(of: (any Error)?.self) { group in
            group.addTask {
                await stop.wait()
                return nil
            }
            for (name, process) in children {
                group.addTask {
                    let status = await process.waitUntilExit()
                    guard !stop.stopping else { return nil }
                    return ToolError("\(name) exited by itself (status \(status)); its output:\n\(process.text.suffix(2000))")
                }
            }
            let first = await group.next() ?? nil
            stop.cancel()
            for (_, process) in children { process.terminate() }
            let killer = Task {
                try? await Task.sleep(for: .seconds(5))
                for (_, process) in children { process.terminate(signal: SIGKILL) }
            }
            for await _ in group {}
            killer.cancel()
            return first
        }
    }

    /// This executable, to start the nodes with.
    static var executablePath: String {
        (try? ChildProcess.sibling("neffos")) ?? CommandLine.arguments[0]
    }
}

/// Writes `line` to standard output at once (unbuffered, so a pipe sees it now).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// SIGINT and SIGTERM, turned into something to wait for.
final class StopSignals: Sendable {
    private let sources: Locked<[any DispatchSourceSignal]>
    private let state = Locked<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init() {
        sources = Locked([])
        // Output may go to a pipe that closes first (the cluster plugin relays it and may be
        // stopped by the same Ctrl-C): a failed write must not kill the tool before it has
        // stopped its children.
        signal(SIGPIPE, SIG_IGN)
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.fire() }
            source.resume()
            sources.withLock { $0.append(source) }
        }
    }

    /// Stops as on Ctrl-C when standard input ends: the cluster plugin holds the other end of
    /// a pipe, which closes when the plugin ends, however it ends.
    func stopWhenInputEnds() {
        Thread.detachNewThread { [self] in
            _ = FileHandle.standardInput.readDataToEndOfFile()
            fire()
        }
    }

    /// Waits until a signal arrives or ``cancel()`` is called.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let fired = state.withLock { state -> Bool in
                if !state.fired { state.waiters.append(continuation) }
                return state.fired
            }
            if fired { continuation.resume() }
        }
    }

    /// Ends every wait.
    func cancel() { fire() }

    /// Whether a signal arrived or ``cancel()`` was called.
    var stopping: Bool { state.withLock { $0.fired } }

    private func fire() {
        let waiters = state.withLock { state in
            state.fired = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
