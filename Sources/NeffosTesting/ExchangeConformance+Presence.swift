import Neffos

/// The presence checks of ``ExchangeConformance``: cluster-wide listings, and nodes that
/// leave, crash, or are cut off and come back. Their names start with `Presence`.
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
}
