import DequeModule
import Logging
import NIOCore

/// What opens a history shared by the cluster when the server starts: what a history store URL
/// such as `nats://10.0.0.1:4222` names (JetStream, in NeffosNATS), or a store already open.
///
/// ``Server/start()`` opens it before accepting connections (a failure, such as no NATS
/// server, fails the start), for the server's cluster (``Server/Configuration/clusterName``)
/// with bounds wide enough for every history rule.
public protocol SharedHistoryConnector: Sendable {
    /// Opens the history of cluster `cluster`, keeping each room's messages within `limits` at
    /// least (the widest of the server's rules).
    func open(cluster: String, limits: HistoryLimits, logger: Logger) async throws -> any SharedHistoryStore
}

/// A history kept for the whole cluster (JetStream, in NeffosNATS): a position means the same
/// on every node, so a client recovers wherever it reconnects.
///
/// Unlike a ``HistoryStore``, its calls wait on the network: the server appends a broadcast
/// before delivering it, and reads what a join recovers before the join takes effect.
/// Sequences grow within an epoch but are not contiguous within a room: each message carries
/// its room predecessor's sequence instead, and the store guarantees the chain.
///
/// A store is its own connector (already open, it ignores the cluster and limits it is given).
public protocol SharedHistoryStore: SharedHistoryConnector {
    /// The epoch of the positions it gives (the stream's identity).
    var epoch: String { get }
    /// Keeps `frame` (sent as a binary WebSocket message when `isBinary`) as the next message
    /// of the room; returns its sequence and its room predecessor's (0 for the first).
    func append(_ frame: ByteBuffer, isBinary: Bool, namespace: String, room: String) async throws -> (sequence: UInt64, previous: UInt64)
    /// The room's messages after `sequence` (0: all kept), up to `through` when given, at most
    /// `limit`, the newest ones; complete when they are everything after `sequence`.
    func read(namespace: String, room: String, after sequence: UInt64, through: UInt64?, limit: Int) async throws -> SharedHistoryRead
}

extension SharedHistoryStore {
    /// Itself: a store given to the configuration is open already.
    public func open(cluster: String, limits: HistoryLimits, logger: Logger) async throws -> any SharedHistoryStore { self }
}

/// The shared history a server opened (set once, read on every kept broadcast).
final class OpenedSharedHistory: Sendable {
    let store: any SharedHistoryStore
    init(_ store: any SharedHistoryStore) { self.store = store }
}

/// A message of a shared history.
public struct SharedHistoryEntry: Sendable {
    /// Its sequence.
    public var sequence: UInt64
    /// Its room predecessor's sequence (0: none).
    public var previous: UInt64
    /// The frame as broadcast.
    public var frame: ByteBuffer
    /// Whether it went out as a binary WebSocket message.
    public var isBinary: Bool

    /// An entry.
    public init(sequence: UInt64, previous: UInt64, frame: ByteBuffer, isBinary: Bool = false) {
        self.sequence = sequence
        self.previous = previous
        self.frame = frame
        self.isBinary = isBinary
    }
}

/// What a read of a shared history found.
public struct SharedHistoryRead: Sendable {
    /// The entries, oldest first.
    public var entries: [SharedHistoryEntry]
    /// Whether they are everything after the position asked for.
    public var isComplete: Bool
    /// The room's last sequence when the read began (0: nothing kept): never newer than the
    /// last entry (a message kept during the read is not claimed as read).
    public var latest: UInt64

    /// A read.
    public init(entries: [SharedHistoryEntry], isComplete: Bool, latest: UInt64) {
        self.entries = entries
        self.isComplete = isComplete
        self.latest = latest
    }
}

/// This node's broadcasts to one room waiting for their append: how many, the last one's
/// task, and a number that tells whether a task is the room's last.
struct PendingAppends {
    var count = 0
    var generation: UInt64 = 0
    var last: Task<Void, Never>?
}

/// What a node knows of one room of a shared history: the last message it delivered, those
/// that arrived before their predecessor, and the last ones it delivered (what a join adds
/// after its read).
struct SharedRoomState {

    var last: UInt64?
    /// Early arrivals, by their predecessor's sequence.
    var early: [UInt64: SharedHistoryEntry] = [:]
    var recent = Deque<SharedHistoryEntry>()
    var fetching = false

    static let maxEarly = 1024
    static let maxRecent = 256
    /// Rooms a node keeps this state for; past it, another room's is dropped (its next message
    /// starts its chain again; a join there reads everything from the shared history).
    static let maxRooms = 10_000
    /// Broadcasts from this node waiting for their append, per room; past it, they are
    /// dropped (counted).
    static let maxPendingAppends = 10_000

    mutating func remember(_ entry: SharedHistoryEntry) {
        recent.append(entry)
        if recent.count > Self.maxRecent { recent.removeFirst() }
        last = entry.sequence
    }
}

extension Server {
    /// The wait field a kept frame carries on the bus: `~<sequence>.<previous>`.
    static func sharedWireFrame(_ frame: ByteBuffer, sequence: UInt64, previous: UInt64) -> ByteBuffer {
        RecoveryWire.prefixed(frame, with: "~\(sequence).\(previous)")
    }

    /// Splits a kept frame from the bus into its chain position and the frame.
    static func parseSharedWireFrame(_ wire: ByteBuffer) -> (sequence: UInt64, previous: UInt64, frame: ByteBuffer)? {
        guard wire.readableBytesView.first == RecoveryWire.marker,
            let semicolon = wire.readableBytesView.firstIndex(of: UInt8(ascii: ";"))
        else { return nil }
        let head = String(decoding: wire.readableBytesView[(wire.readerIndex + 1)..<semicolon], as: UTF8.self)
        let parts = head.split(separator: ".")
        guard parts.count == 2, let sequence = UInt64(parts[0]), let previous = UInt64(parts[1]) else { return nil }
        var frame = wire
        frame.moveReaderIndex(to: semicolon)
        return (sequence, previous, frame)
    }

    /// A broadcast to a room with a shared history, from this node: appended (one at a time per
    /// room, in the order they were made), then delivered here and published to the other
    /// nodes with its chain position.
    func broadcastShared(_ frame: ByteBuffer, binary: Bool, to target: BroadcastTarget, store: any SharedHistoryStore) -> Int {
        let stream = HistoryStream(namespace: target.namespace, room: target.room)
        // One task per broadcast, each waiting for the room's previous one: appends keep the
        // order the broadcasts were made in (each task is made and recorded under the lock).
        // The room's entry goes when its last task ends.
        let queued = sharedAppends.withLock { appends -> Bool in
            var room = appends[stream] ?? PendingAppends()
            guard room.count < SharedRoomState.maxPendingAppends else { return false }
            room.count += 1
            room.generation &+= 1
            let (previous, generation) = (room.last, room.generation)
            room.last = Task { [weak self] in
                await previous?.value
                guard let self else { return }
                defer {
                    self.sharedAppends.withLock { appends in
                        appends[stream]?.count -= 1
                        if appends[stream]?.generation == generation { appends[stream] = nil }
                    }
                }
                do {
                    let (sequence, previous) = try await store.append(frame, isBinary: binary, namespace: target.namespace, room: target.room)
                    self.deliverShared(SharedHistoryEntry(sequence: sequence, previous: previous, frame: frame, isBinary: binary), to: target, store: store)
                    self.link?.publish(.broadcast, frame: Self.sharedWireFrame(frame, sequence: sequence, previous: previous), binary: binary, to: target)
                } catch {
                    self.logger.warning("a broadcast to a room with history was not kept, so not sent", metadata: ["room": "\(target.room)", "error": "\(error)"])
                    self.metrics.dropped(1)
                }
            }
            appends[stream] = room
            return true
        }
        guard queued else {
            metrics.dropped(1)
            logger.warning("a broadcast to a room with history was dropped: \(SharedRoomState.maxPendingAppends) wait for the shared history", metadata: ["room": "\(target.room)"])
            return 0
        }
        return index.withLock { $0.receivers(of: target).1 }
    }

    /// A kept message (from this node or the bus, or fetched): delivered in its room's chain
    /// order; one that arrives before its predecessor waits (and the gap is fetched).
    func deliverShared(_ entry: SharedHistoryEntry, to target: BroadcastTarget, store: any SharedHistoryStore) {
        let stream = HistoryStream(namespace: target.namespace, room: target.room)
        let epoch = store.epoch
        let fetch = index.withLock { index -> (after: UInt64, through: UInt64)? in
            sharedRooms.withLock { rooms -> (after: UInt64, through: UInt64)? in
                if rooms[stream] == nil, rooms.count >= SharedRoomState.maxRooms, let other = rooms.keys.first { rooms[other] = nil }
                var state = rooms[stream] ?? SharedRoomState()
                defer { rooms[stream] = state }
                if let last = state.last {
                    if entry.sequence <= last { return nil }
                    if entry.previous != last {
                        if state.early.count < SharedRoomState.maxEarly { state.early[entry.previous] = entry }
                        guard !state.fetching else { return nil }
                        state.fetching = true
                        return (last, entry.sequence)
                    }
                }
                var next: SharedHistoryEntry? = entry
                while let kept = next {
                    _ = queueKept(kept.frame, binary: kept.isBinary, at: HistoryPosition(epoch: epoch, offset: kept.sequence), to: target, in: index)
                    state.remember(kept)
                    next = state.early.removeValue(forKey: kept.sequence)
                }
                return nil
            }
        }
        guard let fetch else { return }
        Task { [weak self] in
            let read = try? await store.read(namespace: target.namespace, room: target.room, after: fetch.after, through: fetch.through, limit: 100_000)
            guard let self else { return }
            self.sharedRooms.withLock { $0[stream]?.fetching = false }
            let plain = BroadcastTarget(namespace: target.namespace, room: target.room)
            for found in read?.entries ?? [] { self.deliverShared(found, to: plain, store: store) }
        }
    }
}
