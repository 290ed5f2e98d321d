import Logging

/// The system requests a connection answers (namespace connect/disconnect, room join/leave,
/// run in the ordered handler queue) and the local events it fires.
extension Conn {
    // MARK: System requests from the remote side

    func replyConnect(_ request: Message) async {
        guard !request.wait.isEmpty, !request.isNoOp else { return }
        if namespace(request.namespace) != nil {
            sendEmptyReply(to: request.wait)
            return
        }
        guard let events = namespaces[request.namespace] else {
            sendError(to: request, NeffosError.badNamespace)
            return
        }
        let ns = NSConn(conn: self, namespace: request.namespace, events: events)
        do {
            _ = try await fire(.namespaceConnect, on: ns, request)
        } catch {
            sendError(to: request, error)
            return
        }
        let waiters = machine.withLock { $0.addNamespace(ns) }
        notifyOwner()
        for waiter in waiters ?? [] { waiter.resume(returning: ns) }
        sendEmptyReply(to: request.wait)
        if waiters != nil { await fireLocal(.namespaceConnected, on: ns, request) }
    }

    func replyDisconnect(_ request: Message) async {
        guard !request.wait.isEmpty, !request.isNoOp else { return }
        guard let ns = namespace(request.namespace) else {
            sendEmptyReply(to: request.wait)
            return
        }
        if !isClient {
            do {
                _ = try await fire(.namespaceDisconnect, on: ns, request)
            } catch {
                sendError(to: request, error)
                return
            }
        }
        let rooms = machine.withLock { $0.removeNamespace(request.namespace) }?.rooms ?? []
        notifyOwner()
        await fireForcedLeaves(ns, rooms: rooms, isLocal: false)
        sendEmptyReply(to: request.wait)
        if isClient { await fireLocal(.namespaceDisconnect, on: ns, request) }
    }

    func replyRoomJoin(_ request: Message) async {
        guard !request.wait.isEmpty, !request.isNoOp else { return }
        var request = request
        var recovery = server?.joinRecovery(for: &request, on: self)
        if let server, let pending = recovery, server.sharedHistory != nil {
            recovery = await server.prefetch(pending)
        }
        guard let ns = namespace(request.namespace) else {
            sendError(to: request, NeffosError.badNamespace)
            return
        }
        if ns.isJoined(request.room) {
            sendEmptyReply(to: request.wait)
            return
        }
        if let refusal = machine.withLock({ $0.checkJoin(request.room, in: request.namespace, bounds: settings.membership) }) {
            server?.metrics.limitExceeded(request.room.utf8.count > settings.membership.maxNameBytes ? .nameLength : .rooms)
            logger.debug("refused a join past a bound", metadata: ["room": "\(request.room.prefix(64))", "why": "\(refusal.detail ?? "")"])
            sendError(to: request, refusal)
            return
        }
        do {
            _ = try await fire(.roomJoin, on: ns, request)
        } catch {
            sendError(to: request, error)
            return
        }
        let added = machine.withLock { $0.addRoom(request.room, in: request.namespace, recovery: recovery) }
        notifyOwner()
        // A join with history is answered by the server, with what follows the reply.
        if recovery == nil || !added { sendEmptyReply(to: request.wait) }
        var joined = request
        joined.event = .roomJoined
        await fireLocal(.roomJoined, on: ns, joined)
    }

    func replyRoomLeave(_ request: Message) async {
        guard !request.wait.isEmpty, !request.isNoOp else { return }
        guard let ns = namespace(request.namespace) else {
            sendError(to: request, NeffosError.badNamespace)
            return
        }
        guard ns.isJoined(request.room) else {
            sendEmptyReply(to: request.wait)
            return
        }
        if isClient {
            await fireLocal(.roomLeave, on: ns, request)
        } else {
            do {
                _ = try await fire(.roomLeave, on: ns, request)
            } catch {
                sendError(to: request, error)
                return
            }
        }
        _ = machine.withLock { $0.removeRoom(request.room, in: request.namespace) }
        notifyOwner()
        sendEmptyReply(to: request.wait)
        var left = request
        left.event = .roomLeft
        await fireLocal(.roomLeft, on: ns, left)
    }

    // MARK: Firing local events

    /// Runs the handler for `event` (or the any-event handler) and returns its reply;
    /// its error propagates (it refuses the request).
    func fire(_ event: EventName, on ns: NSConn, _ message: Message) async throws -> Reply? {
        guard let handler = ns.events.handler(for: event) else { return nil }
        var message = message
        message.event = event
        return try await handler(ns, message)
    }

    /// Runs the handler for a notification whose error cannot refuse anything; an error is
    /// logged.
    func fireLocal(_ event: EventName, on ns: NSConn, _ message: Message) async {
        do {
            _ = try await fire(event, on: ns, message)
        } catch {
            logger.debug("a handler threw on a notification", metadata: ["event": "\(event)", "error": "\(error)"])
        }
    }

    /// Fires room-leave and room-left, marked forced, for each of `rooms`.
    func fireForcedLeaves(_ ns: NSConn, rooms: Set<String>, isLocal: Bool) async {
        for room in rooms.sorted() {
            var message = Message(namespace: ns.namespace, room: room, event: .roomLeave)
            message.isForced = true
            message.isLocal = isLocal
            await fireLocal(.roomLeave, on: ns, message)
            await fireLocal(.roomLeft, on: ns, message)
        }
    }
}
