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
/// Give it to a server as its shared history (``Server/HistoryConfiguration/shared``): the
/// rooms its history rules cover are then kept in JetStream, and a client recovers on any node.
///
/// ```swift
/// configuration.history.rules = [HistoryRule(namespace: "chat")]
/// configuration.history.shared = try await JetStreamHistory.connect(
///     url: "nats://10.0.0.1:4222", cluster: configuration.clusterName, maxPerRoom: 100, maxAge: .seconds(300))
/// ```
public final class JetStreamHistory: SharedHistoryStore {
    /// A kept message: where it is, its room's previous one, and the frame as broadcast.
    package struct Entry: Sendable {
        package var sequence: UInt64
        package var previous: UInt64
        package var frame: ByteBuffer
    }

    /// What a read found.
    package struct Read: Sendable {
        package var entries: [Entry]
        /// Whether the entries are everything after the position asked for.
        package var isComplete: Bool
    }

    package let client: JetStreamClient
    package let stream: String
    package let identity: JetStreamClient.StreamIdentity
    private let prefix: String
    /// The last sequence this node knows per room subject (a hint: a wrong one costs a retry).
    private let lastKnown = Locked<[String: UInt64]>([:])

    /// Connects to the `nats-server` at `url` (JetStream on: `nats-server -js`) and opens (or
    /// makes) the history stream of cluster `cluster` (see ``init(client:cluster:maxPerRoom:maxAge:fileStorage:)``).
    ///
    /// - Throws: ``NeffosError/dialFailed`` when no server answers; ``NeffosError/invalidConfiguration``
    ///   when JetStream refuses the stream (JetStream off, limits it does not accept).
    public static func connect(url: String, cluster: String, maxPerRoom: Int, maxAge: Duration, fileStorage: Bool = true) async throws -> JetStreamHistory {
        try await JetStreamHistory(client: try await JetStreamClient.connect(url), cluster: cluster, maxPerRoom: maxPerRoom, maxAge: maxAge, fileStorage: fileStorage)
    }

    /// Opens (or makes) the history stream of cluster `cluster`: subjects
    /// `neffos.<cluster>.hist.>`, at most `maxPerRoom` messages per room, kept `maxAge`.
    package init(client: JetStreamClient, cluster: String, maxPerRoom: Int, maxAge: Duration, fileStorage: Bool = true) async throws {
        self.client = client
        stream = "NEFFOS_HISTORY_" + String(cluster.map { $0.isLetter || $0.isNumber ? $0 : "_" })
        prefix = "neffos.\(Subjects.token(cluster)).hist."
        identity = try await client.ensureStream(
            name: stream, subjects: [prefix + ">"], maxMessagesPerSubject: maxPerRoom, maxAge: maxAge, fileStorage: fileStorage)
    }

    /// The epoch of the positions this history gives: the stream's name and creation time.
    public var epoch: String { identity.description }

    /// The subject of `room` of `namespace`.
    package func subject(_ namespace: String, _ room: String) -> String {
        prefix + Subjects.token(namespace) + "." + Subjects.token(room)
    }

    /// Keeps `frame` as the next message of the room, after whatever any node kept there;
    /// returns its sequence and its predecessor's.
    package func append(_ frame: ByteBuffer, to subject: String) async throws -> (sequence: UInt64, previous: UInt64) {
        var previous = lastKnown.withLock { $0[subject] }
        for _ in 0..<16 {
            if previous == nil { previous = try await client.last(in: stream, subject: subject)?.sequence ?? 0 }
            var data = ByteBuffer()
            data.reserveCapacity(frame.readableBytes + 21)
            data.writeString("\(previous!)\n")
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
    /// after the position: the first one's predecessor is the position, and none was left out.
    package func read(_ subject: String, after position: UInt64, through: UInt64? = nil, limit: Int) async throws -> Read {
        var entries: [Entry] = []
        var next = position + 1
        while let stored = try await client.next(in: stream, subject: subject, from: next) {
            if let through, stored.sequence > through { break }
            guard let entry = Self.entry(stored) else { break }
            entries.append(entry)
            next = stored.sequence + 1
        }
        let complete: Bool
        if let first = entries.first {
            complete = first.previous == position
        } else {
            complete = try await isLast(position, of: subject)
        }
        guard entries.count > limit else { return Read(entries: entries, isComplete: complete) }
        return Read(entries: Array(entries.suffix(max(0, limit))), isComplete: false)
    }

    /// Whether `position` is the room's last message (or 0 with none kept): nothing after it.
    private func isLast(_ position: UInt64, of subject: String) async throws -> Bool {
        (try await client.last(in: stream, subject: subject)?.sequence ?? 0) == position
    }

    private static func entry(_ stored: JetStreamClient.Stored) -> Entry? {
        var data = stored.data
        guard let line = data.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
            let text = data.readString(length: line - data.readerIndex), let previous = UInt64(text)
        else { return nil }
        data.moveReaderIndex(forwardBy: 1)
        return Entry(sequence: stored.sequence, previous: previous, frame: data)
    }
}

extension JetStreamHistory {
    /// Keeps `frame` as the next message of the room (see ``SharedHistoryStore``).
    public func append(_ frame: ByteBuffer, namespace: String, room: String) async throws -> (sequence: UInt64, previous: UInt64) {
        try await append(frame, to: subject(namespace, room))
    }

    /// The room's messages after `sequence` (see ``SharedHistoryStore``).
    public func read(namespace: String, room: String, after sequence: UInt64, through: UInt64?, limit: Int) async throws -> SharedHistoryRead {
        let subject = subject(namespace, room)
        let found = try await read(subject, after: sequence, through: through, limit: limit)
        let latest = try await client.last(in: stream, subject: subject)?.sequence ?? 0
        return SharedHistoryRead(
            entries: found.entries.map { SharedHistoryEntry(sequence: $0.sequence, previous: $0.previous, frame: $0.frame) },
            isComplete: found.isComplete, latest: latest)
    }
}
