/// The server as its connections' owner: it keeps the connection index and the cluster's
/// subscriptions in step with what each connection tells it (in order, outside the
/// connection's lock), and finishes connections.
extension Server: ConnDelegate {
    func connDidOpen(_ conn: Conn) {
        opened.add(1, ordering: .relaxed)
        metrics.connections.increment()
        index.withLock { $0.open(conn) }
        if let link { link.retain(link.connectionSubject(conn.id)) }
    }

    func conn(_ conn: Conn, didConnect ns: NSConn, transport: (any ConnTransport)?) {
        guard let transport else { return }
        let added = index.withLock { $0.add(Member(nsConn: ns, transport: transport, id: conn.id)) }
        guard added else { return }
        metrics.namespaces.increment()
        if let link { link.retain(link.namespaceSubject(ns.namespace)) }
    }

    func conn(_ conn: Conn, didDisconnect ns: NSConn) {
        let removed = index.withLock { $0.remove(ns) }
        guard removed else { return }
        metrics.namespaces.decrement()
        if let link { link.release(link.namespaceSubject(ns.namespace)) }
    }

    func conn(_ conn: Conn, didJoin room: String, in ns: NSConn, recovery: JoinRecovery?) {
        let (joined, newRoom, answered) = index.withLock { index in
            let (joined, newRoom) = index.join(ns, room: room)
            let answered = recovery.map { sendJoin($0, of: ns, in: index) } ?? true
            return (joined, newRoom, answered)
        }
        if let recovery, !answered { conn.sendEmptyReply(to: recovery.request.wait) }
        if newRoom { metrics.rooms.increment() }
        if joined, let link { link.retain(link.roomSubject(ns.namespace, room)) }
        if joined, configuration.presence.namespaces.contains(ns.namespace) { presenceJoined(conn.id, room: room, in: ns.namespace) }
    }

    func conn(_ conn: Conn, didLeave room: String, in ns: NSConn) {
        let (left, roomGone) = index.withLock { $0.leave(ns, room: room) }
        if roomGone { metrics.rooms.decrement() }
        if left, let link {
            let subject = link.roomSubject(ns.namespace, room)
            if !(roomGone && keptRoomEmptied(room, in: ns.namespace, subject: subject, link: link)) { link.release(subject) }
        }
        if left, configuration.presence.namespaces.contains(ns.namespace) { presenceLeft(conn.id, room: room, in: ns.namespace) }
    }

    func connShouldReconnect(_ conn: Conn, reason: CloseReason) -> Bool { false }

    func connDidClose(_ conn: Conn, reason: CloseReason) {
        live.subtract(1, ordering: .relaxed)
        tracing?.endHandshake(conn, refusal: "closed before the handshake completed")
        let wasOpen = index.withLock { $0.close(conn) }
        if wasOpen, let link { link.release(link.connectionSubject(conn.id)) }
        if wasOpen {
            opened.add(-1, ordering: .relaxed)
            metrics.connections.decrement()
        }
        conn.logDebug("connection closed", metadata: ["reason": "\(reason)"])
    }

    func connDidFinish(_ conn: Conn, reason: CloseReason) async {
        if let hook = disconnectHook(for: conn) { await hook(conn) }
        connDidFinishNow(conn, reason: reason)
    }

    func connFinishesNow(_ conn: Conn) -> Bool { disconnectHook(for: conn) == nil }

    func connDidFinishNow(_ conn: Conn, reason: CloseReason) {
        let remaining = unfinished.subtract(1, ordering: .relaxed).newValue
        if remaining == 0 { lifecycle.withLock { $0.drained }?.set() }
    }

    /// The disconnect hook to run for `conn`, if any: it runs for connections that opened, or
    /// for all with ``Configuration/fireDisconnectAlways``.
    private func disconnectHook(for conn: Conn) -> (@Sendable (Conn) async -> Void)? {
        guard let hook = configuration.onDisconnect, conn.everOpened || configuration.fireDisconnectAlways else { return nil }
        return hook
    }

    func conn(_ conn: Conn, didReceiveUnmatchedReply reply: Message) -> Bool {
        let result: Result<Message, any Error> = reply.error.map { .failure($0) } ?? .success(reply)
        if let target = serverAsks.withLock({ $0.effect(of: reply.wait) }) {
            guard conn.isReceiver(of: target) else {
                conn.logDebug("dropped a reply to a server ask from a connection it did not go to", metadata: ["wait": "\(reply.wait)"])
                return true
            }
            if resolveAsk(reply.wait, result) { return true }
        }
        return link?.forwardReply(reply, from: conn) ?? false
    }
}

