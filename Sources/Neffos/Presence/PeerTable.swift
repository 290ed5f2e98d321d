import NIOCore

/// The other nodes of the cluster as this node knows them: each heard from within the node
/// timeout, by name, with the incarnation it announced (random per start).
///
/// A pure value, driven by what arrives (heartbeats, a node's goodbye) and by the clock (the
/// sweep), so that its rules are tested without a bus.
struct PeerTable: Sendable {
    struct Peer: Sendable, Equatable {
        var incarnation: UInt64
        var lastSeen: NIODeadline
    }

    /// What changed in the membership of the cluster.
    enum Change: Sendable, Equatable {
        /// A node this one did not know (or had given up on) is alive.
        case joined(String)
        /// A node left (said goodbye), stopped answering (timed out), or restarted (its old
        /// incarnation is gone: the same name with a new incarnation joins after it).
        case gone(String)
    }

    private(set) var peers: [String: Peer] = [:]

    /// The live nodes' names, sorted.
    var names: [String] { peers.keys.sorted() }

    /// A heartbeat from `node` (`incarnation`) at `now`.
    mutating func heard(_ node: String, incarnation: UInt64, at now: NIODeadline) -> [Change] {
        guard let known = peers[node] else {
            peers[node] = Peer(incarnation: incarnation, lastSeen: now)
            return [.joined(node)]
        }
        peers[node]?.lastSeen = max(known.lastSeen, now)
        guard known.incarnation != incarnation else { return [] }
        peers[node]?.incarnation = incarnation
        return [.gone(node), .joined(node)]
    }

    /// `node` said goodbye (it is shutting down).
    mutating func left(_ node: String) -> Change? {
        peers.removeValue(forKey: node).map { _ in .gone(node) }
    }

    /// The nodes not heard from for `timeout` before `now`, removed.
    mutating func expire(now: NIODeadline, timeout: Duration) -> [Change] {
        let limit = now - timeout.timeAmount
        let expired = peers.filter { $0.value.lastSeen < limit }.keys.sorted()
        for node in expired { peers[node] = nil }
        return expired.map { .gone($0) }
    }
}
