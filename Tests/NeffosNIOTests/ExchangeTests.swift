import Foundation
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

@Suite("Exchange layer")
struct ExchangeTests {
    @Test("subject tokens are valid NATS tokens and injective")
    func subjectTokens() throws {
        let names = ["", "a", "a.b", "*", ">", " ", ";", "日本", "_", "__", "_2E", "a_b", "A-Z", ".", "..", "x y.z", "\u{0}"]
        var tokens: Set<String> = []
        for name in names {
            let token = Subjects.token(name)
            #expect(!token.isEmpty)
            #expect(!token.contains { ".*> \t\n".contains($0) }, "\(name) → \(token)")
            #expect(Subjects.name(fromToken: token) == name)
            #expect(tokens.insert(token).inserted, "two names share \(token)")
        }
        var rng = SplitMix64(seed: 3)
        var seen: [String: String] = [:]
        for _ in 0..<5000 {
            let name = String(decoding: (0..<Int.random(in: 0...6, using: &rng)).map { _ in UInt8.random(in: 32...126, using: &rng) }, as: UTF8.self)
            let token = Subjects.token(name)
            if let other = seen[token] { #expect(other == name, "\(other) and \(name) share \(token)") }
            seen[token] = name
            #expect(Subjects.name(fromToken: token) == name)
        }
    }

    @Test("an exchange URL parses hosts, credentials and options; its description hides the password")
    func exchangeURLs() throws {
        let url = try ExchangeURL("nats://user:s%3Acret@a:4222,b,[::1]:4223/app?name=node1&maxReconnects=5")
        #expect(url.scheme == "nats")
        #expect(url.user == "user" && url.password == "s:cret")
        #expect(url.servers == [.init(host: "a", port: 4222), .init(host: "b", port: nil), .init(host: "::1", port: 4223)])
        #expect(url.path == "app")
        #expect(url.options == ["name": "node1", "maxReconnects": "5"])
        #expect(!url.description.contains("s%3Acret") && url.description.contains("***"))
        #expect(try ExchangeURL("memory://").servers.isEmpty)
        for bad in ["nats", "://x", "nats://a:99999", "nats://a,,b", "nats://a:port", "nats://[::1"] {
            #expect(throws: NeffosError.invalidConfiguration, "\(bad)") { try ExchangeURL(bad) }
        }
    }

    @Test("the registry picks by scheme; an unknown scheme is an error naming the registered ones")
    func registry() throws {
        let registry = ExchangeRegistry([.memory, LoopbackExchange.plugin])
        #expect(registry.schemes == ["loopback", "memory"])
        #expect(try registry.exchange(for: "memory://") as? InProcessExchange === InProcessExchange.shared)
        #expect(try registry.exchange(for: "memory://a") as? InProcessExchange === InProcessExchange.named("a"))
        #expect(try registry.exchange(for: "loopback://t1") as? LoopbackExchange === LoopbackExchange.named("t1"))
        do {
            _ = try registry.exchange(for: "redis://localhost:6379")
            Issue.record("unknown scheme accepted")
        } catch let error as NeffosError {
            #expect(error == .invalidConfiguration)
            #expect(error.detail?.contains("redis://") == true)
            #expect(error.detail?.contains("memory://") == true && error.detail?.contains("loopback://") == true)
        }
        #expect(throws: NeffosError.invalidConfiguration) { try registry.exchange(for: "not a url") }
    }

    @Test("a node subscribes on first interest and unsubscribes on the last, by reference count")
    func interestReferenceCounts() async throws {
        let bus = LoopbackExchange()
        let gone = Log()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.onDisconnect = { conn in gone.append(conn.id) }
        }) { _ in bus }
        let server = cluster.servers[0]
        let nsSubject = "neffos.default.n.default"
        let roomSubject = "neffos.default.r.default.lobby"
        #expect(server.exchangeSubscriptions.isEmpty)
        let a = try await cluster.client(at: 0, namespaces: ["default": Events()])
        let b = try await cluster.client(at: 0, namespaces: ["default": Events()])
        let nsA = try await a.connect("default")
        let nsB = try await b.connect("default")
        #expect(server.exchangeSubscriptions[nsSubject] == 2)
        #expect(server.exchangeSubscriptions["neffos.default.c.\(Subjects.token(a.id))"] == 1)
        try await nsA.joinRoom("lobby")
        try await nsB.joinRoom("lobby")
        #expect(bus.subscribers(of: roomSubject) == ["node-0"])
        try await nsA.leaveRoom("lobby")
        #expect(bus.subscribers(of: roomSubject) == ["node-0"], "one member left")
        let bID = b.id
        await b.close()
        try await gone.wait(for: bID)
        #expect(bus.subscribers(of: roomSubject).isEmpty)
        #expect(server.exchangeSubscriptions[nsSubject] == 1)
        try await nsA.disconnect()
        #expect(bus.subscribers(of: nsSubject).isEmpty)
        #expect(bus.subscribers(of: "neffos.default.node.node-0") == ["node-0"], "the node subject stays")
        await cluster.stop()
        #expect(bus.nodes.isEmpty)
    }

    @Test("Presence: a room's members get the opt-in presence event, as a client sees it, for a join on another node")
    func presenceClientEvent() async throws {
        let bus = InProcessExchange()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.presence.namespaces = ["default"]
            configuration.presence.clientEvent = "presence"
        }) { _ in bus }
        try await cluster.servers[0].waitForClusterNodes("both nodes") { $0.count == 2 }
        let watcher = Received()
        var events = watcher.events()
        events.on("presence") { _, message in watcher.append(message) }
        let here = try await cluster.client(at: 0, namespaces: ["default": events])
        _ = try await here.connect("default").joinRoom("lobby")
        let there = try await cluster.client(at: 1, namespaces: ["default": Events()])
        _ = try await there.connect("default").joinRoom("lobby")
        try await watcher.wait(for: 2, of: "presence")  // its own join, then the other's
        let bodies = watcher.messages.filter { $0.event == "presence" }.map(\.bodyString)
        let other = try #require(bodies.first { $0.contains(there.id) })
        let event = try JSONDecoder().decode(PresenceEvent.self, from: Data(other.utf8))
        #expect(event == PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: there.id, node: "node-1"))
        await cluster.stop()
    }

    @Test("a broadcast nobody else wants is not published")
    func noInterestNoPublish() async throws {
        let bus = InProcessExchange()
        // Heartbeats count as published too: one at start, then none for the test's length.
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events(), "other": Events()], configure: { _, configuration in
            configuration.presence.heartbeatInterval = .seconds(3600)
            configuration.presence.nodeTimeout = .seconds(7200)
        }) { _ in bus }
        try await cluster.servers[0].waitForClusterNodes("both nodes") { $0.count == 2 }
        let before = cluster.servers[0].exchangeStatistics?.published ?? -1
        let here = try await cluster.client(at: 0, namespaces: ["default": Events()])
        _ = try await here.connect("default")
        cluster.servers[0].broadcast(Message(namespace: "default", event: "local only"))
        #expect(cluster.servers[0].exchangeStatistics?.published == before)
        let there = try await cluster.client(at: 1, namespaces: ["default": Events()])
        _ = try await there.connect("default")
        cluster.servers[0].broadcast(Message(namespace: "default", event: "now remote"))
        #expect(cluster.servers[0].exchangeStatistics?.published == before + 1)
        await cluster.stop()
    }

    @Test("exchange statuses reach the application")
    func statuses() async throws {
        let bus = LoopbackExchange()
        let seen = Log()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.onExchangeStatus = { seen.append("\($0)") }
        }) { _ in bus }
        try await seen.wait(for: "connected")
        bus.disconnect("node-1")
        try await seen.wait(for: "disconnected (loopback fault)")
        bus.reconnect("node-1")
        try await seen.wait(for: "reconnected")
        await cluster.stop()
        try await seen.wait(for: "closed")
    }
}

