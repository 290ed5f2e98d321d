import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Testing

/// Two nodes on a loopback bus, a recording client on each, the paths warmed up.
func faultCluster(_ bus: LoopbackExchange, waitForNodes: Bool = true) async throws -> (TestCluster, [Received]) {
    // Heartbeats would pass through the faults too: one at start, then none for the test.
    let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
        configuration.presence.heartbeatInterval = .seconds(3600)
        configuration.presence.nodeTimeout = .seconds(7200)
    }) { _ in bus }
    if waitForNodes {
        for server in cluster.servers { try await server.waitForClusterNodes("both nodes") { $0.count == 2 } }
    }
    var received: [Received] = []
    for index in 0..<2 {
        let log = Received()
        let client = try await cluster.client(at: index, namespaces: ["default": log.events()])
        _ = try await client.connect("default")
        received.append(log)
    }
    return (cluster, received)
}

/// Sends `count` numbered broadcasts from node 0, then a marker, and waits for the marker on
/// node 1's client: after it, nothing of the batch is still on its way (same publisher, same
/// subject, except what a fault delays).
func sendBatch(_ cluster: TestCluster, _ count: Int, event: String, to receiver: Received) async throws {
    for index in 0..<count {
        cluster.servers[0].broadcast(Message(namespace: "default", event: EventName(event), body: "\(index)"))
    }
    let marker = "marker-\(event)"
    cluster.servers[0].broadcast(Message(namespace: "default", event: "marker", body: marker))
    try await receiver.wait("the marker") { $0.contains { $0.bodyString == marker } }
}

@Suite("Loopback faults")
struct LoopbackFaultTests {
    @Test("every envelope is recorded, with where it went")
    func recording() async throws {
        let bus = LoopbackExchange()
        let (cluster, received) = try await faultCluster(bus)
        bus.clearRecords()
        try await sendBatch(cluster, 3, event: "n", to: received[1])
        let records = bus.records
        #expect(records.count == 4)
        #expect(records.allSatisfy { $0.from == "node-0" && $0.deliveredTo == ["node-1"] && $0.subject == "neffos.default.n.default" })
        await cluster.stop()
    }

    @Test("dropped payloads are lost, counted by the bus and found missing by the receiver, and nothing hangs")
    func drops() async throws {
        let bus = LoopbackExchange()
        let (cluster, received) = try await faultCluster(bus)
        // The receiver has seen the publisher's stream before the loss (a loss at the very
        // start of a stream cannot be told from a later start).
        try await sendBatch(cluster, 1, event: "warm", to: received[1])
        bus.dropNext(5)
        try await sendBatch(cluster, 20, event: "n", to: received[1])
        #expect(received[1].bodies("n").count == 15)
        #expect(bus.statistics.dropped == 5)
        #expect(cluster.servers[1].exchangeStatistics?.dropped == 5)
        #expect(cluster.servers[1].exchangeStatistics?.lost == 5, "the receiving node found the gap itself")
        #expect(cluster.servers[0].exchangeStatistics?.lost == 0)
        try await received[0].wait(for: 20, of: "n")
        await cluster.stop()
    }

    @Test("duplicated payloads reach clients once")
    func duplicates() async throws {
        let bus = LoopbackExchange()
        let (cluster, received) = try await faultCluster(bus)
        bus.duplicateNext(10)
        try await sendBatch(cluster, 20, event: "n", to: received[1])
        #expect(bus.duplicatedCount == 10)
        #expect(received[1].bodies("n") == (0..<20).map(String.init))
        await cluster.stop()
    }

    @Test("delayed and reordered payloads arrive once, out of order, without a hang")
    func delayAndReorder() async throws {
        let bus = LoopbackExchange()
        let (cluster, received) = try await faultCluster(bus)
        bus.reorderNext(4)
        try await sendBatch(cluster, 4, event: "r", to: received[1])
        #expect(received[1].bodies("r") == ["3", "2", "1", "0"])
        bus.delayNext(1, by: .milliseconds(100))
        cluster.servers[0].broadcast(Message(namespace: "default", event: "d", body: "late"))
        cluster.servers[0].broadcast(Message(namespace: "default", event: "d", body: "early"))
        try await received[1].wait(for: 2, of: "d")
        #expect(received[1].bodies("d") == ["early", "late"])
        await cluster.stop()
    }

    @Test("a partitioned node neither sends nor receives; losses are counted; healing restores it")
    func partition() async throws {
        let bus = LoopbackExchange()
        let (cluster, received) = try await faultCluster(bus)
        bus.partition("node-1")
        for index in 0..<5 { cluster.servers[0].broadcast(Message(namespace: "default", event: "p", body: "\(index)")) }
        cluster.servers[1].broadcast(Message(namespace: "default", event: "from1", body: "x"))
        #expect(bus.statistics.dropped == 6)
        bus.heal("node-1")
        try await sendBatch(cluster, 2, event: "h", to: received[1])
        #expect(received[1].bodies("p").isEmpty)
        #expect(received[1].bodies("h") == ["0", "1"])
        #expect(received[0].bodies("from1").isEmpty)
        await cluster.stop()
    }

    @Test("a bus outage buffers a node's publishes up to a bound, counts the rest, and resends on reconnect")
    func outage() async throws {
        let bus = LoopbackExchange(outageBufferLimit: 10)
        let (cluster, received) = try await faultCluster(bus)
        bus.disconnect("node-0")
        for index in 0..<15 { cluster.servers[0].broadcast(Message(namespace: "default", event: "o", body: "\(index)")) }
        try await received[0].wait(for: 15, of: "o")
        #expect(bus.statistics.dropped == 5, "past the buffer, publishes are dropped and counted")
        bus.reconnect("node-0")
        try await received[1].wait(for: 10, of: "o")
        #expect(received[1].bodies("o") == (0..<10).map(String.init))
        #expect(cluster.servers[0].exchangeStatistics?.reconnects == 1)
        await cluster.stop()
    }

    @Test("manual delivery makes the interleaving the test's choice")
    func manualDelivery() async throws {
        let bus = LoopbackExchange(mode: .manual)
        let (cluster, received) = try await faultCluster(bus, waitForNodes: false)
        // What start-up published (heartbeats, and the answers they draw), until it settles.
        while bus.deliverAll() > 0 {}
        for index in 0..<3 { cluster.servers[0].broadcast(Message(namespace: "default", event: "m", body: "\(index)")) }
        #expect(bus.pendingCount == 3)
        #expect(received[1].bodies("m").isEmpty)
        bus.deliverNext()
        try await received[1].wait(for: 1, of: "m")
        #expect(received[1].bodies("m") == ["0"])
        #expect(bus.deliverAll() == 2)
        try await received[1].wait(for: 3, of: "m")
        await cluster.stop()
    }
}
