import Logging
import NIOCore
import Synchronization

/// A server's link to the other nodes of its cluster, over an ``ExchangeConnection``.
///
/// - **Interest**: the node subscribes to a namespace's subject when its first local
///   connection enters it, to a room's when its first local member joins, to an ID's when the
///   first local connection with that ID opens, and unsubscribes when the last one leaves
///   (reference counts). Its own node subject carries ask replies.
/// - **Publishing**: a broadcast is delivered to local targets directly and published once, to
///   the one subject that covers its targets, as an ``Envelope`` holding the encoded frame.
/// - **Receiving**: envelopes from other nodes are de-duplicated per publisher and delivered to
///   the local targets, honouring the excluded sender and the binary flag.
/// - **Asks across nodes**: a node that delivers another node's ask forwards the first reply
///   it sees to the asking node; later replies are dropped.
final class ClusterLink: Sendable {
    let node: String
    let cluster: String
    let connection: any ExchangeConnection
    private let logger: Logger
    private let interest = Locked<[String: Int]>([:])
    /// Random per link: a node that restarts under the same name is a new publisher.
    private let incarnation = UInt64.random(in: 1...UInt64.max)
    private let sequence = Atomic<UInt64>(0)
    private let seen = Locked(DedupWindows())
    private let forwarded = Locked<[String: ForwardedAsk]>([:])

    private struct ForwardedAsk {
        let origin: String
        let expires: Int64
        var answered = false
    }

    init(node: String, cluster: String, connection: any ExchangeConnection, logger: Logger) {
        self.node = node
        self.cluster = cluster
        self.connection = connection
        self.logger = logger
        connection.subscribe(Subjects.node(cluster, node))
    }

    // MARK: Interest

    /// Counts one more local reason to receive `subject`; subscribes on the first.
    func retain(_ subject: String) {
        interest.withLock { counts in
            counts[subject, default: 0] += 1
            if counts[subject] == 1 { connection.subscribe(subject) }
        }
    }

    /// Counts one reason less; unsubscribes on the last.
    func release(_ subject: String) {
        interest.withLock { counts in
            guard let count = counts[subject] else { return }
            if count <= 1 {
                counts[subject] = nil
                connection.unsubscribe(subject)
            } else {
                counts[subject] = count - 1
            }
        }
    }

    /// The subjects this node is subscribed to (its node subject aside).
    var subscriptions: [String: Int] { interest.withLock { $0 } }

    func namespaceSubject(_ namespace: String) -> String { Subjects.namespace(cluster, namespace) }
    func roomSubject(_ namespace: String, _ room: String) -> String { Subjects.room(cluster, namespace, room) }
    func connectionSubject(_ id: String) -> String { Subjects.connection(cluster, id) }

    /// The one subject that reaches every target of a message.
    func subject(namespace: String, room: String, to: String) -> String {
        if !to.isEmpty { return connectionSubject(to) }
        if !room.isEmpty { return roomSubject(namespace, room) }
        return namespaceSubject(namespace)
    }

    // MARK: Publishing

    /// Publishes a broadcast (or, with a token, an ask) for the other nodes.
    func publish(
        _ kind: Envelope.Kind, frame: ByteBuffer, binary: Bool, namespace: String, room: String,
        to: String, except: String?, token: String = "", deadline: Int64 = 0
    ) {
        let subject = subject(namespace: namespace, room: room, to: to)
        guard connection.hasInterest(in: subject) else { return }
        let envelope = Envelope(
            kind: kind, binary: binary, incarnation: incarnation, sequence: sequence.add(1, ordering: .relaxed).newValue, origin: node,
            namespace: namespace, room: room, to: to, except: except ?? "", token: token,
            deadline: deadline, frame: frame)
        guard let payload = envelope.encoded() else {
            logger.warning("a message was not published: a name is longer than 65,535 bytes")
            return
        }
        connection.publish(payload, to: subject)
    }

    // MARK: Receiving

    /// An envelope from another node, to deliver through `server`.
    func receive(_ payload: ByteBuffer, server: Server) {
        guard let envelope = Envelope(decoding: payload) else {
            logger.debug("dropped a malformed envelope from the exchange", metadata: ["bytes": "\(payload.readableBytes)"])
            return
        }
        guard envelope.origin != node else { return }
        guard firstSight(of: envelope) else {
            logger.debug("dropped a duplicate envelope", metadata: ["origin": "\(envelope.origin)", "sequence": "\(envelope.sequence)"])
            return
        }
        switch envelope.kind {
        case .broadcast:
            _ = server.deliverLocally(
                envelope.frame, binary: envelope.binary, namespace: envelope.namespace,
                room: envelope.room, to: envelope.to, except: envelope.except.isEmpty ? nil : envelope.except)
        case .ask:
            rememberAsk(envelope)
            _ = server.deliverLocally(
                envelope.frame, binary: envelope.binary, namespace: envelope.namespace,
                room: envelope.room, to: envelope.to, except: envelope.except.isEmpty ? nil : envelope.except)
        case .reply:
            server.receiveRemoteReply(envelope)
        }
    }

    /// Whether this is the first time `envelope` arrives (exchanges may deliver twice).
    private func firstSight(of envelope: Envelope) -> Bool {
        seen.withLock { $0.insert(envelope.sequence, from: DedupWindows.Publisher(node: envelope.origin, incarnation: envelope.incarnation)) }
    }

    // MARK: Asks across nodes

    private func rememberAsk(_ envelope: Envelope) {
        let now = Int64(WaitTokens.wallClockNanoseconds())
        forwarded.withLock { asks in
            if asks.count > 1024 { asks = asks.filter { $0.value.expires > now } }
            // Keep it a while past its deadline, to recognise (and drop) late replies.
            let grace: Int64 = 60_000_000_000
            asks[envelope.token] = ForwardedAsk(origin: envelope.origin, expires: max(envelope.deadline, now) + grace)
        }
    }

    /// A client of this node replied to a token this node did not issue: if it answers another
    /// node's ask, forward the first such reply there. Returns whether the token was known.
    func forwardReply(_ reply: Message) -> Bool {
        let origin = forwarded.withLock { asks -> String?? in
            guard var ask = asks[reply.wait] else { return .none }
            if ask.answered { return .some(nil) }
            ask.answered = true
            asks[reply.wait] = ask
            return .some(ask.origin)
        }
        guard let known = origin else { return false }
        guard let origin = known else { return true }  // Answered already: dropped.
        do {
            var message = reply
            message.isBinary = false
            let frame = try MessageCodec.encode(message)
            let envelope = Envelope(
                kind: .reply, binary: reply.isBinary, incarnation: incarnation, sequence: sequence.add(1, ordering: .relaxed).newValue,
                origin: node, token: reply.wait, frame: frame)
            if let payload = envelope.encoded() {
                connection.publish(payload, to: Subjects.node(cluster, origin))
            }
        } catch {
            logger.debug("could not forward a reply", metadata: ["error": "\(error)"])
        }
        return true
    }
}

/// The de-duplication windows of every publisher heard from, at most ``capacity`` of them
/// (the least recently heard is forgotten first: a node that restarted or left).
struct DedupWindows {
    /// A publishing node, in one of its lives.
    struct Publisher: Hashable {
        var node: String
        var incarnation: UInt64
    }

    static let capacity = 1024
    private var windows: [Publisher: (window: DedupWindow, lastHeard: UInt64)] = [:]
    private var clock: UInt64 = 0

    /// Records `sequence` from `publisher`; returns `false` when it was seen before.
    mutating func insert(_ sequence: UInt64, from publisher: Publisher) -> Bool {
        clock += 1
        if windows[publisher] == nil && windows.count >= Self.capacity,
            let oldest = windows.min(by: { $0.value.lastHeard < $1.value.lastHeard })?.key {
            windows[oldest] = nil
        }
        var entry = windows[publisher] ?? (DedupWindow(), 0)
        entry.lastHeard = clock
        let first = entry.window.insert(sequence)
        windows[publisher] = entry
        return first
    }

    /// How many publishers are remembered.
    var count: Int { windows.count }
}

/// Remembers which sequence numbers of one publisher were seen, in a sliding window.
struct DedupWindow {
    private var highest: UInt64 = 0
    private var recent: Set<UInt64> = []
    private static let span: UInt64 = 4096

    /// Records `sequence`; returns `false` when it was seen before (or is too old to tell).
    mutating func insert(_ sequence: UInt64) -> Bool {
        if highest >= Self.span && sequence <= highest - Self.span { return false }
        guard recent.insert(sequence).inserted else { return false }
        if sequence > highest {
            highest = sequence
            if recent.count > Int(Self.span) * 2 {
                let floor = highest >= Self.span ? highest - Self.span : 0
                recent = recent.filter { $0 > floor }
            }
        }
        return true
    }
}
