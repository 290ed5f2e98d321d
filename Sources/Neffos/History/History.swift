import NIOCore

/// Where a kept message sits in its room's history: the history's incarnation (`epoch`) and
/// the message's number in it (`offset`, from 1, contiguous).
///
/// Two positions compare only within one epoch: a store that restarted (memory) or a stream
/// that was recreated has a new epoch, and a client holding a position of the old one cannot
/// recover from it. On the wire a position is `<epoch>:<offset>`.
public struct HistoryPosition: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The history's incarnation: letters, digits, `-` and `_`, at most 64 bytes.
    public var epoch: String
    /// The message's number; `0` means "before the first message".
    public var offset: UInt64

    /// A position.
    public init(epoch: String, offset: UInt64) {
        self.epoch = epoch
        self.offset = offset
    }

    /// `<epoch>:<offset>`, the wire form.
    public var description: String { "\(epoch):\(offset)" }

    /// Parses the wire form `<epoch>:<offset>`; `nil` when it is not one.
    public init?(_ text: Substring) {
        guard let colon = text.lastIndex(of: ":"), let offset = UInt64(text[text.index(after: colon)...]) else { return nil }
        let epoch = text[..<colon]
        guard Self.isValidEpoch(epoch) else { return nil }
        self.init(epoch: String(epoch), offset: offset)
    }

    /// Whether `epoch` may travel on the wire: 1…64 bytes of letters, digits, `-` and `_`.
    static func isValidEpoch(_ epoch: Substring) -> Bool {
        !epoch.isEmpty && epoch.utf8.count <= 64 && epoch.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x5F
        }
    }
}

/// A room whose broadcasts are kept: its namespace and name.
public struct HistoryStream: Sendable, Hashable, CustomStringConvertible {
    /// The namespace.
    public var namespace: String
    /// The room.
    public var room: String

    /// A stream.
    public init(namespace: String, room: String) {
        self.namespace = namespace
        self.room = room
    }

    /// `namespace/room`.
    public var description: String { "\(namespace)/\(room)" }
}

/// How much of a room's history is kept.
public struct HistoryLimits: Sendable, Hashable {
    /// The most messages kept; older ones are dropped. Default: 100.
    public var maxCount: Int
    /// How long a message is kept. Default: 5 minutes.
    public var maxAge: Duration

    /// Limits.
    public init(maxCount: Int = 100, maxAge: Duration = .seconds(300)) {
        self.maxCount = maxCount
        self.maxAge = maxAge
    }
}

/// One kept broadcast.
public struct HistoryEntry: Sendable {
    /// Where it sits in its room's history.
    public var position: HistoryPosition
    /// The broadcast as it went out: a neffos frame with an empty wait field.
    public var frame: ByteBuffer
    /// Whether it went out as a binary WebSocket message.
    public var isBinary: Bool

    /// An entry.
    public init(position: HistoryPosition, frame: ByteBuffer, isBinary: Bool) {
        self.position = position
        self.frame = frame
        self.isBinary = isBinary
    }

    /// The broadcast, decoded.
    public var message: Message? {
        try? MessageCodec.decode(frame, isBinary: isBinary, allowNative: false)
    }
}

/// What a read of a room's history found.
public struct HistoryRead: Sendable {
    /// The entries after the position asked for, oldest first (at most the limit asked for:
    /// the newest ones).
    public var entries: [HistoryEntry]
    /// The room's latest position (`offset` 0 when nothing was ever kept in this epoch).
    public var latest: HistoryPosition
    /// Whether `entries` are everything after the position asked for: same epoch, nothing
    /// trimmed in between, nothing left out by the limit. Always `false` when no position was
    /// given.
    public var isComplete: Bool

    /// A read.
    public init(entries: [HistoryEntry], latest: HistoryPosition, isComplete: Bool) {
        self.entries = entries
        self.latest = latest
        self.isComplete = isComplete
    }
}

/// Where a server keeps the broadcasts of the rooms that have history, and reads them back.
///
/// The server calls a store while it holds its delivery lock, in the order the messages are
/// delivered on this node: an implementation must answer at once, never wait on I/O, and be
/// safe to call from any thread. ``MemoryHistoryStore`` is the one shipped; choose it by URL
/// (`memory://`) with ``HistoryStoreRegistry``.
public protocol HistoryStore: Sendable {
    /// Keeps `frame` as the next message of `stream`, dropping what `limits` no longer allow;
    /// returns its position.
    func append(_ frame: ByteBuffer, isBinary: Bool, to stream: HistoryStream, limits: HistoryLimits) -> HistoryPosition

    /// The entries of `stream` after `position` (all kept entries when `position` is `nil` or
    /// of another epoch), at most `limit`, the newest ones.
    func read(_ stream: HistoryStream, after position: HistoryPosition?, limit: Int) -> HistoryRead

    /// Forgets `stream`'s history: the node stopped receiving the room's messages, so what it
    /// would keep next is not a continuation (its next message starts a new epoch).
    func drop(_ stream: HistoryStream)

    /// What the store holds: streams, entries and their bytes.
    var usage: HistoryUsage { get }
}

/// What a history store holds.
public struct HistoryUsage: Sendable, Equatable {
    /// Rooms with kept messages.
    public var streams = 0
    /// Messages kept.
    public var entries = 0
    /// Bytes of the kept frames.
    public var bytes = 0
    /// Whole rooms' histories dropped to stay within the store's room bound.
    public var evictedStreams = 0

    /// Zero.
    public init() {}
}

/// How rejoining a room after a reconnection recovered what the client missed.
public struct RoomRecovery: Sendable, Equatable {
    /// The namespace.
    public var namespace: String
    /// The room.
    public var room: String
    /// Whether every message sent to the room since the client's last position came back
    /// (`false`: the history no longer reaches back that far, it is another epoch (the
    /// server restarted), or there was more than the server sends back at once; the kept
    /// messages that were there came back).
    public var isComplete: Bool
    /// How many kept messages came back.
    public var messages: Int
}
