import NIOCore

/// What a join to a room with history answers, and sends after its reply: worked out by the
/// server when the join arrives, carried by the connection's owner event to where the
/// connection enters the room's index (so that nothing delivered to the room falls between
/// what the join sends and what the room sends next).
struct JoinRecovery: Sendable {
    /// The join request (its wait token, namespace and room; the recovery body removed).
    var request: Message
    /// Whether the client asked to recover, and from where (`nil`: from nothing).
    var asked: Bool
    var after: HistoryPosition?
    /// Whether the client takes positions (the extension): a data reply saying how recovery
    /// went, positioned frames.
    var positions: Bool
    /// How many of the room's newest messages follow the reply (``HistoryRule/replayOnJoin``).
    var replay: Int
    /// With a shared history: what was read before the join took effect.
    var prefetched: SharedHistoryRead?
}

extension Server {
    /// Reads a room with history: the entries after `position` (all kept ones when `nil` or
    /// of another epoch), at most `limit`, the newest ones. On a server without a rule for the
    /// room, an empty read. For an app's own "history" event, for example:
    ///
    /// ```swift
    /// events.answer("history") { ns, message in
    ///     guard let server = ns.server else { return nil }
    ///     let read = try await server.history(ofRoom: message.room, in: ns.namespace, limit: 50)
    ///     return "\(read.entries.count) kept, the last at \(read.latest)"
    /// }
    /// ```
    ///
    /// With ``MemoryHistoryStore``, history is per node: this node's record of the room's
    /// broadcasts, from the first time it had a member there. With a shared history, it is the
    /// cluster's.
    ///
    /// - Throws: the shared history's error (for example, its NATS server unreachable for the
    ///   read's deadline); a memory store never throws.
    public func history(ofRoom room: String, in namespace: String, after position: HistoryPosition? = nil, limit: Int = 100) async throws -> HistoryRead {
        guard configuration.history.rule(for: room, in: namespace) != nil else {
            return HistoryRead(entries: [], latest: HistoryPosition(epoch: "none", offset: 0), isComplete: false)
        }
        guard let shared = sharedHistory else {
            let stream = HistoryStream(namespace: namespace, room: room)
            return index.withLock { _ in configuration.history.store.read(stream, after: position, limit: max(0, limit)) }
        }
        let epoch = shared.epoch
        let after = position.flatMap { $0.epoch == epoch ? $0.offset : nil } ?? 0
        let read = try await shared.read(namespace: namespace, room: room, after: after, through: nil, limit: max(0, limit))
        return HistoryRead(
            entries: read.entries.map { HistoryEntry(position: HistoryPosition(epoch: epoch, offset: $0.sequence), frame: $0.frame, isBinary: $0.isBinary) },
            latest: HistoryPosition(epoch: epoch, offset: read.latest),
            isComplete: read.isComplete && (position == nil || position?.epoch == epoch))
    }

    /// On a join request (server side): whether the room keeps history and what the join
    /// sends back; removes a recovery request from the body the join handler sees.
    func joinRecovery(for request: inout Message, on conn: Conn) -> JoinRecovery? {
        guard !configuration.history.rules.isEmpty,
            let rule = configuration.history.rule(for: request.room, in: request.namespace)
        else { return nil }
        var asked = false
        var after: HistoryPosition?
        if conn.wantsPositions, let ask = RecoveryWire.recoveryRequest(in: request.body) {
            (asked, after) = (ask != nil, ask)
            request.body = ByteBuffer()
        }
        guard conn.wantsPositions || rule.replayOnJoin > 0 else { return nil }
        var bare = request
        bare.body = ByteBuffer()
        return JoinRecovery(request: bare, asked: asked, after: after, positions: conn.wantsPositions, replay: rule.replayOnJoin)
    }

    /// With a shared history: reads what a join sends back, before the join takes effect (the
    /// read waits on the network; the join then adds what this node delivered meanwhile).
    func prefetch(_ recovery: JoinRecovery) async -> JoinRecovery {
        guard let shared = sharedHistory else { return recovery }
        var recovery = recovery
        // A position of another epoch asks for everything kept, and is not recovered; one of
        // this epoch at offset 0 (a join's reply in an empty room) is the room's start.
        let sameEpoch = recovery.after.map { $0.epoch == shared.epoch } ?? true
        let from = sameEpoch ? recovery.after?.offset ?? 0 : 0
        let limit = recovery.asked ? configuration.history.maxRecoveryMessages : min(recovery.replay, configuration.history.maxRecoveryMessages)
        do {
            var read = try await shared.read(
                namespace: recovery.request.namespace, room: recovery.request.room, after: recovery.asked ? from : 0, through: nil, limit: max(0, limit))
            if recovery.asked && !sameEpoch { read.isComplete = false }
            if recovery.asked { read = try await topUp(read, of: recovery.request, from: shared, limit: max(0, limit)) }
            recovery.prefetched = read
        } catch {
            logger.warning("could not read a room's shared history for a join", metadata: ["room": "\(recovery.request.room)", "error": "\(error)"])
            recovery.prefetched = SharedHistoryRead(entries: [], isComplete: false, latest: 0)
        }
        return recovery
    }

    /// After a recovery's read: while this node delivered more of the room since the read's
    /// end than its last deliveries reach back to (a long read under load), reads on from
    /// there, so that the join's seam has no hole (a few rounds at most; each reads what
    /// arrived during the previous one).
    private func topUp(_ first: SharedHistoryRead, of request: Message, from shared: any SharedHistoryStore, limit: Int) async throws -> SharedHistoryRead {
        let stream = HistoryStream(namespace: request.namespace, room: request.room)
        var read = first
        for _ in 0..<4 {
            let end = read.entries.last?.sequence ?? read.latest
            let covered = sharedRooms.withLock { rooms -> Bool in
                guard let state = rooms[stream], let delivered = state.last, delivered > end else { return true }
                return state.recent.contains { $0.previous == end }
            }
            guard !covered, read.entries.count < limit else { break }
            let more = try await shared.read(
                namespace: request.namespace, room: request.room, after: end, through: nil, limit: limit - read.entries.count)
            read.entries += more.entries
            read.latest = max(read.latest, more.latest)
            read.isComplete = read.isComplete && more.isComplete
            if more.entries.isEmpty { break }
        }
        return read
    }

    /// Under the index lock, once `ns` is in `room`: queues the join's reply and what follows
    /// it to the connection's loop, ahead of any later broadcast to the room (they queue to the
    /// same lane under the same lock).
    func sendJoin(_ recovery: JoinRecovery, of ns: NSConn, in index: ConnectionIndex) -> Bool {
        guard let member = index.member(ns) else { return false }
        let history = configuration.history
        let stream = HistoryStream(namespace: ns.namespace, room: recovery.request.room)
        let limit = recovery.asked ? history.maxRecoveryMessages : min(recovery.replay, history.maxRecoveryMessages)
        let read: HistoryRead
        if let shared = sharedHistory, let prefetched = recovery.prefetched {
            read = sharedJoinRead(prefetched, stream: stream, recovery: recovery, epoch: shared.epoch, limit: limit)
        } else {
            read = history.store.read(stream, after: recovery.asked ? recovery.after : nil, limit: limit)
        }
        let entries = limit > 0 ? read.entries : []
        let status: RecoveryWire.Status = recovery.asked ? (read.isComplete ? .recovered : .incomplete) : .notAsked
        let reply: ByteBuffer
        if recovery.positions, let data = try? MessageCodec.encodeReply(
            to: recovery.request, body: RecoveryWire.joinReply(status, count: entries.count, latest: read.latest))
        {
            reply = data
        } else {
            reply = MessageCodec.emptyReply(to: recovery.request.wait)
        }
        if recovery.asked { metrics.recovered(status == .recovered, messages: entries.count) }
        let frames = entries.map { entry in
            (recovery.positions ? RecoveryWire.positioned(entry.frame, at: entry.position) : entry.frame, entry.isBinary)
        }
        let transport = member.transport
        let metrics = self.metrics
        transport.lane.queue {
            _ = transport.write(reply, binary: false, reliable: true)
            // Reliable: a recovery is bounded (maxRecoveryMessages), and a dropped message would
            // be a silent gap after "recovered".
            for (frame, binary) in frames { _ = transport.write(frame, binary: binary, reliable: true) }
            transport.flush()
            metrics.sent(1, bytes: reply.readableBytes)
            for (frame, _) in frames { metrics.sent(1, bytes: frame.readableBytes) }
        }
        return true
    }

    /// Under the index lock: what a join to a room with a shared history sends: what it read
    /// before, up to what this node delivered (D), and from this node's recent deliveries what
    /// came after the read. A node that delivered nothing of the room yet starts its chain at
    /// the read's end, so that what follows is checked against it.
    private func sharedJoinRead(_ prefetched: SharedHistoryRead, stream: HistoryStream, recovery: JoinRecovery, epoch: String, limit: Int) -> HistoryRead {
        let after = recovery.after.flatMap { $0.epoch == epoch ? $0.offset : nil } ?? 0
        return sharedRooms.withLock { rooms -> HistoryRead in
            var state = rooms[stream] ?? SharedRoomState()
            // Where what the read returned ends (its entries' end; the room's last message
            // when it returned none): never past what this join sends.
            let readEnd = prefetched.entries.last?.sequence ?? prefetched.latest
            if state.last == nil { state.last = readEnd }
            let delivered = state.last!
            rooms[stream] = state
            var entries = prefetched.entries.filter { $0.sequence <= delivered }
            var complete = prefetched.isComplete
            // Where the read left off (within what this node delivered); what this node
            // delivered after it comes from its recent deliveries, chained.
            var chainEnd = entries.last?.sequence ?? (recovery.asked ? after : 0)
            if readEnd <= delivered { chainEnd = max(chainEnd, readEnd) }
            for kept in state.recent where kept.sequence > chainEnd && kept.sequence <= delivered {
                if kept.previous != chainEnd { complete = false }
                entries.append(kept)
                chainEnd = kept.sequence
            }
            if chainEnd < delivered { complete = false }
            if entries.count > limit {
                entries = Array(entries.suffix(max(0, limit)))
                complete = false
            }
            return HistoryRead(
                entries: entries.map { HistoryEntry(position: HistoryPosition(epoch: epoch, offset: $0.sequence), frame: $0.frame, isBinary: $0.isBinary) },
                latest: HistoryPosition(epoch: epoch, offset: delivered), isComplete: complete)
        }
    }

    /// A broadcast to a room with history: kept, given its position, and queued to the local
    /// members (positioned for those that take positions) in position order.
    func deliverKept(_ frame: ByteBuffer, binary: Bool, to target: BroadcastTarget, rule: HistoryRule) -> Int {
        let store = configuration.history.store
        let stream = HistoryStream(namespace: target.namespace, room: target.room)
        return index.withLock { index -> Int in
            let position = store.append(frame, isBinary: binary, to: stream, limits: rule.limits)
            return queueKept(frame, binary: binary, at: position, to: target, in: index)
        }
    }

    /// Under the index lock: queues a kept message to `target`'s local members, positioned for
    /// those that take positions; returns how many. Queued (never inline) under the lock: every
    /// member's loop gets the room's messages in position order, after any join reply queued
    /// before.
    func queueKept(_ frame: ByteBuffer, binary: Bool, at position: HistoryPosition, to target: BroadcastTarget, in index: ConnectionIndex) -> Int {
        let (groups, count) = index.receivers(of: target)
        guard count > 0 else { return 0 }
        let positioned = RecoveryWire.positioned(frame, at: position)
        let except = target.except
        let metrics = self.metrics
        for group in groups {
            group.lane.queue {
                var dropped = 0
                for member in group.members.values where member.id != except {
                    let out = member.nsConn.conn.wantsPositions ? positioned : frame
                    if !member.transport.write(out, binary: binary, reliable: false) { dropped += 1 }
                }
                for member in group.members.values where member.id != except { member.transport.flush() }
                if dropped > 0 { metrics.dropped(dropped) }
            }
        }
        metrics.sent(count, bytes: frame.readableBytes)
        return count
    }

    /// The last local member left a room with history: with an exchange, the node keeps
    /// receiving the room for the history's age (a member may come back and recover), then,
    /// if nobody came back, stops and forgets the room's history (what it would keep next is
    /// not a continuation). One timer per room however often it empties.
    func keptRoomEmptied(_ room: String, in namespace: String, subject: String, link: ClusterLink) -> Bool {
        guard let rule = configuration.history.rule(for: room, in: namespace) else { return false }
        let deadline = ContinuousClock.now + rule.limits.maxAge
        let limit = configuration.history.maxLingeringRooms
        let (kept, startTimer) = keptReleases.withLock { pending -> (Bool, Bool) in
            let isNew = pending[subject] == nil
            if isNew && pending.count >= limit { return (false, false) }
            pending[subject, default: PendingRelease(deadline: deadline)].count += 1
            pending[subject]!.deadline = deadline
            return (true, isNew)
        }
        guard kept else {
            // Let go at once: what this node keeps of the room next is not a continuation.
            metrics.limitExceeded(.lingeringRooms)
            index.withLock { index in
                if !index.hasMembers(inRoom: room, of: namespace) { configuration.history.store.drop(HistoryStream(namespace: namespace, room: room)) }
            }
            return false
        }
        if startTimer {
            let stream = HistoryStream(namespace: namespace, room: room)
            Task { [weak self] in await self?.releaseKeptRoom(subject, stream: stream, link: link) }
        }
        return true
    }

    private func releaseKeptRoom(_ subject: String, stream: HistoryStream, link: ClusterLink) async {
        while true {
            guard let deadline = keptReleases.withLock({ $0[subject]?.deadline }) else { return }
            if ContinuousClock.now < deadline {
                try? await Task.sleep(until: deadline)
                continue
            }
            let count = index.withLock { index -> Int in
                guard let due = keptReleases.withLock({ $0[subject] }), ContinuousClock.now >= due.deadline else { return 0 }
                keptReleases.withLock { $0[subject] = nil }
                if !index.hasMembers(inRoom: stream.room, of: stream.namespace) { configuration.history.store.drop(stream) }
                return due.count
            }
            for _ in 0..<count { link.release(subject) }
            if count > 0 { return }
        }
    }
}

extension Server {
    /// Emptied rooms with history this node still receives (for tests of their bound).
    package var lingeringRoomCount: Int { keptReleases.withLock { $0.count } }
}

/// Subscriptions of emptied rooms with history, released when their history has aged out.
struct PendingRelease: Sendable {
    var deadline: ContinuousClock.Instant
    var count = 0
}
