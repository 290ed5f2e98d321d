import Foundation
import Neffos
import NIOCore
import NIOPosix
import Synchronization

/// A real `nats-server` for tests: started on free ports on 127.0.0.1 (one server, or a
/// cluster with routes), waited for until it accepts, and stopped by its PID.
///
/// ```swift
/// let servers = try await NATSServer.startCluster(size: 3)
/// defer { Task { for server in servers { await server.stop() } } }
/// let exchange = try NATSExchange(url: servers[0].url)
/// ```
public final class NATSServer: Sendable {
    /// The server's name in its cluster.
    public let name: String
    /// The client port.
    public let clientPort: Int
    /// The HTTP monitoring port (`/varz`, `/connz`, `/routez`, `/subsz`).
    public let monitorPort: Int
    /// The route port, for a cluster member.
    public let clusterPort: Int?
    private let clusterName: String?
    private let routes: [Int]
    /// Whether JetStream is on (file storage in the server's folder, kept across restarts).
    public let jetStream: Bool
    private let directory: String
    private let process: Locked<ChildProcess?>

    private init(name: String, clientPort: Int, monitorPort: Int, clusterPort: Int?, clusterName: String?,
                 routes: [Int], jetStream: Bool, directory: String, process: ChildProcess) {
        self.jetStream = jetStream
        self.name = name
        self.clientPort = clientPort
        self.monitorPort = monitorPort
        self.clusterPort = clusterPort
        self.clusterName = clusterName
        self.routes = routes
        self.directory = directory
        self.process = Locked(process)
    }

    /// `nats://127.0.0.1:<clientPort>`.
    public var url: String { "nats://127.0.0.1:\(clientPort)" }

    /// The running process's PID (from its pid file), or `nil` when stopped.
    public var pid: Int32? {
        guard process.withLock({ $0 }) != nil else { return nil }
        return (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    private var pidFile: String { directory + "/\(name).pid" }

    /// The environment variable that names a `nats-server` executable to use instead of the
    /// one found on `PATH`.
    public static let executableVariable = "NEFFOS_NATS_SERVER"

    /// The `nats-server` executable: ``executableVariable`` if set, else the first on `PATH`
    /// (or in the usual system folders).
    ///
    /// - Throws: when it is not installed, saying how to install it.
    public static func executable() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let chosen = environment[executableVariable], !chosen.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: chosen) else {
                throw ProcessError(description: "\(executableVariable) names \(chosen), which is not an executable nats-server: install it with `apt-get install nats-server` (Debian) or `brew install nats-server` (macOS), or unset \(executableVariable)")
            }
            return chosen
        }
        let path = environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"]
        for directory in candidates {
            let file = directory + "/nats-server"
            if FileManager.default.isExecutableFile(atPath: file) { return file }
        }
        throw ProcessError(description: "nats-server is not installed: install it with `apt-get install nats-server` (Debian) or `brew install nats-server` (macOS), or run scripts/test, which does")
    }

    /// Starts one server; with `clusterName`, it also listens for routes and connects to the
    /// route ports `routes`; with `jetStream`, JetStream is on (`-js`), its file storage in the
    /// server's own temporary folder, which a ``restart()`` keeps.
    public static func start(
        name: String = "nats-1", clusterName: String? = nil, routes: [Int] = [],
        clientPort: Int = -1, monitorPort: Int = -1, clusterPort: Int = -1, jetStream: Bool = false
    ) async throws -> NATSServer {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-nats-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (process, ports) = try await launch(
            name: name, directory: directory, clientPort: clientPort, monitorPort: monitorPort,
            clusterName: clusterName, clusterPort: clusterPort, routes: routes, jetStream: jetStream)
        return NATSServer(name: name, clientPort: ports.client, monitorPort: ports.monitor, clusterPort: ports.cluster,
                          clusterName: clusterName, routes: routes, jetStream: jetStream, directory: directory, process: process)
    }

    /// Runs `body` with a server started as ``start(name:clusterName:routes:clientPort:monitorPort:clusterPort:jetStream:)``
    /// starts one, and stops it whatever happens.
    public static func with<T>(name: String = "nats-1", jetStream: Bool = false, _ body: (NATSServer) async throws -> T) async throws -> T {
        let server = try await start(name: name, jetStream: jetStream)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    /// Starts `size` servers joined by routes (each routes to the first; they gossip the rest),
    /// and waits until each sees all the others.
    public static func startCluster(size: Int = 3, name: String = "neffos-test") async throws -> [NATSServer] {
        var servers: [NATSServer] = []
        do {
            let first = try await start(name: "nats-1", clusterName: name)
            servers.append(first)
            for index in 2...max(2, size) {
                servers.append(try await start(name: "nats-\(index)", clusterName: name, routes: [first.clusterPort!]))
            }
            for server in servers { try await server.waitForRoutes(size - 1) }
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        return servers
    }

    private static func launch(
        name: String, directory: String, clientPort: Int, monitorPort: Int,
        clusterName: String?, clusterPort: Int, routes: [Int], jetStream: Bool
    ) async throws -> (ChildProcess, (client: Int, monitor: Int, cluster: Int?)) {
        var arguments = ["-a", "127.0.0.1", "-p", "\(clientPort)", "-m", "\(monitorPort)", "-P", directory + "/\(name).pid", "-n", name]
        if jetStream { arguments += ["-js", "-sd", directory + "/jetstream"] }
        if let clusterName {
            arguments += ["--cluster", "nats://127.0.0.1:\(clusterPort)", "--cluster_name", clusterName]
            if !routes.isEmpty { arguments += ["--routes", routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")] }
        }
        let process = try ChildProcess.start(try executable(), arguments)
        do {
            let client = try port(in: try await process.waitForOutput(containing: "Listening for client connections on"))
            let monitor = try port(in: try await process.waitForOutput(containing: "Starting http monitor on"))
            _ = try await process.waitForOutput(containing: "Server is ready")
            var cluster: Int?
            if clusterName != nil {
                cluster = try port(in: try await process.waitForOutput(containing: "Listening for route connections on"))
            }
            return (process, (client, monitor, cluster))
        } catch {
            process.terminate(signal: SIGKILL)
            await process.waitForExit()
            throw error
        }
    }

    private static func port(in line: String) throws -> Int {
        guard let text = line.split(separator: ":").last, let port = Int(text.trimmingCharacters(in: .whitespaces)) else {
            throw ProcessError(description: "no port in nats-server's line \"\(line)\"")
        }
        return port
    }

    /// Stops the server (SIGTERM to its PID, then SIGKILL if it lingers) and waits for it.
    public func stop() async {
        guard let process = process.withLock({ $0.take() }) else { return }
        process.terminate()
        await process.waitForExit(timeout: .seconds(5))
    }

    /// Kills the server at once (SIGKILL to its PID): the abrupt outage of a crash.
    public func kill() async {
        guard let process = process.withLock({ $0.take() }) else { return }
        process.terminate(signal: SIGKILL)
        await process.waitForExit(timeout: .seconds(5))
    }

    /// Starts the server again on the same ports (after ``stop()`` or ``kill()``).
    public func restart() async throws {
        await stop()
        let (process, _) = try await Self.launch(
            name: name, directory: directory, clientPort: clientPort, monitorPort: monitorPort,
            clusterName: clusterName, clusterPort: clusterPort ?? -1, routes: routes, jetStream: jetStream)
        self.process.withLock { $0 = process }
    }

    /// The body of a monitoring endpoint (`varz`, `connz`, `routez`, `subsz`).
    public func monitor(_ endpoint: String) async throws -> String {
        try await LoopbackHTTP.request("GET", port: monitorPort, path: "/\(endpoint)").body
    }

    /// The number of client connections the server has now (from `/connz`).
    public func connectionCount() async throws -> Int {
        let body = try await monitor("connz")
        guard let data = body.data(using: .utf8),
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let count = object["num_connections"] as? Int
        else { throw ProcessError(description: "unexpected /connz: \(body.prefix(200))") }
        return count
    }

    /// Waits until the server has logged `count` route connections (since it last started).
    public func waitForRoutes(_ count: Int, timeout: Duration = .seconds(10)) async throws {
        guard count > 0, let process = process.withLock({ $0 }) else { return }
        _ = try await process.waitForOutput(containing: "Route connection created", count: count, timeout: timeout)
    }
}
