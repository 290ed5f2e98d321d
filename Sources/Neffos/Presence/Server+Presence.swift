import NIOCore

extension Server {
    /// How the nodes of a cluster notice each other, and the bounds of cluster-wide queries.
    public struct PresenceConfiguration: Sendable {
        /// How often a node tells the others it is alive. Default: 1 s.
        public var heartbeatInterval: Duration = .seconds(1)
        /// How long a node may stay silent before the others count it gone (crashed,
        /// partitioned, bus lost); its connections then drop out of every cluster-wide answer.
        /// Default: 3 s (three heartbeats).
        public var nodeTimeout: Duration = .seconds(3)
        /// The deadline of a cluster-wide query that does not give one. Default: 2 s.
        public var queryTimeout: Duration = .seconds(2)
        /// The most names (IDs, rooms) one node puts in an answer; past it the answer says
        /// how many there are and is marked truncated. Default: 10,000.
        public var maxQueryResults = 10_000
        /// The most cluster-wide queries this server may wait on at once; one more throws
        /// ``NeffosError/limitExceeded``. Default: 256.
        public var maxPendingQueries = 256
        /// The namespaces whose rooms' joins and leaves are shared across the cluster as
        /// ``PresenceEvent``s (``Server/Configuration/onPresence``, ``clientEvent``). A node
        /// follows a room of them while it has a member there, and only then receives its
        /// events: one publish per join or leave, delivered to the nodes that follow the room.
        /// Default: none.
        public var namespaces: Set<String> = []
        /// When set, the local members of a followed room receive each of its events as this
        /// event (JSON body: `kind`, `namespace`, `room`, `id`, `node`). Default: none (the
        /// frames clients see stay neffos's).
        public var clientEvent: EventName?

        /// The defaults.
        public init() {}
    }

    /// An answer gathered from every node of the cluster.
    public struct ClusterAnswer<Value: Sendable>: Sendable {
        /// The merged answer.
        public var value: Value
        /// The nodes that answered, this one included, sorted.
        public var answered: [String]
        /// The live nodes that did not answer before the deadline: their part is missing from
        /// ``value``. Empty when the answer is complete.
        public var missing: [String]
        /// Whether some node's part was cut at ``PresenceConfiguration/maxQueryResults``.
        public var truncated: Bool

        /// Whether every live node answered, in full.
        public var isComplete: Bool { missing.isEmpty && !truncated }
    }

    /// The nodes of the cluster this node knows to be alive (itself included), sorted. Without
    /// an exchange, this node alone.
    public var clusterNodes: [String] {
        link?.liveNodes ?? [nodeName]
    }

    /// The IDs of the members of `room` in `namespace` on every node, sorted, without
    /// repeats. The namespace connections of the local ones are in
    /// ``members(ofRoom:in:)``.
    ///
    /// - Parameters:
    ///   - room: the room.
    ///   - namespace: its namespace.
    ///   - timeout: how long to wait for the other nodes. Default:
    ///     ``PresenceConfiguration/queryTimeout``.
    /// - Throws: ``NeffosError/limitExceeded`` when ``PresenceConfiguration/maxPendingQueries``
    ///   queries already wait.
    public func clusterMembers(ofRoom room: String, in namespace: String, timeout: Duration? = nil) async throws(NeffosError) -> ClusterAnswer<[String]> {
        try await gather(.members(namespace: namespace, room: room), timeout: timeout) { Self.union($0.map(\.names)) }
    }

    /// The rooms of `namespace` that have members on some node, sorted.
    public func clusterRooms(in namespace: String, timeout: Duration? = nil) async throws(NeffosError) -> ClusterAnswer<[String]> {
        try await gather(.rooms(namespace: namespace), timeout: timeout) { Self.union($0.map(\.names)) }
    }

    /// The number of open connections on every node.
    public func clusterConnectionCount(timeout: Duration? = nil) async throws(NeffosError) -> ClusterAnswer<Int> {
        try await gather(.connectionCount, timeout: timeout) { $0.reduce(0) { $0 + $1.count } }
    }

    /// Whether a connection with ID `id` is open on some node; ``ClusterAnswer/answered``
    /// says which nodes were asked.
    public func isOnline(_ id: String, timeout: Duration? = nil) async throws(NeffosError) -> ClusterAnswer<Bool> {
        if !connections(id: id).isEmpty {
            return ClusterAnswer(value: true, answered: [nodeName], missing: [], truncated: false)
        }
        return try await gather(.online(id: id), timeout: timeout) { $0.contains { $0.count > 0 } }
    }

    private func gather<Value: Sendable>(
        _ query: ClusterQuery, timeout: Duration?, merge: ([ClusterReply]) -> Value
    ) async throws(NeffosError) -> ClusterAnswer<Value> {
        let own = answer(query, limit: configuration.presence.maxQueryResults)
        guard let link else {
            return ClusterAnswer(value: merge([own]), answered: [nodeName], missing: [], truncated: own.truncated)
        }
        guard link.queries.withLock({ $0.count }) < configuration.presence.maxPendingQueries else {
            metrics.limitExceeded(.pendingQueries)
            throw NeffosError.limitExceeded.with(detail: "\(configuration.presence.maxPendingQueries) cluster queries already wait (presence.maxPendingQueries)")
        }
        let (replies, missing) = await link.ask(query, timeout: timeout ?? configuration.presence.queryTimeout, own: own)
        return ClusterAnswer(
            value: merge(Array(replies.values)), answered: replies.keys.sorted(), missing: missing,
            truncated: replies.values.contains { $0.truncated })
    }

    private static func union(_ lists: [[String]]) -> [String] {
        Array(Set(lists.joined())).sorted()
    }

    /// This node's part of a cluster query.
    func answer(_ query: ClusterQuery, limit: Int) -> ClusterReply {
        func reply(_ names: [String]) -> ClusterReply {
            ClusterReply(names: Array(names.prefix(max(0, limit))), count: names.count)
        }
        switch query {
        case .members(let namespace, let room):
            return reply(Array(Set(members(ofRoom: room, in: namespace).map(\.conn.id))).sorted())
        case .rooms(let namespace):
            return reply(rooms(in: namespace))
        case .connectionCount:
            return ClusterReply(count: connectionCount)
        case .online(let id):
            return ClusterReply(count: connections(id: id).count)
        }
    }

    /// Another node joined or left: a node gone makes its members leave the followed rooms; a
    /// node (re-)learned is asked who it holds there.
    func clusterChanged(_ change: PeerTable.Change) {
        switch change {
        case .gone(let node):
            for event in presenceRooms.withLock({ $0.nodeGone(node) }) { reportPresence(event) }
        case .joined(let node):
            for key in presenceRooms.withLock({ $0.followed }) { syncPresence(key, announcing: node) }
        }
    }

    func presenceArrived(_ event: PresenceEvent) {
        if presenceRooms.withLock({ $0.apply(event) }) { reportPresence(event) }
    }

    /// A local member joined a room of a presence namespace: told to the nodes following it,
    /// and here; the room is followed from its first local member on.
    func presenceJoined(_ id: String, room: String, in namespace: String) {
        let key = PresenceRooms.Key(namespace: namespace, room: room)
        let event = PresenceEvent(kind: .joined, namespace: namespace, room: room, id: id, node: nodeName)
        if presenceRooms.withLock({ $0.localJoined(key) }), let link {
            link.retain(Subjects.presence(link.cluster, namespace, room))
            syncPresence(key, announcing: nil)
        }
        publishPresence(event)
        reportPresence(event)
    }

    func presenceLeft(_ id: String, room: String, in namespace: String) {
        let key = PresenceRooms.Key(namespace: namespace, room: room)
        let event = PresenceEvent(kind: .left, namespace: namespace, room: room, id: id, node: nodeName)
        publishPresence(event)
        reportPresence(event)
        if presenceRooms.withLock({ $0.localLeft(key) }), let link {
            link.release(Subjects.presence(link.cluster, namespace, room))
        }
    }

    private func publishPresence(_ event: PresenceEvent) {
        guard let link, let body = ClusterReply.encode(event) else { return }
        let subject = Subjects.presence(link.cluster, event.namespace, event.room)
        guard link.connection.hasInterest(in: subject) else { return }
        link.publishControl(.presence, to: subject, token: "", frame: ByteBuffer(bytes: body))
    }

    /// Learns who the other nodes hold in a followed room (without events: they were there
    /// before), or, for a node (re-)learned, reports its members as joins.
    private func syncPresence(_ key: PresenceRooms.Key, announcing node: String?) {
        guard let link else { return }
        let timeout = configuration.presence.queryTimeout
        presenceRooms.withLock { $0.syncStarted(key) }
        Task {
            let (replies, _) = await link.ask(.members(namespace: key.namespace, room: key.room), timeout: timeout, own: ClusterReply())
            for (from, reply) in replies where from != nodeName {
                let added = presenceRooms.withLock { $0.merge(reply.names, of: from, in: key) }
                guard from == node else { continue }
                for id in added {
                    reportPresence(PresenceEvent(kind: .joined, namespace: key.namespace, room: key.room, id: id, node: from))
                }
            }
            presenceRooms.withLock { $0.syncEnded(key) }
        }
    }

    /// Reports an event here: the hook, and the client event to the room's local members.
    private func reportPresence(_ event: PresenceEvent) {
        configuration.onPresence?(event)
        guard let name = configuration.presence.clientEvent, let body = ClusterReply.encode(event),
            let frame = try? MessageCodec.encode(Message(namespace: event.namespace, room: event.room, event: name, body: ByteBuffer(bytes: body)))
        else { return }
        _ = deliverLocally(frame, binary: false, to: BroadcastTarget(namespace: event.namespace, room: event.room), keeping: false)
    }

    /// Waits until the live nodes (this one included, sorted) satisfy `condition` (for tests).
    package func waitForClusterNodes(
        _ what: String, timeout: Duration = .seconds(10), until condition: @escaping @Sendable ([String]) -> Bool
    ) async throws {
        guard let link else {
            if condition([nodeName]) { return }
            throw NeffosError.timeout.with(detail: "\(what): this server has no exchange")
        }
        let me = nodeName
        _ = try await link.peerNames.wait(
            timeout: timeout,
            orThrow: { NeffosError.timeout.with(detail: "\(what); live nodes: \(link.liveNodes)") },
            until: { names in condition((names + [me]).sorted()) ? .success(true) : nil })
    }

    /// Cuts this node off its exchange as a crash would: no goodbye, no more heartbeats; the
    /// other nodes notice only by its silence (for tests of the node timeout).
    package func severExchange() async {
        await detachLink(sayingGoodbye: false)
    }
}
