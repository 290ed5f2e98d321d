import Neffos
import NeffosNATS
import NeffosProcess
import NeffosTesting
import Testing

@Suite("NATS exchange conformance", .serialized)
struct NATSConformanceTests {
    @Test("one nats-server, 3 nodes", arguments: ExchangeConformance.checks)
    func singleServer(_ check: ExchangeConformance.Check) async throws {
        let server = try await NATSServer.start()
        let faults = ExchangeConformance.Faults(
            disconnect: { _, _ in await server.kill() },
            reconnect: { _, _ in try await server.restart() })
        do {
            try await ExchangeConformance(name: "NATS single", faults: faults) { _ in
                try NATSExchange(url: server.url)
            }.run(check)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("Presence on one nats-server, 3 nodes", arguments: ExchangeConformance.presenceChecks)
    func singleServerPresence(_ check: ExchangeConformance.Check) async throws {
        let server = try await NATSServer.start()
        do {
            // No faults: killing the one server would cut every node, not one.
            try await ExchangeConformance(name: "NATS single") { _ in try NATSExchange(url: server.url) }.run(check)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("Presence on a 3-server NATS cluster, each node on its own server only", arguments: ExchangeConformance.presenceChecks)
    func clusterPresence(_ check: ExchangeConformance.Check) async throws {
        let servers = try await NATSServer.startCluster(size: 3)
        // Each node knows only its own server: killing it cuts that node off (a partition),
        // and the others still reach each other through the routes.
        let faults = ExchangeConformance.Faults(
            disconnect: { index, _ in await servers[index].kill() },
            reconnect: { index, _ in
                try await servers[index].restart()
                try await servers[index].waitForRoutes(2)
            })
        do {
            try await ExchangeConformance(name: "NATS cluster", faults: faults) { node in
                try NATSExchange(url: "nats://127.0.0.1:\(servers[node].clientPort)?discovered=false")
            }.run(check)
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    @Test("a 3-server NATS cluster, each node on its own server", arguments: ExchangeConformance.checks)
    func cluster(_ check: ExchangeConformance.Check) async throws {
        let servers = try await NATSServer.startCluster(size: 3)
        let faults = ExchangeConformance.Faults(
            disconnect: { index, _ in await servers[index].kill() },
            reconnect: { index, _ in
                try await servers[index].restart()
                try await servers[index].waitForRoutes(2)
            })
        do {
            try await ExchangeConformance(name: "NATS cluster", faults: faults) { node in
                // Each node prefers its own server and fails over to the others.
                let ordered = [servers[node]] + servers.enumerated().filter { $0.offset != node }.map(\.element)
                return try NATSExchange(url: "nats://" + ordered.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ","))
            }.run(check)
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }
}
