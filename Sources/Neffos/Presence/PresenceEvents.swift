import NIOCore

/// A member joined or left a room, on some node of the cluster.
public struct PresenceEvent: Sendable, Codable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, Codable {
        /// The connection joined the room.
        case joined
        /// The connection left the room (it left, it closed, or its node is gone).
        case left
    }

    /// What happened.
    public var kind: Kind
    /// The namespace of the room.
    public var namespace: String
    /// The room.
    public var room: String
    /// The connection's ID.
    public var id: String
    /// The node the connection is on.
    public var node: String

    /// An event.
    public init(kind: Kind, namespace: String, room: String, id: String, node: String) {
        self.kind = kind
        self.namespace = namespace
        self.room = room
        self.id = id
        self.node = node
    }

    /// `joined lobby: alice~3f on node-1`.
    public var description: String { "\(kind.rawValue) \(room): \(id) on \(node)" }
}

/// The rooms this node follows the presence of (it has a local member in a namespace listed in
/// ``Server/PresenceConfiguration/namespaces``), with their members on the other nodes.
struct PresenceRooms: Sendable {
    struct Key: Hashable, Sendable {
        var namespace: String
        var room: String
    }

    /// Local members per followed room.
    private var local: [Key: Int] = [:]
    /// Members on other nodes per followed room, by node.
    private(set) var remote: [Key: [String: Set<String>]] = [:]
    /// Syncs in flight per room (queries of who the other nodes hold there).
    private var syncing: [Key: Int] = [:]
    /// While a room's sync is in flight: the members, by node, whose leave arrived before they
    /// were known. An answer taken before the leave still lists them; they are not merged.
    /// Bounded by the leaves of one query timeout; dropped when the room's last sync ends.
    private var departed: [Key: [String: Set<String>]] = [:]

    var followed: [Key] { Array(remote.keys) }

    /// A local member joined; returns whether the room is newly followed.
    mutating func localJoined(_ key: Key) -> Bool {
        local[key, default: 0] += 1
        guard local[key] == 1 else { return false }
        remote[key] = [:]
        return true
    }

    /// A local member left; returns whether the room is no longer followed.
    mutating func localLeft(_ key: Key) -> Bool {
        guard let count = local[key] else { return false }
        guard count <= 1 else {
            local[key] = count - 1
            return false
        }
        local[key] = nil
        remote[key] = nil
        departed[key] = nil
        return true
    }

    /// A sync of `key` starts: leaves of members not yet known are remembered until it ends.
    mutating func syncStarted(_ key: Key) {
        syncing[key, default: 0] += 1
    }

    /// A sync of `key` ended (all answered, or its deadline passed).
    mutating func syncEnded(_ key: Key) {
        guard let count = syncing[key] else { return }
        if count > 1 {
            syncing[key] = count - 1
        } else {
            syncing[key] = nil
            departed[key] = nil
        }
    }

    /// Applies an event from another node; returns whether it changed anything (so that it is
    /// reported once).
    mutating func apply(_ event: PresenceEvent) -> Bool {
        let key = Key(namespace: event.namespace, room: event.room)
        guard remote[key] != nil else { return false }
        switch event.kind {
        case .joined:
            if departed[key] != nil { departed[key]![event.node]?.remove(event.id) }
            return remote[key]![event.node, default: []].insert(event.id).inserted
        case .left:
            if remote[key]![event.node]?.remove(event.id) != nil { return true }
            // Not known yet: a sync in flight may still list it.
            if syncing[key] != nil { departed[key, default: [:]][event.node, default: []].insert(event.id) }
            return false
        }
    }

    /// Merges what `node` reported holding in `key` (a sync), returning the members that were
    /// not known (joined meanwhile, or on a node re-learned). Members whose leave arrived during
    /// the sync are not merged.
    mutating func merge(_ ids: [String], of node: String, in key: Key) -> [String] {
        guard remote[key] != nil else { return [] }
        let known = remote[key]![node, default: []]
        let gone = departed[key]?[node] ?? []
        let added = ids.filter { !known.contains($0) && !gone.contains($0) }
        remote[key]![node] = known.union(added)
        return added
    }

    /// `node` is gone: its members leave every followed room.
    mutating func nodeGone(_ node: String) -> [PresenceEvent] {
        var events: [PresenceEvent] = []
        for key in remote.keys.sorted(by: { ($0.namespace, $0.room) < ($1.namespace, $1.room) }) {
            for id in (remote[key]?.removeValue(forKey: node) ?? []).sorted() {
                events.append(PresenceEvent(kind: .left, namespace: key.namespace, room: key.room, id: id, node: node))
            }
        }
        return events
    }
}
