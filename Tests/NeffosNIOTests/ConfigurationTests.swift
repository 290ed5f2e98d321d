import Configuration
import Foundation
import Neffos
import NeffosNIO
import NeffosProcess
import Testing

/// Settings through swift-configuration: the keys, their order (flags, then the environment,
/// then a JSON or YAML file), and one line naming the key of a wrong value.
@Suite("Configuration")
struct ConfigurationTests {
    /// Writes `text` to a new file named `name` in a folder of its own; returns its path.
    func file(_ name: String, _ text: String) throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let url = folder.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    @Test("flags win over the environment, which wins over the file; YAML and JSON files read alike")
    func precedence() async throws {
        let yaml = try file("neffos.yaml", """
            neffos:
              node:
                name: from-file
              cluster:
                name: blue
              limits:
                rooms: 7
                messageBytes: 64KiB
              timeouts:
                ask: 1500ms
                handshake: none
              heartbeat:
                interval: off
            """)
        let environment = ["NEFFOS_NODE_NAME": "from-env", "NEFFOS_LIMITS_PENDING_ASKS": "9"]
        let reader = try await Server.Configuration.reader(overrides: [:], file: yaml, environment: environment)
        let configuration = try Server.Configuration(config: reader)
        #expect(configuration.nodeName == "from-env")
        #expect(configuration.clusterName == "blue")
        #expect(configuration.maxRoomsPerConnection == 7)
        #expect(configuration.maxPendingAsks == 9)
        #expect(configuration.transport.maxMessageSize == 64 << 10)
        #expect(configuration.askTimeout == .milliseconds(1500))
        #expect(configuration.handshakeTimeout == nil)
        #expect(configuration.transport.pingInterval == nil)
        #expect(configuration.maxNameLength == Server.Configuration().maxNameLength, "what no source holds keeps its default")

        let flagged = try await Server.Configuration.reader(overrides: ["neffos.node.name": "from-flag"], file: yaml, environment: environment)
        #expect(try Server.Configuration(config: flagged).nodeName == "from-flag")

        let json = try file("neffos.json", #"{"neffos": {"limits": {"rooms": 3, "connections": "none"}, "broadcast": {"strictOrdering": true}, "origins": "https://a.example, https://b.example"}}"#)
        let fromJSON = try Server.Configuration(config: try await Server.Configuration.reader(file: json, environment: [:]))
        #expect(fromJSON.maxRoomsPerConnection == 3)
        #expect(fromJSON.transport.maxConnections == nil)
        #expect(fromJSON.strictBroadcastOrdering)
        #expect(fromJSON.transport.allowedOrigins.allows(origin: "https://b.example", host: "x"))
        #expect(!fromJSON.transport.allowedOrigins.allows(origin: "https://c.example", host: "x"))
    }

    @Test("a wrong value names its key and what is wrong; a bad file says why")
    func wrongValues() async throws {
        let cases: [(key: String, value: String, says: String)] = [
            ("NEFFOS_LIMITS_ROOMS", "-5", "neffos.limits.rooms: must be at least 1, got -5"),
            ("NEFFOS_LIMITS_ROOMS", "many", "neffos.limits.rooms: expected a whole number, got \"many\""),
            ("NEFFOS_LIMITS_QUEUED_BYTES", "12 parsecs", "neffos.limits.queuedBytes: expected a number of bytes"),
            ("NEFFOS_TIMEOUTS_ASK", "-1s", "neffos.timeouts.ask: expected a duration"),
            ("NEFFOS_BROADCAST_STRICT_ORDERING", "maybe", "neffos.broadcast.strictOrdering: expected true or false"),
            ("NEFFOS_EXCHANGE_URL", "redis://localhost:6379", "neffos.exchange.url: no exchange is registered for \"redis://\""),
            ("NEFFOS_ORIGINS", "example.com", "neffos.origins: expected same-origin, any, or origins"),
            ("NEFFOS_NODE_NAME", " ", "neffos.node.name: is empty"),
            ("NEFFOS_PRESENCE_NODE_TIMEOUT", "500ms", "neffos.presence.nodeTimeout: must be more than presence.heartbeatInterval"),
            ("NEFFOS_HISTORY_ROOMS", "lobby", "neffos.history.rooms: each item is namespace/rooms"),
            ("NEFFOS_HISTORY_MAX_COUNT", "0", "neffos.history.maxCount: must be at least 1, got 0"),
            ("NEFFOS_HISTORY_STORE_URL", "redis://localhost", "neffos.history.store.url: no history store is registered for \"redis://\""),
            ("NEFFOS_HISTORY_STORE_URL", "memory://?maxStreams=0", "neffos.history.store.url: maxStreams must be a whole number of at least 1"),
        ]
        for (key, value, says) in cases {
            let reader = try await Server.Configuration.reader(environment: [key: value])
            do {
                _ = try Server.Configuration(config: reader)
                Issue.record("\(key)=\(value) was accepted")
            } catch {
                #expect(error == .invalidConfiguration)
                #expect(error.description.contains(says), "\(error)")
                #expect(!error.description.contains("\n") || key.hasSuffix("_URL"), "one line: \(error)")
            }
        }
        await #expect(throws: NeffosError.invalidConfiguration) { _ = try await Server.Configuration.reader(file: "/nonexistent/neffos.yaml") }
        let toml = try file("neffos.toml", "a = 1")
        await #expect(throws: NeffosError.invalidConfiguration) { _ = try await Server.Configuration.reader(file: toml) }
        let broken = try file("broken.json", "{ not json")
        await #expect(throws: NeffosError.invalidConfiguration) { _ = try await Server.Configuration.reader(file: broken) }
    }

    @Test("the listener reads its address, path and TLS files; a missing certificate file or a key alone names its key")
    func listenerKeys() async throws {
        let server = try Server(namespaces: [:])
        let reader = try await Server.Configuration.reader(
            overrides: ["neffos.listener.port": "0", "neffos.listener.path": "/ws"], environment: ["NEFFOS_LISTENER_HOST": "127.0.0.2"])
        let listener = try WebSocketListener(server: server, config: reader)
        #expect(listener.host == "127.0.0.2" && listener.path == "/ws" && listener.tls == nil)

        let ca = try TestCA()
        defer { ca.remove() }
        let files = try ca.issue("server")
        let secure = try WebSocketListener(
            server: server,
            config: try await Server.Configuration.reader(
                overrides: ["neffos.listener.tls.certificate": files.chain, "neffos.listener.tls.key": files.key], environment: [:]))
        #expect(secure.tls?.certificateChainPath == files.chain)

        let wrong: [([String: String], String)] = [
            (["neffos.listener.port": "70000"], "neffos.listener.port: must be at most 65535"),
            (["neffos.listener.tls.certificate": files.chain], "neffos.listener.tls.key: missing"),
            (["neffos.listener.tls.certificate": "/nonexistent/chain.pem", "neffos.listener.tls.key": files.key],
             "neffos.listener.tls.certificate: no such file: /nonexistent/chain.pem"),
            (["neffos.listener.tls.certificate": files.chain, "neffos.listener.tls.key": files.chain], "neffos.listener.tls.key: no readable PEM private key"),
        ]
        for (overrides, says) in wrong {
            do {
                _ = try WebSocketListener(server: server, config: try await Server.Configuration.reader(overrides: overrides, environment: [:]))
                Issue.record("\(overrides) was accepted")
            } catch {
                #expect(error.description.contains(says), "\(error)")
            }
        }
    }

    @Test("neffos serve --config reads a YAML file (TLS included), an environment variable overrides it, and a wrong value stops it with one line")
    func serveWithConfigFile() async throws {
        let ca = try TestCA()
        defer { ca.remove() }
        let files = try ca.issue("server")
        let yaml = try file("serve.yaml", """
            neffos:
              node:
                name: from-file
              limits:
                rooms: 1
              listener:
                port: 0
                tls:
                  certificate: \(files.chain)
                  key: \(files.key)
            """)
        let serve = try ChildProcess.start(
            try ChildProcess.sibling("neffos"), ["serve", "--config", yaml], environment: ["NEFFOS_NODE_NAME": "from-env"])
        defer { serve.terminate(signal: SIGKILL) }
        let line = try await serve.waitForOutput(containing: "chat page on https://127.0.0.1:", timeout: .seconds(30))
        #expect(line.contains("node from-env"), "the environment wins over the file: \(line)")
        let port = try #require(Int(line.split(separator: ":").last?.split(separator: "/").first ?? ""))
        var configuration = quietClientConfiguration()
        configuration.headers = [("X-Username", "tester")]
        let client = try await Client.dial(
            "wss://127.0.0.1:\(port)/echo", namespaces: ["default": Events()], configuration: configuration,
            tls: try .trusting(certificateAuthorities: ca.caFile.path))
        let ns = try await client.connect("default")
        _ = try await ns.joinRoom("lobby")
        await #expect(throws: NeffosError.limitExceeded, "neffos.limits.rooms: 1 from the file") { _ = try await ns.joinRoom("second") }
        await client.close()
        serve.terminate()
        #expect(await serve.waitForExit() == 0)

        let wrong = try ChildProcess.start(
            try ChildProcess.sibling("neffos"), ["serve", "--config", yaml, "--port", "0"], environment: ["NEFFOS_LIMITS_ROOMS": "-5"])
        #expect(await wrong.waitForExit() == 2)
        let errors = wrong.text.split(separator: "\n").filter { $0.contains("cannot start") }
        #expect(errors.count == 1 && errors[0].contains("neffos.limits.rooms: must be at least 1, got -5"), "\(wrong.text)")
    }
}
