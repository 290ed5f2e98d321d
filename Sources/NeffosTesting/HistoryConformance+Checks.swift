import NIOCore
import NIOPosix
import Neffos
import NeffosNIO

extension HistoryConformance {
    static let allChecks: [Check] = [
        Check(name: "a client away while 100 are broadcast from another node gets exactly those, in order, then live ones", needsShared: false) {
            try await $0.recoversMissed()
        },
        Check(name: "history trimmed past the client's position: not recovered, with what is kept", needsShared: false) {
            try await $0.trimmed()
        },
        Check(name: "more missed than maxRecoveryMessages: not recovered, the newest come back", needsShared: false) {
            try await $0.bounded()
        },
        Check(name: "a position of another epoch: not recovered, what is kept comes back", needsShared: false) {
            try await $0.otherEpoch()
        },
        Check(name: "frames are the protocol's without the extension, positioned with it", needsShared: false) {
            try await $0.frames()
        },
        Check(name: "replayOnJoin gives a joining member the newest kept messages, whatever its client", needsShared: false) {
            try await $0.replay()
        },
        Check(name: "the server reads a room's kept messages back", needsShared: false) {
            try await $0.serverRead()
        },
        Check(name: "clients dropped again and again while broadcasts flow get each message once, in order", needsShared: false) {
            try await $0.churn()
        },
        Check(name: "binary messages are recovered binary", needsShared: false) {
            try await $0.binary()
        },
        Check(name: "a client recovers on another node", needsShared: true) {
            try await $0.anotherNode()
        },
    ]

    /// A client away from node 0 while it misses `missed` broadcasts (from node `from`, after
    /// `before` it received); returns it once its recovery is in, with what it said.
    private func away(
        _ cluster: HistoryCluster, before: Int, missed: ClosedRange<Int>, from: Int = 0, binary: Bool = false
    ) async throws -> HistoryMember {
        let alice = try await cluster.member(on: 0)
        cluster.broadcast(1...before, from: from)
        try expect(try await alice.receivedExactly(Array(1...before)), "before: \(alice.summary)")
        let port = try await cluster.takeDown(0, waitingFor: alice)
        cluster.broadcast(missed, from: from, binary: binary)
        try await cluster.waitKept(missed.upperBound)
        try await cluster.bringBack(0, on: port)
        try await alice.waitForRecoveries(1)
        return alice
    }

    func recoversMissed() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"))
        let alice = try await away(cluster, before: 5, missed: 6...105, from: 1)
        try expect(try await alice.receivedExactly(Array(1...105)), "each once, in order: \(alice.summary)")
        let recovery = alice.recoveries[0]
        try expect(recovery.isComplete && recovery.room == "lobby", "a complete recovery: \(alice.summary)")
        // Live again, from either node (one after the other: broadcasts from two nodes at
        // once are in one order for every member, not necessarily this one).
        cluster.broadcast(106...108, from: 1)
        try await cluster.waitKept(108)
        cluster.broadcast(109...110, from: 0)
        try expect(try await alice.receivedExactly(Array(1...110)), "live after recovered: \(alice.summary)")
        await cluster.stop()
    }

    func trimmed() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 10)))
        let alice = try await away(cluster, before: 3, missed: 4...50)
        try expect(try await alice.receivedExactly([1, 2, 3] + Array(41...50)), "the kept 10: \(alice.summary)")
        try expect(alice.recoveries.map(\.isComplete) == [false] && alice.recoveries[0].messages == 10, "not recovered, 10 sent: \(alice.summary)")
        await cluster.stop()
    }

    func bounded() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"), maxRecovery: 20)
        let alice = try await away(cluster, before: 1, missed: 2...101)
        try expect(try await alice.receivedExactly([1] + Array(82...101)), "the newest 20: \(alice.summary)")
        try expect(alice.recoveries.map(\.isComplete) == [false] && alice.recoveries[0].messages == 20, "not recovered, 20 sent: \(alice.summary)")
        await cluster.stop()
    }

    func binary() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"))
        let alice = try await away(cluster, before: 2, missed: 3...12, binary: true)
        try expect(try await alice.receivedExactly(Array(1...12)), "each once: \(alice.summary)")
        try expect(alice.record.binary == Array(repeating: false, count: 2) + Array(repeating: true, count: 10), "binary stays binary: \(alice.record.binary)")
        await cluster.stop()
    }

    func anotherNode() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"))
        let alice = try await cluster.member(on: 0)
        cluster.broadcast(1...5)
        try expect(try await alice.receivedExactly(Array(1...5)), "before: \(alice.summary)")
        // Node 0 goes away; node 1 takes its port: alice comes back to another node.
        let port = try await cluster.takeDown(0, waitingFor: alice)
        cluster.broadcast(6...105, from: 1)
        try await cluster.waitKept(105)
        try await cluster.bringBack(1, on: port)
        try await alice.waitForRecoveries(1)
        try expect(try await alice.receivedExactly(Array(1...105)), "each once, in order: \(alice.summary)")
        try expect(alice.recoveries.map(\.isComplete) == [true] && alice.recoveries[0].messages == 100, "recovered the 100: \(alice.summary)")
        await cluster.stop()
    }

    func churn() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 100_000)), maxRecovery: 100_000)
        var members: [HistoryMember] = []
        for _ in 0..<3 { members.append(try await cluster.member(on: 0)) }
        // 1,000 broadcasts a second from a timer (a load that does not grow on a slow machine).
        let published = Locked(0)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let publisher = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(10)) { _ in
            let n = published.withLock { n in
                n += 10
                return n
            }
            cluster.broadcast((n - 9)...n)
        }
        do {
            // Drop each member's connection, server side, twice, while the broadcasts flow.
            for round in 1...2 {
                for member in members {
                    for ns in cluster.nodes.servers[0].members(ofRoom: cluster.room, in: "default") where ns.conn.id == member.client.id {
                        ns.conn.close(code: .goingAway, reason: "churn")
                    }
                    try await member.waitForReconnections(round)
                }
            }
        } catch {
            publisher.cancel()
            throw error
        }
        let stopped = loop.makePromise(of: Void.self)
        publisher.cancel(promise: stopped)
        try await stopped.futureResult.get()
        let total = published.withLock { $0 }
        for member in members {
            try expect(try await member.receivedExactly(Array(1...total), timeout: .seconds(60)), "each once, in order: \(member.summary)")
            try expect(member.recoveries.count >= 2 && member.recoveries.allSatisfy(\.isComplete), "complete recoveries: \(member.summary)")
        }
        await cluster.stop()
    }
}
