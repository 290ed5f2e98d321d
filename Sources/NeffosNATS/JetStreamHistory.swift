import Logging
import NIOCore
import Neffos

/// Rooms' histories kept by JetStream for a whole cluster: one stream, one subject per room,
/// every message chained to its room's previous one.
///
/// Positions are the stream's sequences, so they mean the same on every node, and the epoch is
/// the stream's identity (name and creation time): a stream deleted and made again is another
/// epoch. Sequences are not contiguous within a room (rooms share the stream), so each message
/// also carries its room's previous sequence: a publish must name it
/// (`ExpectLastSubjectSeq`), which JetStream checks, so the chain has no hole however many
/// nodes publish to the room. A read after a position is complete when its first message's
/// predecessor is that position.
///
/// A server's shared history (``Server/HistoryConfiguration/shared``): the rooms its history
/// rules cover are then kept in JetStream, and a client recovers on any node. Name it by URL
/// (the server opens it when it starts, for its cluster, with the widest of its rules' bounds
/// as the stream's limits), or open it yourself:
///
/// ```swift
/// configuration.history.rules = [HistoryRule(namespace: "chat")]
/// try configuration.history.use(HistoryStoreRegistry([.jetStream]).backend(for: "nats://10.0.0.1:4222"))
/// // or
/// configuration.history.shared = try await JetStreamHistory.connect(
///     url: "nats://10.0.0.1:4222", cluster: configuration.clusterName, maxPerRoom: 100, maxAge: .seconds(300))
/// ```
public final class JetStreamHistory: SharedHistoryStore {
    /// A kept message: the core's shared-history entry (sequence, predecessor, frame).
    package typealias Entry = SharedHistoryEntry
    /// What a read found: the core's shared-history read.
    package typealias Read = SharedHistoryRead

    package let client: JetStreamClient
    package let stream: String
    package let identity: JetStreamClient.StreamIdentity
    private let prefix: String
    /// The last sequence this node knows per room subject (a hint: a wrong one costs a retry).
    private let lastKnown = Locked<[String: UInt64]>([:])

    /// Connects to the `nats-server`s at `url` (JetStream on: `nats-server -js`; the URL and
    /// its options as ``NATSExchange/init(url:)-(String)`` takes them) and opens (or makes) the
    /// history stream of cluster `cluster`: subjects `neffos.<cluster>.hist.>`, at most
    /// `maxPerRoom` messages per room, kept `maxAge`, on disk unless `fileStorage` is off.
    ///
    /// - Throws: ``NeffosError/dialFailed`` when no server answers; ``NeffosError/invalidConfiguration``
    ///   for a malformed URL, or when JetStream refuses the stream (JetStream off, limits it
    ///   does not accept).
    public static func connect(url: String, cluster: String, maxPerRoom: Int, maxAge: Duration, fileStorage: Bool = true) async throws -> JetStreamHistory {
        try await JetStreamHistory(client: try await JetStreamClient.connect(url), cluster: cluster, maxPerRoom: maxPerRoom, maxAge: maxAge, fileStorage: fileStorage)
    }

    /// Opens (or makes) the history stream of cluster `cluster`: subjects
    /// `neffos.<cluster>.hist.>`, at most `maxPerRoom` messages per room, kept `maxAge`.
    package init(client: JetStreamClient, cluster: String, maxPerRoom: Int, maxAge: Duration, fileStorage: Bool = true) async throws {
        self.client = client
        stream = "NEFFOS_HISTORY_" + String(cluster.map { $0.isLetter || $0.isNumber ? $0 : "_" })
        prefix = "neffos.\(Subjects.token(cluster)).hist."
        // Opening is a start-up step: a server without JetStream fails it in seconds.
        identity = try await client.ensureStream(
            name: stream, subjects: [prefix + ">"], maxMessagesPerSubject: maxPerRoom, maxAge: maxAge, fileStorage: fileStorage,
            patience: .seconds(3))
    }

    /// The epoch of the positions this history gives: the stream's name and creation time.
    public var epoch: String { identity.description }

    /// The subject of `room` of `namespace`.
    package func subject(_ namespace: String, _ room: String) -> String {
        prefix + Subjects.token(namespace) + "." + Subjects.token(room)
    }

    /// Keeps `frame` as the next message of the room, after whatever any node kept there;
    /// returns its sequence and its predecessor's.
    package func append(_ frame: ByteBuffer, isBinary: Bool = false, to subject: String) async throws -> (sequence: UInt64, previous: UInt64) {
        var previous = lastKnown.withLock { $0[subject] }
        for _ in 0..<16 {
            if previous == nil { previous = try await client.last(in: stream, subject: subject)?.sequence ?? 0 }
            var data = ByteBuffer()
            data.reserveCapacity(frame.readableBytes + 21)
            // A header line: the predecessor, and `b` for a binary message.
            data.writeString(isBinary ? "\(previous!) b\n" : "\(previous!)\n")
            data.writeImmutableBuffer(frame)
            do {
                let sequence = try await client.publish(data, to: subject, stream: stream, expectingLast: previous!)
                lastKnown.withLock { $0[subject] = max($0[subject] ?? 0, sequence) }
                return (sequence, previous!)
            } catch JetStreamClient.PublishError.wrongLastSequence {
                previous = nil  // Another node kept one meanwhile: learn the new last and retry.
            }
        }
        throw NeffosError.timeout.with(detail: "JetStream history \(subject): 16 publishes in a row raced other nodes'")
    }

    /// The room's messages after `position` (its sequence; 0: from the start), up to
    /// `through` if given: at most `limit`, the newest ones (a recovery that cannot send all
    /// it missed sends the latest, as the memory store does). Complete when they are everything
    /// after the position: the oldest one's predecessor is the position.
    ///
    /// It walks the room's chain backwards, from its last message (or `through`) to the
    /// position: a short read costs one request per message it returns, plus one, however many
    /// the room keeps (a join that replays the newest message reads two). Past
    /// ``walkLimit`` steps, the rest streams from one ordered consumer instead.
    package func read(_ subject: String, after position: UInt64, through: UInt64? = nil, limit: Int) async throws -> Read {
        let newest: Entry?
        if let through {
            newest = try await entry(at: through, of: subject)
        } else {
            newest = try await client.last(in: stream, subject: subject).flatMap(Self.entry)
        }
        var newestFirst: [Entry] = []
        var complete = newest == nil && position == 0
        var current = newest
        while let entry = current {
            if newestFirst.count == Self.walkLimit, let newest, newest.sequence > position {
                return try await readForward(subject, after: position, through: newest.sequence, limit: limit)
            }
            if entry.sequence <= position {
                complete = entry.sequence == position
                break
            }
            guard newestFirst.count < limit else { break }
            newestFirst.append(entry)
            if entry.previous == position {
                complete = true
                break
            }
            // The position is not on the chain (another room's, or a lost link): not complete.
            guard entry.previous > position else { break }
            // Nil when the predecessor aged out or was trimmed: what is kept ends there.
            current = try await self.entry(at: entry.previous, of: subject)
        }
        return Read(entries: newestFirst.reversed(), isComplete: complete, latest: newest?.sequence ?? 0)
    }

    /// How many messages a read walks back one by one before it streams the rest.
    static let walkLimit = 16

    /// The room's messages after `position` through `end`, streamed oldest first: the newest
    /// `limit`, complete when they chain from the position to `end` without a hole.
    private func readForward(_ subject: String, after position: UInt64, through end: UInt64, limit: Int) async throws -> Read {
        // Sequences are the stream's: the room has at most `end - position` of them.
        let span = Int(clamping: end - position)
        let stored = try await client.range(in: stream, subject: subject, from: position + 1, through: end, limit: span)
        var entries: [Entry] = []
        var complete = true
        var chainEnd = position
        for item in stored {
            guard let entry = Self.entry(item) else { continue }
            if entry.previous != chainEnd { complete = false }
            entries.append(entry)
            chainEnd = entry.sequence
        }
        if chainEnd != end { complete = false }
        if entries.count > limit {
            entries = Array(entries.suffix(max(0, limit)))
            complete = false
        }
        return Read(entries: entries, isComplete: complete, latest: end)
    }

    /// The room's message at `sequence`, if it is kept (and is the room's).
    private func entry(at sequence: UInt64, of subject: String) async throws -> Entry? {
        guard let stored = try await client.message(in: stream, at: sequence), stored.subject == subject else { return nil }
        return Self.entry(stored)
    }

    private static func entry(_ stored: JetStreamClient.Stored) -> Entry? {
        var data = stored.data
        guard let line = data.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
            let text = data.readString(length: line - data.readerIndex)
        else { return nil }
        let header = text.split(separator: " ")
        guard let first = header.first, let previous = UInt64(first) else { return nil }
        data.moveReaderIndex(forwardBy: 1)
        return Entry(sequence: stored.sequence, previous: previous, frame: data, isBinary: header.dropFirst().first == "b")
    }
}

extension JetStreamHistory {
    /// Keeps `frame` as the next message of the room (see ``SharedHistoryStore``).
    public func append(_ frame: ByteBuffer, isBinary: Bool, namespace: String, room: String) async throws -> (sequence: UInt64, previous: UInt64) {
        try await append(frame, isBinary: isBinary, to: subject(namespace, room))
    }

    /// The room's messages after `sequence` (see ``SharedHistoryStore``).
    public func read(namespace: String, room: String, after sequence: UInt64, through: UInt64?, limit: Int) async throws -> SharedHistoryRead {
        try await read(subject(namespace, room), after: sequence, through: through, limit: limit)
    }
}

extension JetStreamHistory {
    /// What `nats://host:port[,host:port…][?storage=file|memory&…]` names: a JetStream history
    /// the server opens when it starts (``SharedHistoryConnector``), for its cluster, with the
    /// widest of its history rules' bounds as the stream's limits. The other options are
    /// ``NATSExchange/init(url:)-(String)``'s (credentials, TLS, timeouts); `storage` is `file`
    /// (the default: the history survives a `nats-server` restart) or `memory`.
    public struct Connector: SharedHistoryConnector, CustomStringConvertible {
        /// The connection's options.
        public var options: NATSExchange.Options
        /// Whether the stream is kept on disk. Default: on.
        public var fileStorage: Bool

        /// A connector for `url`.
        ///
        /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL, an unknown option
        ///   or a `storage` other than `file` or `memory`.
        public init(url: ExchangeURL) throws {
            let storage = url.options["storage"] ?? "file"
            guard storage == "file" || storage == "memory" else {
                throw NeffosError.invalidConfiguration.with(detail: "storage must be file or memory, got \(storage) (in \(url))")
            }
            fileStorage = storage == "file"
            options = try NATSExchange(url: url, alsoAccepting: ["storage"]).options
        }

        /// The servers, without credentials.
        public var description: String { options.servers.joined(separator: ",") }

        /// Connects and opens (or makes) the stream of `cluster`, keeping `limits` per room.
        public func open(cluster: String, limits: HistoryLimits, logger: Logger) async throws -> any SharedHistoryStore {
            let client = try await JetStreamClient.connect(options: options)
            let history = try await JetStreamHistory(client: client, cluster: cluster, maxPerRoom: limits.maxCount, maxAge: limits.maxAge, fileStorage: fileStorage)
            logger.info("JetStream history open", metadata: ["servers": "\(self)", "stream": "\(history.stream)", "storage": "\(fileStorage ? "file" : "memory")"])
            return history
        }
    }
}

extension URLPlugin where Product == HistoryBackend {
    /// `nats://host:port[,host:port…][?storage=file|memory&…]` (and `tls://`): a history in
    /// JetStream shared by the cluster (see ``JetStreamHistory/Connector``).
    public static var jetStream: HistoryStorePlugin {
        HistoryStorePlugin(scheme: "nats", summary: "nats://host:port[,host:port…][?storage=file|memory] — JetStream, shared by the cluster") { url in
            .shared(try JetStreamHistory.Connector(url: url))
        }
    }

    /// `tls://host:port[,…]`: ``jetStream`` over TLS.
    public static var jetStreamTLS: HistoryStorePlugin {
        HistoryStorePlugin(scheme: "tls", summary: "tls://host:port[,host:port…][?storage=file|memory] — JetStream over TLS") { url in
            .shared(try JetStreamHistory.Connector(url: url))
        }
    }
}
