import NIOCore

/// Node liveness and cluster-wide queries, over the same bus connection as everything else.
///
/// - **Liveness**: every node publishes a heartbeat to every node each
///   ``Server/PresenceConfiguration/heartbeatInterval``; a node not heard from for
///   ``Server/PresenceConfiguration/nodeTimeout`` is gone (crashed, partitioned, or its bus
///   connection lost), one that says goodbye (a graceful shutdown) is gone at once, and a node
///   heard again is re-learned. A node that hears a newcomer answers it directly at once, so
///   a node that starts learns the cluster within a round trip. With N nodes that is N
///   publishes and N × (N − 1) deliveries per interval.
/// - **Queries**: one publish to every node; each live node answers the asker with its local
///   part (N − 1 answers); the asker merges them, and names the nodes that did not answer
///   within the deadline.
extension ClusterLink {
    /// Starts publishing heartbeats and sweeping out silent nodes.
    func startHeartbeats() {
        let interval = max(presence.heartbeatInterval, .milliseconds(10))
        let task = Task { [weak self] in
            // The link is held only while it beats, not while the task sleeps: a link its server
            // dropped without a shutdown ends its heartbeats at the next tick.
            func beat() -> Bool {
                guard let self else { return false }
                self.publishHeartbeat(leaving: false)
                self.sweep()
                return true
            }
            while !Task.isCancelled, beat() {
                try? await Task.sleep(for: interval)
            }
        }
        heartbeats.withLock { $0 = task }
    }

    /// Stops the heartbeats and tells the other nodes this one is leaving (a graceful
    /// shutdown: they drop it at once instead of after the node timeout).
    func stopHeartbeats(sayingGoodbye: Bool) {
        heartbeats.withLock { task in
            task?.cancel()
            task = nil
        }
        if sayingGoodbye { publishHeartbeat(leaving: true) }
    }

    /// The live nodes: this one and the peers heard from within the node timeout, sorted.
    var liveNodes: [String] {
        (peers.withLock { $0.names } + [node]).sorted()
    }

    private func publishHeartbeat(leaving: Bool) {
        publishControl(.heartbeat, to: Subjects.nodes(cluster), token: leaving ? "leaving" : "", frame: ByteBuffer())
    }

    /// Publishes a control envelope (no target, no stream counting).
    func publishControl(_ kind: Envelope.Kind, to subject: String, token: String, frame: ByteBuffer) {
        let envelope = Envelope(
            kind: kind, binary: false, incarnation: incarnation, sequence: sequence.add(1, ordering: .relaxed).newValue,
            origin: node, token: token, frame: frame)
        guard let payload = envelope.encoded() else { return }
        publish(payload, to: subject)
    }

    private func sweep() {
        let gone = peers.withLock { $0.expire(now: .now(), timeout: presence.nodeTimeout) }
        report(gone)
    }

    func receiveHeartbeat(_ envelope: Envelope, local: any ClusterLocal) {
        let changes: [PeerTable.Change]
        if envelope.token == "leaving" {
            changes = peers.withLock { $0.left(envelope.origin) }.map { [$0] } ?? []
        } else {
            changes = peers.withLock { $0.heard(envelope.origin, incarnation: envelope.incarnation, at: .now()) }
            // A newcomer hears from this node at once, not a heartbeat interval later (it
            // answers likewise when this node is new to it; a known node does not answer).
            if changes.contains(.joined(envelope.origin)) {
                publishControl(.heartbeat, to: Subjects.node(cluster, envelope.origin), token: "", frame: ByteBuffer())
            }
        }
        report(changes)
    }

    private func report(_ changes: [PeerTable.Change]) {
        guard !changes.isEmpty else { return }
        let names = peers.withLock { $0.names }
        peerNames.update { $0 = names }
        guard let local = local.withLock({ $0.value }) else { return }
        for change in changes {
            switch change {
            case .joined(let name): logger.info("cluster: node \(name) joined")
            case .gone(let name): logger.info("cluster: node \(name) is gone")
            }
            local.clusterChanged(change)
        }
    }

    // MARK: Queries

    /// Asks every live node `query`; returns each node's reply (this node's included) and the
    /// nodes that did not answer by `timeout`.
    func ask(_ query: ClusterQuery, timeout: Duration, own: ClusterReply) async -> (replies: [String: ClusterReply], missing: [String]) {
        let expected = Set(peers.withLock { $0.names })
        guard !expected.isEmpty, let body = ClusterReply.encode(query) else { return ([node: own], []) }
        let token = "q\(incarnation)-\(sequence.add(1, ordering: .relaxed).newValue)"
        let (replies, missing) = await withCheckedContinuation { (continuation: CheckedContinuation<([String: ClusterReply], [String]), Never>) in
            queries.withLock { $0.register(token, expecting: expected) { continuation.resume(returning: ($0, $1)) } }
            publishControl(.query, to: Subjects.nodes(cluster), token: token, frame: ByteBuffer(bytes: body))
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                self?.queries.withLock { $0.expire(token) }?()
            }
        }
        return (replies.merging([node: own]) { first, _ in first }, missing)
    }

    func answerQuery(_ envelope: Envelope, local: any ClusterLocal) {
        guard let query = ClusterReply.decode(ClusterQuery.self, from: Array(buffer: envelope.frame)) else {
            logger.debug("dropped a malformed cluster query", metadata: ["origin": "\(envelope.origin)"])
            return
        }
        let reply = local.answer(query, limit: presence.maxQueryResults)
        guard let body = ClusterReply.encode(reply) else { return }
        publishControl(.answer, to: Subjects.node(cluster, envelope.origin), token: envelope.token, frame: ByteBuffer(bytes: body))
    }

    func receiveAnswer(_ envelope: Envelope) {
        guard let reply = ClusterReply.decode(ClusterReply.self, from: Array(buffer: envelope.frame)) else {
            logger.debug("dropped a malformed cluster answer", metadata: ["origin": "\(envelope.origin)"])
            return
        }
        queries.withLock { $0.reply(envelope.token, from: envelope.origin, reply) }?()
    }
}
