import Logging

/// The system requests a connection answers (namespace connect/disconnect, room join/leave,
/// run in the ordered handler queue) and the local events it fires.
extension Conn {
    // MARK: System requests from the remote side

    func replyConnect(_ request: Message) async {
        guard let ns = beginConnect(request) else { return }
        do {
            _ = try await fire(.namespaceConnect, on: ns, request)
        } catch {
            sendError(to: request, error)
            return
        }
        if finishConnect(ns, request) { await fireLocal(.namespaceConnected, on: ns, request) }
    }

    /// ``replyConnect(_:)`` without a task, on the event loop: for a namespace whose connect
    /// handlers are synchronous (``connectsInline(_:)``).
    func replyConnectNow(_ request: Message) {
        guard let ns = beginConnect(request) else { return }
        do {
            _ = try fireNow(.namespaceConnect, on: ns, request)
        } catch {
            sendError(to: request, error)
            return
        }
        if finishConnect(ns, request) { fireLocalNow(.namespaceConnected, on: ns, request) }
    }

    /// Whether a namespace connect can be answered at once, with no task: the namespace's
    /// connect handlers are synchronous or absent (or it is not declared: an error reply).
    func connectsInline(_ request: Message) -> Bool {
        namespaces[request.namespace]?.runInline(Events.connectEvents) ?? true
    }

    /// A connect's checks: answers it when it needs no handler (already connected, unknown
    /// namespace) and returns `nil`, or returns the namespace connection to offer the handler.
    private func beginConnect(_ request: Message) -> NSConn? {
        guard !request.wait.isEmpty, !request.isNoOp else { return nil }
        if namespace(request.namespace) != nil {
            sendEmptyReply(to: request.wait)
            return nil
        }
        guard let events = namespaces[request.namespace] else {
            sendError(to: request, NeffosError.badNamespace)
            return nil
        }
        return NSConn(conn: self, namespace: request.namespace, events: events)
    }

    /// A connect the handler accepted: records the namespace, answers, and returns whether
    /// the connected event fires (it was not already connected meanwhile).
    private func finishConnect(_ ns: NSConn, _ request: Message) -> Bool {
        let waiters = machine.withLock { $0.addNamespace(ns) }
        notifyOwner()
        for waiter in waiters ?? [] { waiter.resume(returning: ns) }
        sendEmptyReply(to: request.wait)
        return waiters != nil
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
            logDebug("refused a join past a bound", metadata: ["room": "\(request.room.prefix(64))", "why": "\(refusal.detail ?? "")"])
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

    /// ``fire(_:on:_:)`` for a synchronous handler (or none), on the event loop; the caller
    /// checked with ``Events/runInline(_:)``.
    func fireNow(_ event: EventName, on ns: NSConn, _ message: Message) throws -> Reply? {
        guard let handler = ns.events.handler(for: event) else { return nil }
        guard case .sync(let body) = handler.body else {
            preconditionFailure("fireNow(\(event)) with an asynchronous handler: check Events.runInline first")
        }
        var message = message
        message.event = event
        return try body(ns, message)
    }

    /// Runs the handler for a notification whose error cannot refuse anything; an error is
    /// logged.
    func fireLocal(_ event: EventName, on ns: NSConn, _ message: Message) async {
        do {
            _ = try await fire(event, on: ns, message)
        } catch {
            logHandlerError(event, error)
        }
    }

    /// ``fireLocal(_:on:_:)`` for a synchronous handler (or none), on the event loop.
    func fireLocalNow(_ event: EventName, on ns: NSConn, _ message: Message) {
        do {
            _ = try fireNow(event, on: ns, message)
        } catch {
            logHandlerError(event, error)
        }
    }

    private func logHandlerError(_ event: EventName, _ error: any Error) {
        logDebug("a handler threw on a notification", metadata: ["event": "\(event)", "error": "\(error)"])
    }

    /// Fires room-leave and room-left, marked forced, for each of `rooms`.
    func fireForcedLeaves(_ ns: NSConn, rooms: Set<String>, isLocal: Bool) async {
        for (event, message) in Self.forcedLeaves(ns, rooms: rooms, isLocal: isLocal) {
            await fireLocal(event, on: ns, message)
        }
    }

    /// The events a forced leave of `rooms` fires, in order: room-leave then room-left, per
    /// room, in name order.
    static func forcedLeaves(_ ns: NSConn, rooms: Set<String>, isLocal: Bool) -> [(EventName, Message)] {
        rooms.sorted().flatMap { room -> [(EventName, Message)] in
            var message = Message(namespace: ns.namespace, room: room, event: .roomLeave)
            message.isForced = true
            message.isLocal = isLocal
            return [(.roomLeave, message), (.roomLeft, message)]
        }
    }
}
