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
/// - **Loss detection**: each envelope carries its publisher's count on its subject; a gap in
///   it means envelopes this node was subscribed to never arrived. They are counted
///   (``ExchangeStatistics/lost``) and logged, whatever the exchange.
/// - **Asks across nodes**: a node that delivers another node's ask forwards the first reply
///   it sees to the asking node; later replies are dropped.
final class ClusterLink: Sendable {
    let node: String
    let cluster: String
    let connection: any ExchangeConnection
    let logger: Logger
    /// The node's bus counters (`neffos_exchange_*`).
    private let metrics: ServerMetrics
    /// The node's spans: the trace context goes out in envelopes and comes back in.
    private let tracing: ServerTracing?
    /// Where what other nodes send is delivered (the server; weak: the server owns the link).
    let local: Locked<WeakReference<any ClusterLocal>>
    private let interest = Locked(Interest())
    /// Random per link: a node that restarts under the same name is a new publisher.
    let incarnation = UInt64.random(in: 1...UInt64.max)
    let sequence = Atomic<UInt64>(0)
    private let seen = Locked(DedupWindows())
    private let published = Locked(PublishedStreams())
    /// Envelopes from other nodes that never arrived (gaps in their subjects' sequences).
    private let lostTotal = Atomic<Int>(0)
    /// Presence: the other nodes alive, the queries waiting for answers, and the timing.
    let peers = Locked(PeerTable())
    let queries = Locked(PendingQueries())
    let presence: Server.PresenceConfiguration
    let heartbeats = Locked<Task<Void, Never>?>(nil)
    /// The live peers' names after each change, for whoever waits on them (tests).
    let peerNames = Watched<[String]>([])

    /// What the node receives: reference counts per subject, and the sequence positions of
    /// the subjects it is subscribed to (one lock: a subject's positions live exactly as long
    /// as its subscription).
    private struct Interest {
        var counts: [String: Int] = [:]
        var streams = ReceivedStreams()
    }
    /// Other nodes' asks delivered here, waiting for a first reply to forward.
    private let forwarded = Locked(ForwardedAsks())

    private init(
        node: String, cluster: String, connection: any ExchangeConnection, local: any ClusterLocal, logger: Logger, metrics: ServerMetrics,
        tracing: ServerTracing?, presence: Server.PresenceConfiguration
    ) {
        self.presence = presence
        self.metrics = metrics
        self.tracing = tracing
        self.node = node
        self.cluster = cluster
        self.connection = connection
        self.local = Locked(WeakReference(local))
        self.logger = logger
        connection.subscribe(Subjects.node(cluster, node))
        connection.subscribe(Subjects.nodes(cluster))
    }

    /// Opens `node`'s one connection to `exchange` and links it to `local`, which receives
    /// what other nodes send from then on.
    static func connect(
        _ exchange: any Exchange, node: String, cluster: String, local: any ClusterLocal, logger: Logger, metrics: ServerMetrics,
        tracing: ServerTracing?, presence: Server.PresenceConfiguration, status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> ClusterLink {
        // Deliveries may start before the link exists: they find it through this box.
        let box = Locked(WeakReference<ClusterLink>(nil))
        let connection = try await exchange.connect(
            node: node, logger: logger,
            deliver: { subject, payload in box.withLock { $0.value }?.receive(payload, on: subject) },
            status: status)
        let link = ClusterLink(
            node: node, cluster: cluster, connection: connection, local: local, logger: logger, metrics: metrics, tracing: tracing,
            presence: presence)
        box.withLock { $0 = WeakReference(link) }
        link.startHeartbeats()
        return link
    }

    // MARK: Interest

    /// Counts one more local reason to receive `subject`; subscribes on the first.
    func retain(_ subject: String) {
        interest.withLock { interest in
            interest.counts[subject, default: 0] += 1
            if interest.counts[subject] == 1 { connection.subscribe(subject) }
        }
    }

    /// Counts one reason less; unsubscribes on the last.
    func release(_ subject: String) {
        interest.withLock { interest in
            guard let count = interest.counts[subject] else { return }
            if count <= 1 {
                interest.counts[subject] = nil
                interest.streams.forget(subject)
                connection.unsubscribe(subject)
            } else {
                interest.counts[subject] = count - 1
            }
        }
    }

    /// The subjects this node is subscribed to (its node subject aside).
    var subscriptions: [String: Int] { interest.withLock { $0.counts } }

    /// Envelopes from other nodes that never arrived, so far.
    var lost: Int { lostTotal.load(ordering: .relaxed) }

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

    /// Publishes a broadcast (or, with a token, an ask) for the other nodes, on the one
    /// subject that covers every receiver of `target`.
    func publish(
        _ kind: Envelope.Kind, frame: ByteBuffer, binary: Bool, to target: BroadcastTarget,
        token: String = "", deadline: Int64 = 0
    ) {
        let subject = subject(namespace: target.namespace, room: target.room, to: target.to)
        guard connection.hasInterest(in: subject) else { return }
        var envelope = Envelope(
            kind: kind, binary: binary, incarnation: incarnation, sequence: sequence.add(1, ordering: .relaxed).newValue,
            origin: node, target: target, token: token, deadline: deadline, frame: frame)
        (envelope.streamEpoch, envelope.streamSequence) = published.withLock { $0.next(on: subject) }
        if let tracing { envelope.traceContext = tracing.currentContext() }
        guard let payload = envelope.encoded() else {
            logger.warning("a message was not published: a name is longer than 65,535 bytes")
            return
        }
        publish(payload, to: subject)
    }

    /// Publishes one envelope, counted.
    func publish(_ payload: ByteBuffer, to subject: String) {
        metrics.busMessagesOut.increment()
        metrics.busBytesOut.increment(by: Int64(payload.readableBytes))
        connection.publish(payload, to: subject)
    }

    // MARK: Receiving

    /// An envelope from another node: delivered to the local receivers, or (a reply to one of
    /// this node's asks) handed to the waiting ask.
    func receive(_ payload: ByteBuffer, on subject: String) {
        metrics.busMessagesIn.increment()
        metrics.busBytesIn.increment(by: Int64(payload.readableBytes))
        guard let envelope = Envelope(decoding: payload) else {
            logger.debug("dropped a malformed envelope from the exchange", metadata: ["bytes": "\(payload.readableBytes)"])
            return
        }
        guard envelope.origin != node, let local = local.withLock({ $0.value }) else { return }
        guard firstSight(of: envelope) else {
            logger.debug("dropped a duplicate envelope", metadata: ["origin": "\(envelope.origin)", "sequence": "\(envelope.sequence)"])
            return
        }
        if envelope.streamSequence > 0 { countGaps(before: envelope, on: subject) }
        switch envelope.kind {
        case .broadcast:
            deliver(envelope, to: local)
        case .ask:
            forwarded.withLock { $0.remember(envelope.token, origin: envelope.origin, target: envelope.target, deadline: envelope.deadline) }
            deliver(envelope, to: local)
        case .reply:
            receiveReply(envelope, local: local)
        case .heartbeat:
            receiveHeartbeat(envelope, local: local)
        case .query:
            answerQuery(envelope, local: local)
        case .answer:
            receiveAnswer(envelope)
        case .presence:
            if let event = ClusterReply.decode(PresenceEvent.self, from: Array(buffer: envelope.frame)) {
                local.presenceArrived(event)
            }
        }
    }

    /// Hands a broadcast or an ask to the local receivers (in a `neffos.deliver` span when
    /// tracing).
    private func deliver(_ envelope: Envelope, to local: any ClusterLocal) {
        guard let tracing else {
            _ = local.deliverLocally(envelope.frame, binary: envelope.binary, to: envelope.target)
            return
        }
        tracing.deliver(envelope.traceContext, kind: envelope.kind == .ask ? "ask" : "broadcast", origin: envelope.origin, target: envelope.target) {
            _ = local.deliverLocally(envelope.frame, binary: envelope.binary, to: envelope.target)
        }
    }

    /// A reply another node forwarded for one of this node's asks.
    private func receiveReply(_ envelope: Envelope, local: any ClusterLocal) {
        do {
            var reply = try MessageCodec.decode(envelope.frame, isBinary: envelope.binary, knownErrors: local.knownErrors)
            reply.wait = envelope.token
            _ = local.resolveAsk(envelope.token, reply.error.map { .failure($0) } ?? .success(reply), timedOut: false)
        } catch {
            logger.debug("dropped a malformed forwarded reply", metadata: ["error": "\(error)"])
        }
    }

    /// Counts the envelopes of `envelope`'s stream that should have come before it and never
    /// did (only while this node is subscribed to `subject`).
    private func countGaps(before envelope: Envelope, on subject: String) {
        let missing = interest.withLock { interest -> Int in
            guard interest.counts[subject] != nil else { return 0 }
            return interest.streams.record(
                subject: subject, origin: envelope.origin, incarnation: envelope.incarnation,
                epoch: envelope.streamEpoch, sequence: envelope.streamSequence)
        }
        guard missing > 0 else { return }
        lostTotal.add(missing, ordering: .relaxed)
        metrics.busLost.increment(by: Int64(missing))
        logger.warning(
            "messages from another node never arrived",
            metadata: ["origin": "\(envelope.origin)", "subject": "\(subject)", "lost": "\(missing)"])
    }

    /// Whether this is the first time `envelope` arrives (exchanges may deliver twice).
    private func firstSight(of envelope: Envelope) -> Bool {
        seen.withLock { $0.insert(envelope.sequence, from: DedupWindows.Publisher(node: envelope.origin, incarnation: envelope.incarnation)) }
    }

    // MARK: Asks across nodes

    /// A client of this node replied to a token this node did not issue: if it answers another
    /// node's ask, forward the first such reply there. Returns whether the token was known.
    func forwardReply(_ reply: Message, from conn: Conn) -> Bool {
        switch forwarded.withLock({ $0.answer(reply.wait, isReceiver: conn.isReceiver(of:)) }) {
        case .unknown: return false
        case .answeredAlready: return true  // Dropped.
        case .forward(let origin): forward(reply, to: origin)
        }
        return true
    }

    private func forward(_ reply: Message, to origin: String) {
        do {
            var message = reply
            message.isBinary = false
            let frame = try MessageCodec.encode(message)
            let envelope = Envelope(
                kind: .reply, binary: reply.isBinary, incarnation: incarnation, sequence: sequence.add(1, ordering: .relaxed).newValue,
                origin: node, token: reply.wait, frame: frame)
            if let payload = envelope.encoded() {
                publish(payload, to: Subjects.node(cluster, origin))
            }
        } catch {
            logger.debug("could not forward a reply", metadata: ["error": "\(error)"])
        }
    }
}

/// What a cluster link delivers to: the local server.
protocol ClusterLocal: AnyObject, Sendable {
    /// The error texts a forwarded reply's error is resolved with.
    var knownErrors: KnownErrors { get }
    /// Queues a frame from another node to the local receivers of `target`.
    func deliverLocally(_ frame: ByteBuffer, binary: Bool, to target: BroadcastTarget) -> Int
    /// Ends one of this node's asks with a reply another node forwarded.
    func resolveAsk(_ token: String, _ result: Result<Message, any Error>, timedOut: Bool) -> Bool
    /// This node's own answer to a cluster query, at most `limit` names.
    func answer(_ query: ClusterQuery, limit: Int) -> ClusterReply
    /// Another node joined the cluster or left it.
    func clusterChanged(_ change: PeerTable.Change)
    /// A join or a leave on another node, in a room this node follows.
    func presenceArrived(_ event: PresenceEvent)
}
