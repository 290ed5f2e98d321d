import NIOCore
import Testing

@testable import Neffos

/// The presence state machines without a bus: the peer table's rules and pending queries.
@Suite("Presence state")
struct PresenceStateTests {
    @Test("Presence: a node is learned on its first heartbeat, kept while heard, gone after the timeout or its goodbye, re-learned after")
    func peerTable() {
        var table = PeerTable()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        #expect(table.heard("b", incarnation: 1, at: start) == [.joined("b")])
        #expect(table.heard("b", incarnation: 1, at: start + .milliseconds(900)).isEmpty)
        #expect(table.heard("c", incarnation: 7, at: start + .milliseconds(900)) == [.joined("c")])
        // b last heard at 0.9 s: still alive at 3.8 s with a 3 s timeout, gone at 4 s.
        #expect(table.expire(now: start + .milliseconds(3_800), timeout: .seconds(3)).isEmpty)
        #expect(table.expire(now: start + .milliseconds(4_000), timeout: .seconds(3)) == [.gone("b"), .gone("c")])
        #expect(table.names.isEmpty)
        // Heard again (a partition healed): learned again.
        #expect(table.heard("b", incarnation: 1, at: start + .seconds(5)) == [.joined("b")])
        // Restarted under the same name: the old incarnation is gone, the new one joins.
        #expect(table.heard("b", incarnation: 2, at: start + .seconds(6)) == [.gone("b"), .joined("b")])
        #expect(table.left("b") == .gone("b"))
        #expect(table.left("b") == nil, "a second goodbye changes nothing")
        // A late heartbeat does not move the clock back.
        _ = table.heard("d", incarnation: 1, at: start + .seconds(10))
        _ = table.heard("d", incarnation: 1, at: start + .seconds(9))
        #expect(table.expire(now: start + .milliseconds(12_500), timeout: .seconds(3)).isEmpty)
    }

    @Test("Presence: a query ends when every expected node answered, or at its deadline naming the others; strangers and repeats are ignored")
    func pendingQueries() {
        var queries = PendingQueries()
        let ended = Locked<[(replies: [String: ClusterReply], missing: [String])]>([])
        queries.register("q1", expecting: ["b", "c"]) { replies, missing in ended.withLock { $0.append((replies, missing)) } }
        #expect(queries.reply("q1", from: "x", ClusterReply(count: 9)) == nil, "a node not asked")
        #expect(queries.reply("q1", from: "b", ClusterReply(count: 1)) == nil)
        #expect(queries.reply("q1", from: "b", ClusterReply(count: 5)) == nil, "a repeat")
        let done = queries.reply("q1", from: "c", ClusterReply(count: 2))
        #expect(done != nil && queries.count == 0)
        done?()
        #expect(ended.withLock { $0.first?.replies["b"]?.count } == 1)
        #expect(ended.withLock { $0.first?.missing } == [])
        #expect(queries.expire("q1") == nil, "already ended")

        queries.register("q2", expecting: ["b", "c", "d"]) { replies, missing in ended.withLock { $0.append((replies, missing)) } }
        _ = queries.reply("q2", from: "c", ClusterReply(names: ["x"], count: 3))
        queries.expire("q2")?()
        #expect(ended.withLock { $0.last?.missing } == ["b", "d"])
        #expect(ended.withLock { $0.last?.replies["c"]?.truncated } == true)
    }

    @Test("Presence: a followed room applies each change once, merges syncs, and loses a gone node's members as leave events")
    func presenceRooms() {
        var rooms = PresenceRooms()
        let lobby = PresenceRooms.Key(namespace: "default", room: "lobby")
        let joined = PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: "b", node: "n1")
        let ignored = rooms.apply(joined)
        #expect(!ignored, "a room not followed ignores events")
        let first = rooms.localJoined(lobby)
        let second = rooms.localJoined(lobby)
        #expect(first && !second, "followed from the first local member")
        let applied = rooms.apply(joined)
        let again = rooms.apply(joined)
        #expect(applied && !again, "once per change")
        let added = rooms.merge(["b", "c"], of: "n1", in: lobby)
        #expect(added == ["c"])
        let gone = rooms.nodeGone("n1")
        #expect(gone == [
            PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "b", node: "n1"),
            PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "c", node: "n1"),
        ])
        let stale = rooms.apply(PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "b", node: "n1"))
        #expect(!stale, "already gone")
        let stillFollowed = rooms.localLeft(lobby)
        let unfollowed = rooms.localLeft(lobby)
        #expect(!stillFollowed && unfollowed, "unfollowed when the last local member left")
        #expect(rooms.followed.isEmpty)
    }

    @Test("Presence: a member whose leave arrives during a sync is not listed by an answer taken before it")
    func presenceSyncRace() {
        var rooms = PresenceRooms()
        let lobby = PresenceRooms.Key(namespace: "default", room: "lobby")
        _ = rooms.localJoined(lobby)
        rooms.syncStarted(lobby)
        // n1's "b" leaves before n1's answer (taken before the leave) arrives.
        let unknownLeave = rooms.apply(PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "b", node: "n1"))
        #expect(!unknownLeave, "nothing to report: b was never listed here")
        // "c" leaves and joins again during the sync: it is a member.
        _ = rooms.apply(PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "c", node: "n1"))
        let rejoined = rooms.apply(PresenceEvent(kind: .joined, namespace: "default", room: "lobby", id: "c", node: "n1"))
        #expect(rejoined)
        let added = rooms.merge(["b", "c", "d"], of: "n1", in: lobby)
        #expect(added == ["d"], "b left, c was known")
        #expect(rooms.remote[lobby]?["n1"] == ["c", "d"])
        rooms.syncEnded(lobby)
        // After the sync, a leave of an unknown member is forgotten: a later sync lists it again.
        _ = rooms.apply(PresenceEvent(kind: .left, namespace: "default", room: "lobby", id: "e", node: "n1"))
        rooms.syncStarted(lobby)
        let later = rooms.merge(["e"], of: "n1", in: lobby)
        #expect(later == ["e"])
        rooms.syncEnded(lobby)
        rooms.syncEnded(lobby)  // one end too many is harmless
    }
}
