import Neffos
import NeffosNATS
import NeffosProcess
import NeffosTesting
import Testing

@Suite("NATS exchange conformance", .serialized)
struct NATSConformanceTests {
    @Test("one nats-server, 3 nodes", arguments: ExchangeConformance.checks)
    func singleServer(_ check: ExchangeConformance.Check) async throws {
        try await Self.withServers(1) { servers in
            let faults = ExchangeConformance.Faults(
                disconnect: { _, _ in await servers[0].kill() },
                reconnect: { _, _ in try await servers[0].restart() })
            try await ExchangeConformance(name: "NATS single", faults: faults) { _ in try NATSExchange(url: servers[0].url) }.run(check)
        }
    }

    @Test("Presence on one nats-server, 3 nodes", arguments: ExchangeConformance.presenceChecks)
    func singleServerPresence(_ check: ExchangeConformance.Check) async throws {
        try await Self.withServers(1) { servers in
            // No faults: killing the one server would cut every node, not one.
            try await ExchangeConformance(name: "NATS single") { _ in try NATSExchange(url: servers[0].url) }.run(check)
        }
    }

    @Test("Presence on a 3-server NATS cluster, each node on its own server only", arguments: ExchangeConformance.presenceChecks)
    func clusterPresence(_ check: ExchangeConformance.Check) async throws {
        try await Self.withServers(3) { servers in
            // Each node knows only its own server: killing it cuts that node off (a partition),
            // and the others still reach each other through the routes.
            try await ExchangeConformance(name: "NATS cluster", faults: Self.killingOwnServer(servers)) { node in
                try NATSExchange(url: "nats://127.0.0.1:\(servers[node].clientPort)?discovered=false")
            }.run(check)
        }
    }

    @Test("a 3-server NATS cluster, each node on its own server", arguments: ExchangeConformance.checks)
    func cluster(_ check: ExchangeConformance.Check) async throws {
        try await Self.withServers(3) { servers in
            try await ExchangeConformance(name: "NATS cluster", faults: Self.killingOwnServer(servers)) { node in
                // Each node prefers its own server and fails over to the others.
                let ordered = [servers[node]] + servers.enumerated().filter { $0.offset != node }.map(\.element)
                return try NATSExchange(url: "nats://" + ordered.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ","))
            }.run(check)
        }
    }

    /// Runs `body` with `count` nats-server processes (one, or a cluster joined by routes),
    /// and stops them whatever happens.
    static func withServers(_ count: Int, _ body: ([NATSServer]) async throws -> Void) async throws {
        let servers = count == 1 ? [try await NATSServer.start()] : try await NATSServer.startCluster(size: count)
        do {
            try await body(servers)
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    /// Faults that kill node *i*'s own server, then restart it and wait for its routes.
    static func killingOwnServer(_ servers: [NATSServer]) -> ExchangeConformance.Faults {
        ExchangeConformance.Faults(
            disconnect: { index, _ in await servers[index].kill() },
            reconnect: { index, _ in
                try await servers[index].restart()
                try await servers[index].waitForRoutes(servers.count - 1)
            })
    }
}
