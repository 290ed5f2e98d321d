import NIOCore

/// Messages, asks and the close: the ordered handler queue, this side's pending asks, and
/// every way a connection ends.
extension ConnStateMachine {
    // MARK: Ordered dispatch

    /// Where a received message goes.
    enum Route {
        /// Its synchronous handler runs now, on the event loop.
        case inline(NSConn, EventHandler.Sync)
        /// Nothing is queued: start draining the queue with it.
        case start
        /// Queued behind earlier messages; `pause` when the queue just reached its bound (stop
        /// reading from that transport).
        case queued(pause: (any ConnTransport)?)
        /// Dropped (logged at debug level).
        case drop(String)
    }

    /// A message for a handler arrived.
    mutating func route(_ message: Message) -> Route {
        if busy {
            inbox.append(.message(message))
            inboxBytes += message.body.readableBytes
            if (inbox.count >= maxQueuedEvents || inboxBytes >= maxQueuedBytes) && !readingPaused {
                readingPaused = true
                return .queued(pause: transport)
            }
            return .queued(pause: nil)
        }
        if !message.isSystemRequest {
            guard let entry = namespaces[message.namespace] else {
                if message.wait.isEmpty { return .drop("namespace not connected") }
                busy = true
                return .start
            }
            guard let handler = entry.nsConn.events.handler(for: message.event) else { return .drop("no handler") }
            if case .sync(let body) = handler.body { return .inline(entry.nsConn, body) }
        }
        busy = true
        return .start
    }

    /// Queues `item` (the local close events); returns whether the caller starts draining.
    mutating func enqueue(_ item: Inbound) -> Bool {
        if busy {
            inbox.append(item)
            return false
        }
        busy = true
        return true
    }

    /// The drainer finished an item: the next one, or `nil` (the queue is idle again), and the
    /// transport to resume reading from when the queue fell to half its bounds (count and
    /// bytes).
    mutating func nextInbound() -> (item: Inbound?, resume: (any ConnTransport)?) {
        guard let next = inbox.popFirst() else {
            busy = false
            return (nil, nil)
        }
        if case .message(let message) = next { inboxBytes -= message.body.readableBytes }
        if readingPaused && inbox.count <= maxQueuedEvents / 2 && inboxBytes <= maxQueuedBytes / 2 {
            readingPaused = false
            return (next, transport)
        }
        return (next, nil)
    }

    // MARK: This side's asks

    /// Registers an ask for `message` under `token`; returns the transport to send it with, or
    /// why it cannot be sent (the waiter is not registered then): among others, `limit` asks
    /// already wait.
    mutating func registerAsk(
        _ token: String, _ message: Message, _ continuation: CheckedContinuation<Answer, any Error>, effect: ReplyEffect,
        limit: Int = .max
    ) -> Result<any ConnTransport, NeffosError> {
        do throws(NeffosError) {
            let transport = try checkWritable(message)
            guard pending.count < limit else {
                throw NeffosError.limitExceeded.with(
                    detail: "\(pending.count) asks already wait for a reply on this connection (maxPendingAsks)")
            }
            pending.register(token, continuation, effect: effect)
            return .success(transport)
        } catch {
            return .failure(error)
        }
    }

    /// A reply matched to a waiting ask.
    struct MatchedReply {
        let ask: PendingReplies<Answer, ReplyEffect>.Entry
        /// Namespace waiters released by the reply's effect.
        var waiters: [(CheckedContinuation<NSConn, any Error>, NSConn)] = []
        var removedRooms: Set<String> = []
    }

    /// A reply with `token` arrived; a successful one applies its ask's effect. Returns the
    /// ask, or `nil` when no ask waits for that token.
    mutating func matchReply(_ token: String, succeeded: Bool) -> MatchedReply? {
        guard let ask = pending.take(token) else { return nil }
        endedAsks.insert(token)
        var matched = MatchedReply(ask: ask)
        if succeeded { (matched.waiters, matched.removedRooms) = apply(ask.effect) }
        return matched
    }

    /// Ends the ask `token` without a reply (deadline, cancellation): returns it, if it waited.
    mutating func endAsk(_ token: String) -> PendingReplies<Answer, ReplyEffect>.Entry? {
        guard let ask = pending.take(token) else { return nil }
        endedAsks.insert(token)
        return ask
    }

    /// The transport to write `message` with, once the connection is open, connected to the
    /// message's namespace, and joined to its room.
    func checkWritable(_ message: Message) throws(NeffosError) -> any ConnTransport {
        guard phase.isOpen, let transport else {
            if case .reconnecting = phase { throw NeffosError.reconnecting }
            throw NeffosError.writeClosed
        }
        let event = message.event
        if event != .namespaceConnect && event != .namespaceDisconnect {
            guard let entry = namespaces[message.namespace] else {
                throw NeffosError.badNamespace.with(detail: "not connected to \"\(message.namespace)\"")
            }
            if !message.room.isEmpty && event != .roomJoin
                && event != .roomLeave && !entry.rooms.contains(message.room)
            {
                throw NeffosError.badRoom.with(detail: "not joined to \"\(message.room)\"")
            }
        }
        return transport
    }

    // MARK: Closing

    /// Whether a lost transport might be followed by a reconnection (a client that did not
    /// ask to close, whose connection was open): the owner is asked.
    var mayReconnect: Bool { isClient && !closeRequested && phase.isOpen }

    /// What a closed transport leads to.
    enum CloseAction {
        case none
        /// A client lost an open connection and reconnects: fail its asks with `error`.
        case lost([PendingReplies<Answer, ReplyEffect>.Entry], NeffosError)
        /// A client's reconnection attempt failed during its handshake.
        case attemptFailed([CheckedContinuation<Void, any Error>], NeffosError)
        /// Closed for good: fail every waiter with `error`, then queue the local close events
        /// (``enqueue(_:)`` with ``Inbound/closed(_:)``).
        case finish(Waiters, NeffosError)
    }

    /// Everything that waits on a connection, handed back to fail at once.
    struct Waiters {
        var asks: [PendingReplies<Answer, ReplyEffect>.Entry] = []
        var open: [CheckedContinuation<Void, any Error>] = []
        var namespaces: [CheckedContinuation<NSConn, any Error>] = []

        /// Fails them all with `error`.
        func fail(_ error: NeffosError) {
            for ask in asks { ask.resume(with: .failure(error)) }
            for waiter in open { waiter.resume(throwing: error) }
            for waiter in namespaces { waiter.resume(throwing: error) }
        }
    }

    /// The transport closed (either side). `reconnect`: the owner will dial again.
    mutating func transportClosed(_ reason: CloseReason, reconnect: Bool) -> CloseAction {
        if phase.isClosed { return .none }
        if case .handshaking(let handshake) = phase { handshake.timer?.cancel() }
        let asks = pending.takeAll()
        transport = nil
        if reconnect && phase.isOpen {
            phase = .reconnecting
            ownerEvents.append(.closed(reason))
            return .lost(asks, NeffosError.writeClosed.with(detail: "the connection was lost; the client is reconnecting"))
        }
        if isClient && !closeRequested && everOpened && phase.isHandshaking {
            phase = .reconnecting
            return .attemptFailed(takeOpenWaiters(), NeffosError.dialFailed.with(detail: "the connection closed during the handshake (\(reason))"))
        }
        phase = .closed(reason)
        ownerEvents.append(.closed(reason))
        var waiters = Waiters(asks: asks, open: takeOpenWaiters())
        waiters.namespaces = namespaceWaiters.values.flatMap { $0.values }
        namespaceWaiters = [:]
        return .finish(waiters, failure ?? NeffosError.writeClosed.with(detail: "connection closed (\(reason))"))
    }

    /// A client connection that has no transport ends (reconnection gave up or was stopped):
    /// returns the waiters to fail, or `nil` when it is closed already or has a transport.
    mutating func finishWithoutTransport(_ reason: CloseReason) -> Waiters? {
        guard !phase.isClosed, transport == nil else { return nil }
        phase = .closed(reason)
        var waiters = Waiters(asks: pending.takeAll(), open: takeOpenWaiters())
        waiters.namespaces = namespaceWaiters.values.flatMap { $0.values }
        namespaceWaiters = [:]
        return waiters
    }

    // MARK: Client handshake

    /// A freshly upgraded transport for this client; `timer` is its handshake deadline.
    /// Returns `false` when the client was closed meanwhile (close the transport).
    mutating func attachClient(_ transport: any ConnTransport, timer: any Cancellable) -> Bool {
        guard !closeRequested, !phase.isClosed else { return false }
        var handshake = Handshake()
        handshake.timer = timer
        phase = .handshaking(handshake)
        self.transport = transport
        failure = nil
        return true
    }

    /// The server sent `A<id>`: the waiters to resume and the frames that came before it, or
    /// `nil` when the client was not waiting for it.
    mutating func clientAccepted() -> (waiters: [CheckedContinuation<Void, any Error>], queued: [QueuedFrame])? {
        guard case .handshaking(let handshake) = phase else { return nil }
        handshake.timer?.cancel()
        phase = .open
        ownerEvents.append(.opened)
        return (takeOpenWaiters(), handshake.queue)
    }

    /// The server refused the handshake (`H<error>`, `final`: no reconnection follows), or it
    /// did not complete in time: `error` is what every waiter gets, now and later. Returns the
    /// waiters and the transport to close, or `nil` when `transport` is no longer the one
    /// handshaking.
    mutating func clientHandshakeFailed(
        _ error: NeffosError, on transport: any ConnTransport, final: Bool
    ) -> (waiters: [CheckedContinuation<Void, any Error>], transport: any ConnTransport)? {
        guard case .handshaking(let handshake) = phase, let current = self.transport, current === transport else { return nil }
        handshake.timer?.cancel()
        if final { closeRequested = true }
        failure = error
        return (takeOpenWaiters(), current)
    }
}

extension Message {
    /// Whether this is one of the four system requests that travel as asks.
    var isSystemRequest: Bool {
        switch event {
        case .namespaceConnect, .namespaceDisconnect,
            .roomJoin, .roomLeave:
            true
        default:
            false
        }
    }
}
