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
            state.withLock { s in
                s.transport = transport
                s.phase = .open
                _ = s.addNamespace(ns, conn: self)
            }
            delegate.connDidOpen(self)
            return
        }
        let timer = handshakeTimeout.map { timeout in
            transport.eventLoop.scheduleTask(in: timeout.timeAmount) { self.handshakeTimedOut() }
        }
        state.withLock { s in
            s.transport = transport
            if case .handshaking(var handshake) = s.phase {
                handshake.timer = timer
                s.phase = .handshaking(handshake)
            }
        }
    }

    /// On the event loop: the server's on-connect hook returned (or threw).
    func receiveVerdict(_ verdict: ConnState.Handshake.Verdict) {
        enum Next { case complete, closeRefused(String), none }
        let next = state.withLock { s -> Next in
            switch s.phase {
            case .handshaking(var handshake):
                guard handshake.verdict == nil else { return .none }
                handshake.verdict = verdict
                s.phase = .handshaking(handshake)
                return handshake.identified ? .complete : .none
            case .open:
                // The hook had accepted early (it connected a namespace) and threw afterwards.
                if case .refused(let error) = verdict {
                    return .closeRefused(NeffosError.wireText(of: error))
                }
                return .none
            case .reconnecting, .closed:
                return .none
            }
        }
        switch next {
        case .complete: completeHandshake()
        case .closeRefused(let text): close(code: .policyViolation, reason: text)
        case .none: break
        }
    }

    private func handshakeTimedOut() {
        let stillWaiting = state.withLock { s -> Bool in
            if case .handshaking = s.phase { return true }
            return false
        }
        guard stillWaiting else { return }
        logger.debug("closing a connection that did not complete the neffos handshake in time")
        close(code: .policyViolation, reason: NeffosError.handshakeTimeout.text)
    }

    /// On the event loop: sends `A<id>` or `H<error>` once the client identified itself and
    /// the hook decided, then handles the frames that arrived meanwhile.
    func completeHandshake() {
        enum Outcome {
            case accept(id: String, queue: [(frame: ByteBuffer, binary: Bool)], any ConnTransport,
                        [CheckedContinuation<Void, any Error>])
            case refuse(any Error, any ConnTransport)
            case none
        }
        let outcome = state.withLock { s -> Outcome in
            guard case .handshaking(let handshake) = s.phase, handshake.identified,
                let verdict = handshake.verdict, let transport = s.transport
            else { return .none }
            handshake.timer?.cancel()
            switch verdict {
            case .accepted:
                s.phase = .open
                let waiters = s.openWaiters
                s.openWaiters = []
                return .accept(id: id, queue: handshake.queue, transport, waiters)
            case .refused(let error):
                s.phase = .handshaking(ConnState.Handshake(identified: true, verdict: verdict))
                s.closeRequested = true
                return .refuse(error, transport)
            }
        }
        switch outcome {
        case .accept(let id, let queue, let transport, let waiters):
            _ = transport.write(MessageCodec.acceptFrame(id: id), binary: false)
            transport.flush()
            delegate.connDidOpen(self)
            for waiter in waiters { waiter.resume() }
            for (frame, binary) in queue { receiveOpen(frame, binary: binary) }
        case .refuse(let error, let transport):
            let text = NeffosError.wireText(of: error)
            logger.debug("on-connect refused the connection", metadata: ["reason": "\(text)"])
            _ = transport.write(MessageCodec.refuseFrame(text: text), binary: false)
            transport.flush()
            transport.close(code: .policyViolation, reason: text)
        case .none:
            break
        }
    }

    // MARK: Frames

    /// On the event loop: one frame arrived from the transport.
    package func transportReceived(_ frame: ByteBuffer, binary: Bool) {
        if isHandshaking() {
            receiveDuringHandshake(frame, binary: binary)
        } else {
            receiveOpen(frame, binary: binary)
        }
    }

    private func isHandshaking() -> Bool {
        state.withLock { s in
            if case .handshaking = s.phase { return true }
            return false
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
            let ready = state.withLock { s -> Bool in
                guard case .handshaking(var handshake) = s.phase, !handshake.identified else {
                    return false
                }
                handshake.identified = true
                s.phase = .handshaking(handshake)
                return handshake.verdict != nil
            }
            if ready { completeHandshake() }
        } else {
            queueDuringHandshake(frame, binary: binary)
        }
    }

    private func queueDuringHandshake(_ frame: ByteBuffer, binary: Bool) {
        let overflow = state.withLock { s -> Bool in
            guard case .handshaking(var handshake) = s.phase else { return false }
            guard handshake.queue.count < settings.maxQueuedEvents else { return true }
            handshake.queue.append((frame, binary))
            s.phase = .handshaking(handshake)
            return false
        }
        if overflow {
            logger.debug("closing: too many frames before the handshake completed")
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
                logger.debug("dropped an invalid frame", metadata: ["error": "\(error)", "bytes": "\(frame.readableBytes)"])
                server?.metrics.invalidFrame()
                return
            }
        }
        server?.metrics.messagesIn.increment()
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
        let pending = state.withLock { s -> ConnState.PendingAsk? in
            guard let pending = s.pending.removeValue(forKey: token) else { return nil }
            if message.error == nil, let apply = pending.onReply { apply(&s, self) }
            return pending
        }
        if let pending {
            pending.timer?.cancel()
            if let error = message.error {
                pending.continuation.resume(throwing: error)
            } else {
                pending.continuation.resume(returning: message)
            }
            return true
        }
        if !isClient && delegate.conn(self, didReceiveUnmatchedReply: message) { return true }
        if isClient || tokens.hasIssued(serverToken: token[...]) {
            logger.debug("dropped a late or duplicate reply", metadata: ["wait": "\(token)"])
            return true
        }
        return false
    }

    // MARK: Ordered dispatch

    /// On the event loop: hands `message` to its handler, inline when possible.
    private func dispatch(_ message: Message) {
        enum Route {
            case inline(NSConn, EventHandler.Sync)
            case start
            case queued(pause: (any ConnTransport)?)
            case drop(String)
        }
        let route = state.withLock { s -> Route in
            if s.busy {
                s.inbox.append(.message(message))
                if s.inbox.count >= settings.maxQueuedEvents && !s.readingPaused {
                    s.readingPaused = true
                    return .queued(pause: s.transport)
                }
                return .queued(pause: nil)
            }
            if !message.isSystemRequest {
                guard let entry = s.namespaces[message.namespace] else {
                    if message.wait.isEmpty { return .drop("namespace not connected") }
                    s.busy = true
                    return .start
                }
                guard let handler = entry.nsConn.events.handler(for: message.event) else {
                    return .drop("no handler")
                }
                if case .sync(let body) = handler.body { return .inline(entry.nsConn, body) }
            }
            s.busy = true
            return .start
        }
        switch route {
        case .inline(let ns, let body):
            do {
                if let reply = try body(ns, message) { sendReply(to: message, reply) }
            } catch {
                sendError(to: message, error)
            }
        case .start:
            startDraining(with: .message(message))
        case .queued(let pause):
            pause?.setReadingPaused(true)
        case .drop(let why):
            logger.debug("dropped an event", metadata: ["event": "\(message.event)", "namespace": "\(message.namespace)", "why": "\(why)"])
        }
    }

    private func enqueue(_ item: ConnState.Inbound) {
        let start = state.withLock { s -> Bool in
            if s.busy {
                s.inbox.append(item)
                return false
            }
            s.busy = true
            return true
        }
        if start { startDraining(with: item) }
    }

    private func startDraining(with first: ConnState.Inbound) {
        Task { await self.drain(first) }
    }

    private func drain(_ first: ConnState.Inbound) async {
        var item = first
        while true {
            await process(item)
            let next = state.withLock { s -> (ConnState.Inbound?, (any ConnTransport)?) in
                guard let next = s.inbox.popFirst() else {
                    s.busy = false
                    return (nil, nil)
                }
                if s.readingPaused && s.inbox.count <= settings.maxQueuedEvents / 2 {
                    s.readingPaused = false
                    return (next, s.transport)
                }
                return (next, nil)
            }
            if let transport = next.1 {
                transport.eventLoop.execute { transport.setReadingPaused(false) }
            }
            guard let following = next.0 else { return }
            item = following
        }
    }

    private func process(_ item: ConnState.Inbound) async {
        switch item {
        case .message(let message):
            switch message.event {
            case EventName.namespaceConnect.rawValue: await replyConnect(message)
            case EventName.namespaceDisconnect.rawValue: await replyDisconnect(message)
            case EventName.roomJoin.rawValue: await replyRoomJoin(message)
            case EventName.roomLeave.rawValue: await replyRoomLeave(message)
            default: await handleEvent(message)
            }
        case .closed(let reason):
            await fireCloseEvents(reason)
        }
    }

    private func handleEvent(_ message: Message) async {
        guard let ns = namespace(message.namespace) else {
            if message.wait.isEmpty {
                logger.debug("dropped an event for a namespace not connected", metadata: ["namespace": "\(message.namespace)"])
            } else {
                sendError(to: message, NeffosError.badNamespace)
            }
            return
        }
        guard let handler = ns.events.handler(for: message.event) else { return }
        do {
            if let reply = try await handler(ns, message) { sendReply(to: message, reply) }
        } catch {
            sendError(to: message, error)
        }
    }

    // MARK: System requests from the remote side

    private func replyConnect(_ request: Message) async {
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
        let added = state.withLock { s -> Bool in
            guard !s.phase.isClosed, s.namespaces[request.namespace] == nil else { return false }
            for waiter in s.addNamespace(ns, conn: self) { waiter.resume(returning: ns) }
            return true
        }
        sendEmptyReply(to: request.wait)
        if added { await fireLocal(.namespaceConnected, on: ns, request) }
    }

    private func replyDisconnect(_ request: Message) async {
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
        let rooms = state.withLock { $0.removeNamespace(request.namespace, conn: self) }
        await fireForcedLeaves(ns, rooms: rooms, isLocal: false)
        sendEmptyReply(to: request.wait)
        if isClient { await fireLocal(.namespaceDisconnect, on: ns, request) }
    }

    private func replyRoomJoin(_ request: Message) async {
        guard !request.wait.isEmpty, !request.isNoOp else { return }
        guard let ns = namespace(request.namespace) else {
            sendError(to: request, NeffosError.badNamespace)
            return
        }
        if ns.isJoined(request.room) {
            sendEmptyReply(to: request.wait)
            return
        }
        do {
            _ = try await fire(.roomJoin, on: ns, request)
        } catch {
            sendError(to: request, error)
            return
        }
        state.withLock { _ = $0.addRoom(request.room, in: request.namespace, conn: self) }
        sendEmptyReply(to: request.wait)
        var joined = request
        joined.event = EventName.roomJoined.rawValue
        await fireLocal(.roomJoined, on: ns, joined)
    }

    private func replyRoomLeave(_ request: Message) async {
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
        state.withLock { _ = $0.removeRoom(request.room, in: request.namespace, conn: self) }
        sendEmptyReply(to: request.wait)
        var left = request
        left.event = EventName.roomLeft.rawValue
        await fireLocal(.roomLeft, on: ns, left)
    }

    // MARK: Firing local events

    /// Runs the handler for `event` (or the any-event handler) and returns its reply;
    /// its error propagates (it refuses the request).
    func fire(_ event: EventName, on ns: NSConn, _ message: Message) async throws -> Reply? {
        guard let handler = ns.events.handler(for: event.rawValue) else { return nil }
        var message = message
        message.event = event.rawValue
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
            var message = Message(namespace: ns.namespace, room: room, event: EventName.roomLeave.rawValue)
            message.isForced = true
            message.isLocal = isLocal
            await fireLocal(.roomLeave, on: ns, message)
            await fireLocal(.roomLeft, on: ns, message)
        }
    }

    // MARK: Close

    /// On the event loop: the transport closed (either side).
    package func transportClosed(_ reason: CloseReason) {
        enum Outcome {
            /// A client lost an open connection and will reconnect.
            case lost([ConnState.PendingAsk])
            /// A client's reconnection attempt failed during its handshake.
            case attemptFailed([CheckedContinuation<Void, any Error>])
            /// Closed for good; waiters get the server's refusal if it refused the handshake.
            case finish([ConnState.PendingAsk], [CheckedContinuation<Void, any Error>],
                        [CheckedContinuation<NSConn, any Error>], refusal: NeffosError?)
            case none
        }
        let (closeRequested, wasOpen) = state.withLock { ($0.closeRequested, $0.phase.isOpen) }
        let reconnect = isClient && !closeRequested && wasOpen && delegate.connShouldReconnect(self, reason: reason)
        let outcome = state.withLock { s -> Outcome in
            if s.phase.isClosed { return .none }
            if case .handshaking(let handshake) = s.phase { handshake.timer?.cancel() }
            let pending = Array(s.pending.values)
            s.pending = [:]
            s.transport = nil
            if reconnect && s.phase.isOpen {
                s.phase = .reconnecting
                return .lost(pending)
            }
            if isClient && !s.closeRequested && s.everOpened, case .handshaking = s.phase {
                s.phase = .reconnecting
                defer { s.openWaiters = [] }
                return .attemptFailed(s.openWaiters)
            }
            s.phase = .closed(reason)
            let openWaiters = s.openWaiters
            s.openWaiters = []
            let namespaceWaiters = s.namespaceWaiters.values.flatMap { $0.values }
            s.namespaceWaiters = [:]
            return .finish(pending, openWaiters, namespaceWaiters, refusal: s.refusal)
        }
        switch outcome {
        case .none:
            return
        case .lost(let pending):
            failAll(pending, NeffosError.writeClosed.with(detail: "the connection was lost; the client is reconnecting"))
            delegate.connDidClose(self, reason: reason)
        case .attemptFailed(let waiters):
            let error = NeffosError.dialFailed.with(detail: "the connection closed during the handshake (\(reason))")
            for waiter in waiters { waiter.resume(throwing: error) }
        case .finish(let pending, let openWaiters, let namespaceWaiters, let refusal):
            let error = refusal ?? NeffosError.writeClosed.with(detail: "connection closed (\(reason))")
            failAll(pending, error)
            for waiter in openWaiters { waiter.resume(throwing: error) }
            for waiter in namespaceWaiters { waiter.resume(throwing: error) }
            delegate.connDidClose(self, reason: reason)
            enqueueClose(reason)
        }
    }

    /// Queues the local close events behind the events already received.
    func enqueueClose(_ reason: CloseReason) {
        enqueue(.closed(reason))
    }

    private func failAll(_ pending: [ConnState.PendingAsk], _ error: NeffosError) {
        for ask in pending {
            ask.timer?.cancel()
            ask.continuation.resume(throwing: error)
        }
    }

    /// Fires, in order, room-leave/left for every room and namespace-disconnect for every
    /// namespace (all marked forced and local), then tells the owner.
    private func fireCloseEvents(_ reason: CloseReason) async {
        let entries = state.withLock { s -> [(NSConn, Set<String>)] in
            let names = s.namespaces.keys.sorted()
            return names.map { name in
                let ns = s.namespaces[name]!.nsConn
                return (ns, s.removeNamespace(name, conn: self))
            }
        }
        for (ns, rooms) in entries {
            await fireForcedLeaves(ns, rooms: rooms, isLocal: true)
            var message = Message(namespace: ns.namespace, event: EventName.namespaceDisconnect.rawValue)
            message.isForced = true
            message.isLocal = true
            await fireLocal(.namespaceDisconnect, on: ns, message)
        }
        await delegate.connDidFinish(self, reason: reason)
    }

    // MARK: Client handshake

    private func clientHandshakeAccepted(id: String) {
        let (waiters, queued) = state.withLock { s -> ([CheckedContinuation<Void, any Error>], [(frame: ByteBuffer, binary: Bool)]) in
            guard case .handshaking(let handshake) = s.phase else { return ([], []) }
            handshake.timer?.cancel()
            setID(id)
            s.phase = .open
            let waiters = s.openWaiters
            s.openWaiters = []
            return (waiters, handshake.queue)
        }
        delegate.connDidOpen(self)
        for waiter in waiters { waiter.resume() }
        for (frame, binary) in queued { receiveOpen(frame, binary: binary) }
    }

    private func clientHandshakeRefused(text: String) {
        let error = NeffosError.handshakeRefused.with(detail: text)
        let (waiters, transport) = state.withLock { s -> ([CheckedContinuation<Void, any Error>], (any ConnTransport)?) in
            if case .handshaking(let handshake) = s.phase { handshake.timer?.cancel() }
            s.closeRequested = true
            s.refusal = error
            let waiters = s.openWaiters
            s.openWaiters = []
            return (waiters, s.transport)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        transport?.close(code: .normal, reason: "")
    }
}

extension Message {
    /// Whether this is one of the four system requests that travel as asks.
    var isSystemRequest: Bool {
        switch event {
        case EventName.namespaceConnect.rawValue, EventName.namespaceDisconnect.rawValue,
            EventName.roomJoin.rawValue, EventName.roomLeave.rawValue:
            true
        default:
            false
        }
    }
}
