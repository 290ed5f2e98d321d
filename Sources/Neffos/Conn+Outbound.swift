import Logging
import NIOCore

/// The sending side of a connection: writes, asks with deadlines, and the system requests
/// this side initiates (connect a namespace, wait for one).
extension Conn {
    // MARK: Writing

    /// Sends `message` to the remote side.
    ///
    /// - Throws: ``NeffosError/writeClosed`` when the connection is closed,
    ///   ``NeffosError/badNamespace`` when it is not connected to the message's namespace,
    ///   ``NeffosError/badRoom`` when the message names a room this connection has not joined,
    ///   ``NeffosError/unrepresentableName`` when a name cannot be encoded.
    public func write(_ message: Message) throws(NeffosError) {
        let transport = try writableTransport(for: message)
        let frame = try MessageCodec.encode(message)
        send(frame, binary: message.isBinary, via: transport)
    }

    /// The transport, once the checks for writing `message` passed.
    private func writableTransport(for message: Message) throws(NeffosError) -> any ConnTransport {
        try state.withLock { s throws(NeffosError) -> any ConnTransport in
            try s.checkWritable(message)
        }
    }

    /// Sends an already encoded frame: written at once on the event loop when nothing is
    /// queued before it (see ``LoopLane``), otherwise queued there in order.
    @inline(__always)
    func send(_ frame: ByteBuffer, binary: Bool, via transport: any ConnTransport) {
        server?.metrics.messagesOut.increment()
        let lane = transport.lane
        if lane.canRunInline {
            if !transport.write(frame, binary: binary) { server?.metrics.dropped(1) }
            transport.flush()
        } else {
            lane.queue { [server] in
                if !transport.write(frame, binary: binary) { server?.metrics.dropped(1) }
                transport.flush()
            }
        }
    }

    /// Sends a frame if the connection still has a transport.
    private func sendUnchecked(_ frame: ByteBuffer, binary: Bool) {
        guard let transport = state.withLock({ $0.transport }) else { return }
        send(frame, binary: binary, via: transport)
    }

    /// Answers `request` with `reply` (a data reply: same token, namespace, room and event).
    func sendReply(to request: Message, _ reply: Reply) {
        do {
            sendUnchecked(try MessageCodec.encodeReply(to: request, body: reply.body), binary: reply.isBinary)
        } catch {
            logger.debug("could not encode a reply", metadata: ["error": "\(error)"])
        }
    }

    /// Answers `request` with an error frame carrying `error`'s text.
    func sendError(to request: Message, _ error: any Error) {
        do {
            sendUnchecked(try MessageCodec.encode(request.replying(error: error)), binary: false)
        } catch {
            logger.debug("could not encode an error reply", metadata: ["error": "\(error)"])
        }
    }

    /// Acknowledges a request with the empty reply `<wait>;;;;;;`.
    func sendEmptyReply(to wait: String) {
        sendUnchecked(MessageCodec.emptyReply(to: wait), binary: false)
    }

    // MARK: Asking

    /// Sends `message` as an ask and waits for the remote side's reply.
    ///
    /// The message gets a fresh wait token. The reply is matched where frames are read, so
    /// this may be awaited from inside an event handler of this same connection.
    ///
    /// - Parameters:
    ///   - message: what to ask (its namespace, room, event and body).
    ///   - timeout: how long to wait; the configuration's ask timeout when `nil`.
    /// - Returns: the reply.
    /// - Throws: the remote side's error (a ``KnownErrors`` value or a ``RemoteError``);
    ///   ``NeffosError/timeout`` when no reply came in time; ``NeffosError/writeClosed`` when
    ///   the connection closed meanwhile; `CancellationError` when the task was cancelled.
    public func ask(_ message: Message, timeout: Duration? = nil) async throws -> Message {
        try await ask(message, timeout: timeout, onReply: nil)
    }

    /// Sends an ask; `onReply` runs under the lock when a successful reply is matched.
    func ask(
        _ message: Message, timeout: Duration?,
        onReply: (@Sendable (inout ConnState, Conn) -> Void)?
    ) async throws -> Message {
        var message = message
        message.wait = isClient ? tokens.clientToken() : tokens.serverToken()
        let frame = try MessageCodec.encode(message)
        let token = message.wait
        let deadline = timeout ?? settings.askTimeout
        let event = message.event
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Message, any Error>) in
                let registered = state.withLock { s -> Result<any ConnTransport, NeffosError> in
                    do throws(NeffosError) {
                        let transport = try s.checkWritable(message)
                        s.pending[token] = ConnState.PendingAsk(
                            continuation: continuation, timer: nil, onReply: onReply)
                        return .success(transport)
                    } catch {
                        return .failure(error)
                    }
                }
                switch registered {
                case .failure(let error):
                    continuation.resume(throwing: error)
                case .success(let transport):
                    let timer = transport.eventLoop.scheduleTask(in: deadline.timeAmount) {
                        self.server?.metrics.askTimedOut()
                        self.failAsk(token, NeffosError.timeout.with(detail: "ask \"\(event)\" got no reply within \(deadline)"))
                    }
                    let stillPending = state.withLock { s -> Bool in
                        guard s.pending[token] != nil else { return false }
                        s.pending[token]!.timer = timer
                        return true
                    }
                    if !stillPending { timer.cancel() }
                    send(frame, binary: message.isBinary, via: transport)
                    if Task.isCancelled { failAsk(token, CancellationError()) }
                }
            }
        } onCancel: {
            self.failAsk(token, CancellationError())
        }
    }

    /// Ends the ask waiting on `token` with `error`, if it is still waiting.
    func failAsk(_ token: String, _ error: any Error) {
        guard let pending = state.withLock({ $0.pending.removeValue(forKey: token) }) else { return }
        pending.timer?.cancel()
        pending.continuation.resume(throwing: error)
    }

    // MARK: Waiting for the connection to open

    /// Waits until the handshake completed.
    ///
    /// On the server, calling this from the on-connect hook (which ``connect(_:timeout:)``
    /// does) accepts the connection early: `A<id>` is sent as soon as the client identified
    /// itself, so the hook may force the client into namespaces.
    func awaitOpen() async throws {
        if state.withLock({ $0.phase.isOpen }) { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enum Step {
                case ready, wait
                case failed(NeffosError)
                case complete(any EventLoop)
            }
            let step = state.withLock { s -> Step in
                switch s.phase {
                case .open:
                    return .ready
                case .closed:
                    return .failed(s.refusal ?? .writeClosed)
                case .reconnecting:
                    return .failed(.reconnecting)
                case .handshaking(var handshake):
                    s.openWaiters.append(continuation)
                    guard !isClient, handshake.verdict == nil else { return .wait }
                    handshake.verdict = .accepted
                    s.phase = .handshaking(handshake)
                    guard handshake.identified, let loop = s.transport?.eventLoop else { return .wait }
                    return .complete(loop)
                }
            }
            switch step {
            case .ready: continuation.resume()
            case .wait: break
            case .failed(let error): continuation.resume(throwing: error)
            case .complete(let loop): loop.execute { self.completeHandshake() }
            }
        }
    }

    // MARK: Namespaces

    /// Connects this connection to `namespace` and returns the namespace connection.
    ///
    /// The local ``EventName/namespaceConnect`` handler runs first (throwing cancels), then
    /// the remote side is asked; once it accepts, ``EventName/namespaceConnected`` fires
    /// locally. Connecting to a namespace already connected returns it at once. On the server,
    /// this forces the client into the namespace (it may be called from the on-connect hook).
    ///
    /// - Throws: ``NeffosError/badNamespace`` when either side does not declare the namespace;
    ///   the remote side's refusal; ``NeffosError/timeout``; ``NeffosError/writeClosed``.
    @discardableResult
    public func connect(_ namespace: String, timeout: Duration? = nil) async throws -> NSConn {
        if let ns = self.namespace(namespace) { return ns }
        guard let events = namespaces[namespace] else {
            throw NeffosError.badNamespace.with(detail: "\"\(namespace)\" is not declared on this side")
        }
        try MessageCodec.validate(name: namespace)
        try await awaitOpen()
        let ns = NSConn(conn: self, namespace: namespace, events: events)
        var request = Message(namespace: namespace, event: EventName.namespaceConnect.rawValue)
        request.isLocal = true
        _ = try await fire(.namespaceConnect, on: ns, request)
        _ = try await ask(request, timeout: timeout) { s, conn in
            guard s.namespaces[namespace] == nil else { return }
            for waiter in s.addNamespace(ns, conn: conn) { waiter.resume(returning: ns) }
        }
        guard let connected = self.namespace(namespace) else {
            throw NeffosError.writeClosed.with(detail: "the connection closed while connecting to \"\(namespace)\"")
        }
        if connected === ns { await fireLocal(.namespaceConnected, on: ns, request) }
        return connected
    }

    /// Waits until the remote side connects this connection to `namespace` (a server that
    /// forces clients into a namespace), and returns the namespace connection.
    ///
    /// - Throws: ``NeffosError/badNamespace`` when this side does not declare the namespace;
    ///   ``NeffosError/timeout`` when it is not connected in time; ``NeffosError/writeClosed``
    ///   when the connection closes first.
    public func waitConnect(_ namespace: String, timeout: Duration? = nil) async throws -> NSConn {
        if let ns = self.namespace(namespace) { return ns }
        guard namespaces[namespace] != nil else {
            throw NeffosError.badNamespace.with(detail: "\"\(namespace)\" is not declared on this side")
        }
        let deadline = timeout ?? settings.askTimeout
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NSConn, any Error>) in
            enum Step {
                case ready(NSConn)
                case failed(NeffosError)
                case wait(UInt64, any EventLoop)
            }
            let step = state.withLock { s -> Step in
                if let entry = s.namespaces[namespace] { return .ready(entry.nsConn) }
                if s.phase.isClosed { return .failed(.writeClosed) }
                guard let loop = s.transport?.eventLoop else { return .failed(.writeClosed) }
                let id = s.nextWaiterID
                s.nextWaiterID += 1
                s.namespaceWaiters[namespace, default: [:]][id] = continuation
                return .wait(id, loop)
            }
            switch step {
            case .ready(let ns): continuation.resume(returning: ns)
            case .failed(let error): continuation.resume(throwing: error)
            case .wait(let id, let loop):
                loop.scheduleTask(in: deadline.timeAmount) {
                    let waiter = self.state.withLock { s in s.namespaceWaiters[namespace]?.removeValue(forKey: id) }
                    waiter?.resume(throwing: NeffosError.timeout.with(detail: "not connected to \"\(namespace)\" within \(deadline)"))
                }
            }
        }
    }

    /// Disconnects from every connected namespace (see ``NSConn/disconnect(timeout:)``).
    public func disconnectAll(timeout: Duration? = nil) async throws {
        for ns in connectedNamespaces { try await ns.disconnect(timeout: timeout) }
    }
}

extension ConnState {
    /// The transport to write `message` with, once the connection is open, connected to the
    /// message's namespace, and joined to its room.
    func checkWritable(_ message: Message) throws(NeffosError) -> any ConnTransport {
        guard phase.isOpen, let transport else {
            if case .reconnecting = phase { throw NeffosError.reconnecting }
            throw NeffosError.writeClosed
        }
        let event = message.event
        if event != EventName.namespaceConnect.rawValue && event != EventName.namespaceDisconnect.rawValue {
            guard let entry = namespaces[message.namespace] else {
                throw NeffosError.badNamespace.with(detail: "not connected to \"\(message.namespace)\"")
            }
            if !message.room.isEmpty && event != EventName.roomJoin.rawValue
                && event != EventName.roomLeave.rawValue && !entry.rooms.contains(message.room)
            {
                throw NeffosError.badRoom.with(detail: "not joined to \"\(message.room)\"")
            }
        }
        return transport
    }
}
