import Logging
import NIOCore

/// The receiving side of a connection: handshake, reply matching, ordered dispatch to
/// handlers, the system requests (namespace connect/disconnect, room join/leave) and close.
///
/// Frames are read on the transport's event loop. Replies to this side's asks are matched
/// there, before any handler runs, so a handler can await an ask on its own connection. An
/// event with a synchronous handler runs inline when nothing is queued before it; anything
/// else goes to the connection's queue, drained by one task at a time.
extension Conn {
    // MARK: Starting

    /// Starts a server-side connection on its transport's event loop.
    func startServerSide(transport: any ConnTransport, handshakeTimeout: Duration?) {
        transport.eventLoop.preconditionInEventLoop()
        if namespaces.isNativeOnly, let events = namespaces[""] {
            let ns = NSConn(conn: self, namespace: "", events: events)
            machine.withLock { $0.startServer(transport: transport, timer: nil, nativeNamespace: ns) }
            notifyOwner()
            return
        }
        let timer = handshakeTimeout.map { timeout in
            transport.eventLoop.scheduleTask(in: timeout.timeAmount) { self.handshakeTimedOut() }
        }
        machine.withLock { $0.startServer(transport: transport, timer: timer, nativeNamespace: nil) }
    }

    /// On the event loop: the server's on-connect hook returned (or threw).
    func receiveVerdict(_ verdict: ConnStateMachine.Verdict) {
        switch machine.withLock({ $0.verdictArrived(verdict) }) {
        case .completeHandshake: completeHandshake()
        case .close(let reason): close(code: .policyViolation, reason: reason)
        case .none: break
        }
    }

    private func handshakeTimedOut() {
        guard machine.withLock({ $0.handshakeTimerFired() }) else { return }
        logDebug("closing a connection that did not complete the neffos handshake in time")
        close(code: .policyViolation, reason: NeffosError.handshakeTimeout.text)
    }

    /// On the event loop: sends `A<id>` or `H<error>` once the client identified itself and
    /// the hook decided, then handles the frames that arrived meanwhile.
    func completeHandshake() {
        switch machine.withLock({ $0.completeHandshake() }) {
        case .accept(let transport, let waiters, let queued):
            _ = transport.write(MessageCodec.acceptFrame(id: id), binary: false, reliable: true)
            transport.flush()
            server?.tracing?.endHandshake(self)
            notifyOwner()
            for waiter in waiters { waiter.resume() }
            for item in queued { receiveOpen(item.frame, binary: item.binary) }
        case .refuse(let error, let transport):
            let error = settings.handlerErrors.wireError(
                for: error, event: "on-connect", known: settings.knownErrors, logger: logger)
            let text = NeffosError.wireText(of: error)
            logDebug("on-connect refused the connection", metadata: ["reason": "\(text)"])
            _ = transport.write(MessageCodec.refuseFrame(text: text), binary: false, reliable: true)
            transport.flush()
            server?.tracing?.endHandshake(self, refusal: text)
            transport.close(code: .policyViolation, reason: text)
        case .none:
            break
        }
    }

    // MARK: Frames

    /// One message arrived from the transport: a whole text (`binary: false`, UTF-8 checked)
    /// or binary message, fragments joined. Call it on the transport's event loop (a
    /// ``ConnectionTransport`` input).
    public func transportReceived(_ frame: ByteBuffer, binary: Bool) {
        if machine.withLock({ $0.phase.isHandshaking }) {
            receiveDuringHandshake(frame, binary: binary)
        } else {
            receiveOpen(frame, binary: binary)
        }
    }

    private func receiveDuringHandshake(_ frame: ByteBuffer, binary: Bool) {
        if isClient {
            switch MessageCodec.handshake(frame) {
            case .accepted(let id): clientHandshakeAccepted(id: id)
            case .refused(let text): clientHandshakeRefused(text: text)
            default: queueDuringHandshake(frame, binary: binary)
            }
            return
        }
        if MessageCodec.handshake(frame) == .identify {
            if machine.withLock({ $0.identified() }) { completeHandshake() }
        } else {
            queueDuringHandshake(frame, binary: binary)
        }
    }

    private func queueDuringHandshake(_ frame: ByteBuffer, binary: Bool) {
        let kept = machine.withLock {
            $0.queueDuringHandshake(frame, binary: binary, maxBytes: settings.maxBytesBeforeHandshake)
        }
        if !kept {
            logDebug("closing: too many frames before the handshake completed")
            close(code: .policyViolation, reason: "too many frames before the handshake")
        }
    }

    /// On the event loop: a frame of an open connection.
    func receiveOpen(_ frame: ByteBuffer, binary: Bool) {
        let message: Message
        if namespaces.isNativeOnly {
            guard frame.readableBytes > 0 else { return }
            message = .native(frame, isBinary: binary)
        } else {
            do {
                message = try MessageCodec.decode(
                    frame, isBinary: binary, allowNative: namespaces.acceptsNativeMessages,
                    knownErrors: settings.knownErrors)
            } catch {
                logDebug("dropped an invalid frame", metadata: ["error": "\(error)", "bytes": "\(frame.readableBytes)"])
                server?.metrics.invalidFrame()
                return
            }
        }
        server?.metrics.received(bytes: frame.readableBytes)
        if isClient, message.wait.utf8.first == RecoveryWire.marker {
            // A positioned broadcast (the history extension): remember where the room is.
            if let position = RecoveryWire.position(inWait: message.wait) {
                let key = RecoveryWire.RoomKey(message.namespace, message.room)
                machine.withLock { $0.positions[key] = position }
            }
            var broadcast = message
            broadcast.wait = ""
            return dispatch(broadcast)
        }
        if !message.wait.isEmpty && matchReply(message) { return }
        dispatch(message)
    }

    /// Resolves a reply to one of this side's asks; returns whether `message` was one.
    private func matchReply(_ message: Message) -> Bool {
        let token = message.wait
        let fromClientSide = WaitTokens.isClientToken(token)
        // A client's `$` token reaching the server is the client's own ask; a server token
        // reaching a client is the server's ask. Neither is a reply.
        if isClient != fromClientSide { return false }
        if let matched = machine.withLock({ $0.matchReply(token, succeeded: message.error == nil) }) {
            // The reply's effect (a namespace or room) reaches the owner before the asker goes on.
            notifyOwner()
            for (waiter, ns) in matched.waiters { waiter.resume(returning: ns) }
            if let error = message.error {
                matched.ask.resume(with: .failure(error))
            } else {
                matched.ask.resume(with: .success(.init(reply: message, removedRooms: matched.removedRooms)))
            }
            return true
        }
        if !isClient && delegate.conn(self, didReceiveUnmatchedReply: message) { return true }
        // A reply to an ask that ended is dropped; any other token is a request (PROTOCOL.md
        // §4: the server dispatches what it does not recognise).
        if isClient || machine.withLock({ $0.endedAsks.contains(token) }) || (server?.askEnded(token) ?? false) {
            logDebug("dropped a late or duplicate reply", metadata: ["wait": "\(token)"])
            return true
        }
        return false
    }

    // MARK: Ordered dispatch

    /// On the event loop: hands `message` to its handler, inline when possible.
    private func dispatch(_ message: Message) {
        switch machine.withLock({ $0.route(message) }) {
        case .inline(let ns, let body):
            if settings.bindsBodyCoder {
                BodyCoders.$current.withValue(settings.bodyCoder) { runInline(body, ns, message) }
            } else {
                runInline(body, ns, message)
            }
        case .start:
            if message.event == .namespaceConnect, connectsInline(message) {
                runNow { replyConnectNow(message) }
            } else {
                startDraining(with: .message(message))
            }
        case .queued(let pause):
            if let pause {
                pause.setReadingPaused(true)
                server?.metrics.readPaused()
            }
        case .drop(let why):
            logDebug("dropped an event", metadata: ["event": "\(message.event)", "namespace": "\(message.namespace)", "why": "\(why)"])
        }
    }

    private func enqueue(_ item: ConnStateMachine.Inbound) {
        guard machine.withLock({ $0.enqueue(item) }) else { return }
        if case .closed(let reason) = item, closesInline() {
            runNow { fireCloseEventsNow(reason) }
        } else {
            startDraining(with: item)
        }
    }

    /// Runs `body` at once, in the place of the handler task the queue was about to start
    /// (the queue is marked busy, so what arrives meanwhile waits behind it), then hands what
    /// did arrive to a task. For the system requests whose handlers are all synchronous, such
    /// as most namespace connects and closes: a task per connect and per close is most of
    /// what a connection costs to open and to close.
    private func runNow(_ body: () -> Void) {
        if settings.bindsBodyCoder {
            BodyCoders.$current.withValue(settings.bodyCoder) { body() }
        } else {
            body()
        }
        let (next, resume) = machine.withLock { $0.nextInbound() }
        if let resume {
            resume.eventLoop.execute { resume.setReadingPaused(false) }
        }
        if let next { startDraining(with: next) }
    }

    @inline(__always)
    private func runInline(_ body: EventHandler.Sync, _ ns: NSConn, _ message: Message) {
        do {
            let reply: Reply?
            if let server {
                reply = try server.metrics.timed {
                    guard let tracing = server.tracing else { return try body(ns, message) }
                    return try tracing.event(message, on: self) { try body(ns, message) }
                }
            } else {
                reply = try body(ns, message)
            }
            if let reply { sendReply(to: message, reply) }
        } catch {
            sendError(to: message, error)
        }
    }

    private func startDraining(with first: ConnStateMachine.Inbound) {
        if settings.bindsBodyCoder {
            let coder = settings.bodyCoder
            Task { await BodyCoders.$current.withValue(coder) { await self.drain(first) } }
        } else {
            Task { await self.drain(first) }
        }
    }

    private func drain(_ first: ConnStateMachine.Inbound) async {
        var item = first
        while true {
            await process(item)
            let (next, resume) = machine.withLock { $0.nextInbound() }
            if let resume {
                resume.eventLoop.execute { resume.setReadingPaused(false) }
            }
            guard let next else { return }
            item = next
        }
    }

    private func process(_ item: ConnStateMachine.Inbound) async {
        switch item {
        case .message(let message):
            switch message.event {
            case .namespaceConnect: await replyConnect(message)
            case .namespaceDisconnect: await replyDisconnect(message)
            case .roomJoin: await replyRoomJoin(message)
            case .roomLeave: await replyRoomLeave(message)
            default: await handleEvent(message)
            }
        case .closed(let reason):
            await fireCloseEvents(reason)
        }
    }

    private func handleEvent(_ message: Message) async {
        guard let ns = namespace(message.namespace) else {
            if message.wait.isEmpty {
                logDebug("dropped an event for a namespace not connected", metadata: ["namespace": "\(message.namespace)"])
            } else {
                sendError(to: message, NeffosError.badNamespace)
            }
            return
        }
        guard let handler = ns.events.handler(for: message.event) else { return }
        do {
            let reply: Reply?
            if let server {
                reply = try await server.metrics.timed {
                    guard let tracing = server.tracing else { return try await handler(ns, message) }
                    return try await tracing.event(message, on: self) { try await handler(ns, message) }
                }
            } else {
                reply = try await handler(ns, message)
            }
            if let reply { sendReply(to: message, reply) }
        } catch {
            sendError(to: message, error)
        }
    }

    // MARK: Close

    /// The transport's socket is gone (either side closed it, or it failed); call it once, on
    /// the transport's event loop (a ``ConnectionTransport`` input). Say who closed and with
    /// which code: the connection's disconnect events and reconnection logic read it.
    public func transportClosed(_ reason: CloseReason) {
        let reconnect = machine.withLock({ $0.mayReconnect }) && delegate.connShouldReconnect(self, reason: reason)
        let action = machine.withLock { $0.transportClosed(reason, reconnect: reconnect) }
        switch action {
        case .none:
            return
        case .lost(let asks, let error):
            for ask in asks { ask.resume(with: .failure(error)) }
            notifyOwner()
        case .attemptFailed(let waiters, let error):
            for waiter in waiters { waiter.resume(throwing: error) }
        case .finish(let waiters, let error):
            waiters.fail(error)
            notifyOwner()
            enqueueClose(reason)
        }
    }

    /// Queues the local close events behind the events already received.
    func enqueueClose(_ reason: CloseReason) {
        enqueue(.closed(reason))
    }

    /// Fires, in order, room-leave/left for every room and namespace-disconnect for every
    /// namespace (all marked forced and local), then tells the owner.
    private func fireCloseEvents(_ reason: CloseReason) async {
        for (event, ns, message) in closeEvents() { await fireLocal(event, on: ns, message) }
        await delegate.connDidFinish(self, reason: reason)
    }

    /// ``fireCloseEvents(_:)`` without a task, when ``closesInline()``.
    private func fireCloseEventsNow(_ reason: CloseReason) {
        for (event, ns, message) in closeEvents() { fireLocalNow(event, on: ns, message) }
        delegate.connDidFinishNow(self, reason: reason)
    }

    /// Whether the close events can fire at once, with no task: the connected namespaces'
    /// leave and disconnect handlers are synchronous or absent, and so is the owner's part.
    private func closesInline() -> Bool {
        // No user code runs in the check: it may be made under the lock, with no copy.
        machine.withLock { $0.namespaces.values.allSatisfy { $0.nsConn.events.runInline(Events.closeEvents) } }
            && delegate.connFinishesNow(self)
    }

    /// Removes every namespace and returns the local close events to fire, in order.
    private func closeEvents() -> [(EventName, NSConn, Message)] {
        let entries = machine.withLock { $0.removeAllNamespaces() }
        notifyOwner()
        return entries.flatMap { ns, rooms -> [(EventName, NSConn, Message)] in
            var disconnect = Message(namespace: ns.namespace, event: .namespaceDisconnect)
            disconnect.isForced = true
            disconnect.isLocal = true
            return Self.forcedLeaves(ns, rooms: rooms, isLocal: true).map { ($0.0, ns, $0.1) }
                + [(.namespaceDisconnect, ns, disconnect)]
        }
    }

    // MARK: Client handshake

    private func clientHandshakeAccepted(id: String) {
        setID(id)
        guard let (waiters, queued) = machine.withLock({ $0.clientAccepted() }) else { return }
        notifyOwner()
        for waiter in waiters { waiter.resume() }
        for item in queued { receiveOpen(item.frame, binary: item.binary) }
    }

    private func clientHandshakeRefused(text: String) {
        let error = NeffosError.handshakeRefused.with(detail: text)
        let failed = machine.withLock { machine in
            machine.transport.flatMap { machine.clientHandshakeFailed(error, on: $0, final: true) }
        }
        guard let (waiters, transport) = failed else { return }
        for waiter in waiters { waiter.resume(throwing: error) }
        transport.close(code: .normal, reason: "")
    }
}
