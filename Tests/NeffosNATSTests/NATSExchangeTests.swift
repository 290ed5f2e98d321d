import Foundation
import Logging
import NIOCore
import Neffos
import NeffosNATS
import NeffosNIO
import NeffosProcess
import NeffosTesting
import Synchronization
import Testing

/// Statuses a cluster's nodes reported, by node.
final class StatusLog: Sendable {
    private let received = Received()
    func append(node: Int, _ status: ExchangeStatus) {
        received.append(Message(event: "status", body: "\(node):\(status)"))
    }
    func wait(_ what: String, timeout: Duration = .seconds(20), _ predicate: @escaping @Sendable ([String]) -> Bool) async throws {
        try await received.wait(what, timeout: timeout) { messages in predicate(messages.map(\.bodyString)) }
    }
    var entries: [String] { received.bodies("status") }
}

/// Broadcasts numbered `flow` messages until cancelled, each paced on its own node's local
/// delivery (which goes on during a bus outage), so the flow never floods the machine.
func flow(_ cluster: TestCluster, _ received: [Received], route: @escaping @Sendable (Int) -> (node: Int, room: String)) -> Task<Void, Never> {
    Task {
        var index = 0
        while !Task.isCancelled {
            let (node, room) = route(index)
            let body = "\(index)"
            cluster.servers[node].broadcast(Message(namespace: "default", room: room, event: "flow", body: body))
            try? await received[node].wait("own flow \(index)", timeout: .seconds(5)) { messages in
                messages.contains { $0.event == "flow" && $0.bodyString == body }
            }
            index += 1
        }
    }
}

@Suite("NATS exchange", .serialized)
struct NATSExchangeTests {
    @Test("URLs become options; bad ones are errors that say why")
    func urls() throws {
        let exchange = try NATSExchange(url: "nats://u:p@a:4222,b?name=web-1&reconnectWait=100&maxReconnects=-1&pendingMessages=10")
        #expect(exchange.options.servers == ["nats://a:4222", "nats://b:4222"])
        #expect(exchange.options.user == "u" && exchange.options.password == "p")
        #expect(exchange.options.name == "web-1")
        #expect(exchange.options.reconnectWait == .milliseconds(100))
        #expect(exchange.options.maxReconnects == nil)
        #expect(exchange.options.pendingMessagesLimit == 10)
        #expect(try NATSExchange(url: "tls://a").options.tls)
        #expect(throws: NeffosError.invalidConfiguration) { try NATSExchange(url: "nats://a?bogus=1") }
        #expect(throws: NeffosError.invalidConfiguration) { try NATSExchange(url: "nats://a?reconnectWait=soon") }
        #expect(throws: NeffosError.invalidConfiguration) { try NATSExchange(url: "memory://") }
        let registry = ExchangeRegistry([.memory, .nats])
        #expect(try registry.exchange(for: "nats://127.0.0.1:4222") is NATSExchange)
    }

    @Test("no server reachable: a clear start-up error, no hang")
    func noServer() async throws {
        let server = try await NATSServer.start()
        let port = server.clientPort
        await server.stop()
        var options = NATSExchange.Options(servers: ["nats://127.0.0.1:\(port)"])
        options.connectTimeout = .milliseconds(500)
        do {
            _ = try await NATSExchange(options: options).connect(node: "n", logger: Logger(label: "t"), deliver: { _, _ in }, status: { _ in })
            Issue.record("connect should fail")
        } catch let error as NeffosError {
            #expect(error == .dialFailed)
            #expect(error.detail?.contains("nats-server") == true)
        }
    }

    @Test("one NATS connection per node, however many WebSocket clients")
    func oneConnectionPerNode() async throws {
        let server = try await NATSServer.start()
        let cluster = try await TestCluster.start(nodes: 3, namespaces: ["default": Events()]) { _ in try NATSExchange(url: server.url) }
        for node in 0..<3 {
            for _ in 0..<10 {
                let client = try await cluster.client(at: node, namespaces: ["default": Events()])
                _ = try await client.connect("default").joinRoom("room-\(node)")
            }
        }
        #expect(try await server.connectionCount() == 3)
        await cluster.stop()
        await server.stop()
    }

    @Test("single server killed while broadcasts flow: nodes reconnect after its restart, losses are counted")
    func singleServerOutage() async throws {
        let server = try await NATSServer.start()
        let statuses = StatusLog()
        let cluster = try await TestCluster.start(nodes: 3, namespaces: ["default": Events()], configure: { node, configuration in
            configuration.onExchangeStatus = { statuses.append(node: node, $0) }
        }) { _ in
            var options = NATSExchange.Options(servers: [server.url])
            options.reconnectBufferBytes = 256  // tiny, so that an outage overflows it
            return NATSExchange(options: options)
        }
        var received: [Received] = []
        for node in 0..<3 {
            let log = Received()
            let client = try await cluster.client(at: node, namespaces: ["default": log.events()])
            _ = try await client.connect("default")
            received.append(log)
        }
        for node in 0..<3 { try await cluster.waitUntilReachable(from: node, receivers: received) }

        let flowing = flow(cluster, received) { index in (index % 3, "") }
        try await received[1].wait(for: 50, of: "flow")
        await server.kill()
        try await statuses.wait("every node disconnected") { entries in (0..<3).allSatisfy { node in entries.contains("\(node):disconnected (lost the connection to NATS; reconnecting)") } }
        // Whatever the flow managed meanwhile, this is past the reconnect buffer.
        for index in 0..<20 { cluster.servers[0].broadcast(Message(namespace: "default", event: "burst", body: "\(index)")) }
        try await server.restart()
        try await statuses.wait("every node reconnected") { entries in (0..<3).allSatisfy { entries.contains("\($0):reconnected") } }
        flowing.cancel()
        _ = await flowing.value
        for node in 0..<3 { try await cluster.waitUntilReachable(from: node, receivers: received) }
        let dropped = cluster.servers.compactMap(\.exchangeStatistics).reduce(0) { $0 + $1.dropped }
        #expect(dropped > 0, "publishes past the small reconnect buffer are counted as dropped")
        #expect(cluster.servers.allSatisfy { ($0.exchangeStatistics?.reconnects ?? 0) >= 1 })
        await cluster.stop()
        await server.stop()
    }

    @Test("cluster: the server a node uses dies; the node fails over and broadcasts flow again")
    func clusterFailover() async throws {
        let servers = try await NATSServer.startCluster(size: 3)
        let statuses = StatusLog()
        let cluster = try await TestCluster.start(nodes: 3, namespaces: ["default": Events()], configure: { node, configuration in
            configuration.onExchangeStatus = { statuses.append(node: node, $0) }
        }) { node in
            let ordered = [servers[node]] + servers.enumerated().filter { $0.offset != node }.map(\.element)
            return try NATSExchange(url: "nats://" + ordered.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ","))
        }
        var received: [Received] = []
        for node in 0..<3 {
            let log = Received()
            let client = try await cluster.client(at: node, namespaces: ["default": log.events()])
            _ = try await client.connect("default").joinRoom("r")
            received.append(log)
        }
        for node in 0..<3 { try await cluster.waitUntilReachable(from: node, room: "r", receivers: received) }
        let flowing = flow(cluster, received) { _ in (0, "r") }
        try await received[1].wait(for: 50, of: "flow")
        await servers[1].kill()
        try await statuses.wait("node 1 failed over") { $0.contains("1:reconnected") }
        flowing.cancel()
        _ = await flowing.value
        for node in 0..<3 { try await cluster.waitUntilReachable(from: node, room: "r", receivers: received) }
        let bodies = received[1].bodies("flow")
        #expect(Set(bodies).count == bodies.count, "no duplicates across the failover")
        #expect((cluster.servers[1].exchangeStatistics?.reconnects ?? 0) >= 1)
        await cluster.stop()
        for server in servers { await server.stop() }
    }

    @Test("a server ask from node A is answered by a client on node B, over NATS")
    func askAcrossNATS() async throws {
        let servers = try await NATSServer.startCluster(size: 2)
        let cluster = try await TestCluster.start(nodes: 3, namespaces: ["default": Events()]) { node in
            try NATSExchange(url: servers[node % 2].url)
        }
        let received = Received()
        let client = try await cluster.client(at: 1, namespaces: ["default": received.events(answering: ["question": { m in Reply("B says yes to \(m.bodyString)") }])])
        _ = try await client.connect("default")
        try await cluster.waitUntilReachable(from: 0, to: client.id, receivers: [received])
        let answer = try await cluster.servers[0].ask(Message(namespace: "default", event: "question", body: "ok?"), to: client.id, timeout: .seconds(10))
        #expect(answer.bodyString == "B says yes to ok?")
        await cluster.stop()
        for server in servers { await server.stop() }
    }

    @Test("closing a connection stops deliveries: nothing arrives after close returns")
    func noDeliveryAfterClose() async throws {
        let server = try await NATSServer.start()
        let count = Atomic<Int>(0)
        let closed = Atomic<Bool>(false)
        let late = Atomic<Int>(0)
        let receiver = try await NATSExchange(url: server.url).connect(node: "r", logger: Logger(label: "t"), deliver: { _, _ in
            count.add(1, ordering: .relaxed)
            if closed.load(ordering: .relaxed) { late.add(1, ordering: .relaxed) }
        }, status: { _ in })
        let sender = try await NATSExchange(url: server.url).connect(node: "s", logger: Logger(label: "t"), deliver: { _, _ in }, status: { _ in })
        receiver.subscribe("neffos.test.a")
        try await receiver.flush()
        var payload = ByteBuffer()
        payload.writeString("x")
        for _ in 0..<2000 { sender.publish(payload, to: "neffos.test.a") }
        try await sender.flush()
        await receiver.close()
        closed.store(true, ordering: .relaxed)
        for _ in 0..<200 { sender.publish(payload, to: "neffos.test.a") }
        try await sender.flush()
        #expect(late.load(ordering: .relaxed) == 0)
        #expect(count.load(ordering: .relaxed) <= 2000)
        await sender.close()
        await server.stop()
    }
}

/// What a bare exchange connection received and reported.
final class BusLog: Sendable {
    let payloads = Received()
    let statuses = StatusLog()

    func deliver(_ subject: String, _ payload: ByteBuffer) {
        payloads.append(Message(event: EventName(subject), body: payload))
    }
}

@Suite("NATS exchange connection")
struct NATSConnectionTests {
    func connect(_ exchange: NATSExchange, node: String, log: BusLog) async throws -> any ExchangeConnection {
        try await exchange.connect(
            node: node, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
            deliver: { subject, payload in log.deliver(subject, payload) },
            status: { status in log.statuses.append(node: 0, status) })
    }

    @Test("no echo: a node never receives what it published itself, even on a subject it subscribed to")
    func noEcho() async throws {
        let nats = try await NATSServer.start()
        let exchange = try NATSExchange(url: nats.url)
        let (logA, logB) = (BusLog(), BusLog())
        let a = try await connect(exchange, node: "a", log: logA)
        let b = try await connect(exchange, node: "b", log: logB)
        a.subscribe("neffos.test")
        try await a.flush()
        a.publish(ByteBuffer(string: "from a"), to: "neffos.test")
        try await a.flush()
        b.publish(ByteBuffer(string: "from b"), to: "neffos.test")
        try await b.flush()
        // NATS keeps one publisher's order on a subject; b's message comes after a's would have.
        try await logA.payloads.wait(for: 1, of: "neffos.test")
        #expect(logA.payloads.bodies("neffos.test") == ["from b"])
        await a.close()
        await b.close()
        await nats.stop()
    }

    @Test("a subscriber that cannot keep up gets slow-consumer statuses, and the drops are counted")
    func slowConsumer() async throws {
        let nats = try await NATSServer.start()
        var options = NATSExchange.Options(servers: [nats.url])
        options.pendingMessagesLimit = 1
        let slowLog = BusLog()
        let slow = try await connect(NATSExchange(options: options), node: "slow", log: slowLog)
        let fast = try await connect(try NATSExchange(url: nats.url), node: "fast", log: BusLog())
        slow.subscribe("neffos.flood")
        try await slow.flush()
        let payload = ByteBuffer(repeating: 0x78, count: 256)
        // Bursts until nats.c reports the overflow (each burst far beyond a one-message queue).
        let deadline = ContinuousClock.now + .seconds(20)
        while !slowLog.statuses.entries.contains(where: { $0.contains("slow consumer") }) {
            guard ContinuousClock.now < deadline else { break }
            for _ in 0..<20_000 { fast.publish(payload, to: "neffos.flood") }
            try await fast.flush()
            try? await slowLog.statuses.wait("a slow-consumer status", timeout: .milliseconds(500)) { entries in
                entries.contains { $0.contains("slow consumer") }
            }
        }
        #expect(slowLog.statuses.entries.contains { $0.contains("slow consumer") }, "statuses: \(slowLog.statuses.entries.suffix(5))")
        #expect(slow.statistics.dropped > 0)
        await slow.close()
        await fast.close()
        await nats.stop()
    }
}
