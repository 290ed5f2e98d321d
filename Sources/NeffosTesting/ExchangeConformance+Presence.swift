import Neffos

/// The presence checks of ``ExchangeConformance``: cluster-wide listings, nodes that leave,
/// crash, or are cut off and come back, and presence events. Their names start with `Presence`.
extension ExchangeConformance {
    /// Fast heartbeats, so that a silent node is noticed within a second.
    static let presenceTiming: @Sendable (Int, inout Server.Configuration) -> Void = { _, configuration in
        configuration.presence.heartbeatInterval = .milliseconds(100)
        configuration.presence.nodeTimeout = .milliseconds(600)
        configuration.presence.queryTimeout = .seconds(2)
    }

    /// Waits until node `index` sees exactly `nodes` alive.
    func waitForNodes(_ cluster: TestCluster, at index: Int, _ nodes: [String], timeout: Duration = .seconds(10)) async throws {
        do {
            try await cluster.servers[index].waitForClusterNodes("node-\(index) sees \(nodes)", timeout: timeout) { $0 == nodes.sorted() }
        } catch {
            throw ConformanceFailure("\(name): \(error)")
        }
    }

    /// Every node sees all of them.
    func waitForFullCluster(_ cluster: TestCluster) async throws {
        let all = (0..<nodes).map { "node-\($0)" }
        for index in 0..<nodes { try await waitForNodes(cluster, at: index, all) }
    }

    func presenceListing() async throws {
        try await withCluster(configure: Self.presenceTiming) { cluster in
            try await waitForFullCluster(cluster)
            var ids: [String] = []
            for index in 0..<nodes {
                let (client, _, _) = try await member(cluster, at: index, rooms: ["lobby", "room-\(index)"])
                ids.append(client.id)
            }
            // A client that redialled under load leaves its first connection open until the
            // server notices; the count below is of connections, so wait for each node to hold one.
            for index in 0..<nodes {
                do {
                    try await cluster.servers[index].waitForConnectionSlots("node-\(index) holds one connection") { $0 == 1 }
                } catch {
                    throw ConformanceFailure("\(name): \(error)")
                }
            }
            for asker in 0..<nodes {
                let server = cluster.servers[asker]
                let members = try await server.clusterMembers(ofRoom: "lobby", in: "default")
                try expect(members.value == ids.sorted(), "node-\(asker) lists the lobby's members on every node: \(members.value), expected \(ids.sorted())")
                try expect(members.isComplete && members.answered == (0..<nodes).map { "node-\($0)" }, "every node answered: \(members)")
                let rooms = try await server.clusterRooms(in: "default")
                try expect(rooms.value == (["lobby"] + (0..<nodes).map { "room-\($0)" }).sorted(), "node-\(asker) lists every node's rooms: \(rooms.value)")
                let count = try await server.clusterConnectionCount()
                try expect(count.value == nodes, "node-\(asker) counts \(nodes) connections: \(count.value)")
                for id in ids {
                    let online = try await server.isOnline(id)
                    try expect(online.value, "node-\(asker) finds \(id) online")
                }
                let nobody = try await server.isOnline("nobody")
                try expect(!nobody.value && nobody.isComplete, "node-\(asker) finds nobody online, having asked every node: \(nobody)")
            }
        }
    }

    func presenceNodeLeaving() async throws {
        try await withCluster(configure: Self.presenceTiming) { cluster in
            try await waitForFullCluster(cluster)
            let stay = try await member(cluster, at: 1, rooms: ["lobby"])
            _ = try await member(cluster, at: 2, rooms: ["lobby"])
            await cluster.stopNode(2)
            // A goodbye: gone without waiting for the node timeout.
            try await waitForNodes(cluster, at: 0, ["node-0", "node-1"], timeout: .milliseconds(500))
            let members = try await cluster.servers[0].clusterMembers(ofRoom: "lobby", in: "default")
            try expect(members.value == [stay.0.id] && members.isComplete, "the departed node's member is gone, and nobody is missing: \(members)")
        }
    }

    func presenceNodeKilled() async throws {
        try await withCluster(configure: Self.presenceTiming) { cluster in
            try await waitForFullCluster(cluster)
            let stay = try await member(cluster, at: 0, rooms: ["lobby"])
            _ = try await member(cluster, at: 2, rooms: ["lobby"])
            let killed = ContinuousClock.now
            await cluster.servers[2].severExchange()
            // Silence: noticed within the node timeout and one sweep (600 + 100 ms), with slack.
            try await waitForNodes(cluster, at: 0, ["node-0", "node-1"], timeout: .seconds(3))
            try await waitForNodes(cluster, at: 1, ["node-0", "node-1"], timeout: .seconds(3))
            let noticed = ContinuousClock.now - killed
            try expect(noticed < .milliseconds(1_500), "a silent node is dropped within its bound: after \(noticed)")
            let members = try await cluster.servers[1].clusterMembers(ofRoom: "lobby", in: "default")
            try expect(members.value == [stay.0.id] && members.isComplete, "the killed node's member is gone: \(members)")
        }
    }

    func presencePartitionHealed() async throws {
        guard let faults else { return }
        try await withCluster(configure: Self.presenceTiming) { cluster in
            try await waitForFullCluster(cluster)
            let near = try await member(cluster, at: 0, rooms: ["lobby"])
            let far = try await member(cluster, at: 1, rooms: ["lobby"])
            try await faults.disconnect(1, cluster)
            try await waitForNodes(cluster, at: 0, ["node-0", "node-2"], timeout: .seconds(5))
            let during = try await cluster.servers[0].clusterMembers(ofRoom: "lobby", in: "default")
            try expect(during.value == [near.0.id] && during.isComplete, "cut off, node-1's member is out of the answer: \(during)")
            try await faults.reconnect(1, cluster)
            try await waitForFullCluster(cluster)
            let after = try await cluster.servers[0].clusterMembers(ofRoom: "lobby", in: "default")
            try expect(after.value == [near.0.id, far.0.id].sorted() && after.isComplete, "healed, node-1 is re-learned with its member: \(after)")
        }
    }

    func presenceUnansweredQuery() async throws {
        try await withCluster(configure: { index, configuration in
            Self.presenceTiming(index, &configuration)
            configuration.presence.nodeTimeout = .seconds(30)  // the silent node stays "alive"
        }) { cluster in
            try await waitForFullCluster(cluster)
            await cluster.servers[2].severExchange()
            let started = ContinuousClock.now
            let answer = try await cluster.servers[0].clusterConnectionCount(timeout: .milliseconds(300))
            let took = ContinuousClock.now - started
            try expect(answer.missing == ["node-2"] && !answer.isComplete, "a node that does not answer is named: \(answer)")
            try expect(answer.answered == ["node-0", "node-1"], "the others answered: \(answer)")
            try expect(took < .seconds(2), "the query ends at its deadline: \(took)")
        }
    }

    func presenceEvents() async throws {
        let logs = (0..<nodes).map { _ in PresenceLog() }
        try await withCluster(configure: { index, configuration in
            Self.presenceTiming(index, &configuration)
            // Counts each change once: a node taken for gone while the machine is loaded (a
            // whole test suite in parallel) would be heard leave and sync back in, so it gets
            // a longer timeout than the checks that time node losses.
            configuration.presence.nodeTimeout = .seconds(2)
            configuration.presence.namespaces = ["default"]
            configuration.onPresence = { logs[index].append($0) }
        }) { cluster in
            try await waitForFullCluster(cluster)
            let a = try await member(cluster, at: 0, rooms: ["lobby"])
            let b = try await member(cluster, at: 1, rooms: ["lobby"])
            // Node 0 follows the lobby (a's there): it hears b join on node 1, once.
            let bJoined = PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: b.0.id, node: "node-1")
            try await logs[0].wait(for: bJoined, name: name)
            // Node 2 follows nothing: it hears nothing.
            let c = try await member(cluster, at: 2, rooms: ["elsewhere"])
            try await b.1.leaveAll()
            let bLeft = PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: b.0.id, node: "node-1")
            try await logs[0].wait(for: bLeft, name: name)
            try expect(logs[0].count(of: bJoined) == 1 && logs[0].count(of: bLeft) == 1, "once per change: \(logs[0].events)")
            try expect(!logs[2].events.contains { $0.room == "lobby" }, "node-2 follows no lobby member and hears none: \(logs[2].events)")
            // A member on a node that is then killed leaves when its node is found gone.
            _ = try await c.1.joinRoom("lobby")
            let cJoined = PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: c.0.id, node: "node-2")
            try await logs[0].wait(for: cJoined, name: name)
            await cluster.servers[2].severExchange()
            let cLeft = PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: c.0.id, node: "node-2")
            try await logs[0].wait(for: cLeft, name: name, timeout: .seconds(8))
            try expect(logs[0].events.contains(PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: a.0.id, node: "node-0")), "a node reports its own members' joins")
        }
    }
}

/// The presence events one node reported, in order.
final class PresenceLog: Sendable {
    private let state = Watched<[PresenceEvent]>([])

    func append(_ event: PresenceEvent) { state.update { $0.append(event) } }

    var events: [PresenceEvent] { state.read { $0 } }

    func count(of event: PresenceEvent) -> Int { events.filter { $0 == event }.count }

    func wait(for event: PresenceEvent, name: String, timeout: Duration = .seconds(10)) async throws {
        _ = try await state.wait(
            timeout: timeout,
            orThrow: { [self] in ConformanceFailure("\(name): no \(event) within \(timeout); got \(events)") },
            until: { $0.contains(event) ? .success(true) : nil })
    }
}
