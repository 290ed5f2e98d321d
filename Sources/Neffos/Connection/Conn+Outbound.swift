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
        send(frame, binary: message.isBinary, reliable: false, via: transport)
    }

    /// The transport, once the checks for writing `message` passed.
    private func writableTransport(for message: Message) throws(NeffosError) -> any ConnTransport {
        try machine.withLock { s throws(NeffosError) -> any ConnTransport in
            try s.checkWritable(message)
        }
    }

    /// Sends an already encoded frame: written at once on the event loop when nothing is
    /// queued before it (see ``LoopLane``), otherwise queued there in order. A `reliable`
    /// frame (a reply, an ask) is never dropped for a full outbox (see
    /// ``ConnTransport/write(_:binary:reliable:)``); another is dropped and counted.
    @inline(__always)
    func send(_ frame: ByteBuffer, binary: Bool, reliable: Bool, via transport: any ConnTransport) {
        server?.metrics.sent(1, bytes: frame.readableBytes)
        let lane = transport.lane
        if lane.canRunInline {
            if !transport.write(frame, binary: binary, reliable: reliable) && !reliable { server?.metrics.dropped(1) }
            transport.flush()
        } else {
            lane.queue { [server] in
                if !transport.write(frame, binary: binary, reliable: reliable) && !reliable { server?.metrics.dropped(1) }
                transport.flush()
            }
        }
    }

    /// Sends a reply frame (reliable) if the connection still has a transport.
    private func sendUnchecked(_ frame: ByteBuffer, binary: Bool) {
        guard let transport = machine.withLock({ $0.transport }) else { return }
        send(frame, binary: binary, reliable: true, via: transport)
    }

    /// Answers `request` with `reply` (a data reply: same token, namespace, room and event).
    func sendReply(to request: Message, _ reply: Reply) {
        do {
            sendUnchecked(try MessageCodec.encodeReply(to: request, body: reply.body), binary: reply.isBinary)
        } catch {
            logDebug("could not encode a reply", metadata: ["error": "\(error)"])
        }
    }

    /// Answers `request` with an error frame carrying `error`'s text.
    func sendError(to request: Message, _ error: any Error) {
        let error = settings.handlerErrors.wireError(
            for: error, event: request.event, known: settings.knownErrors, logger: logger)
        do {
            sendUnchecked(try MessageCodec.encode(request.replying(error: error)), binary: false)
        } catch {
            logDebug("could not encode an error reply", metadata: ["error": "\(error)"])
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
        if !isClient, let tracing = server?.tracing {
            return try await tracing.ask(message, to: id) { try await ask(message, timeout: timeout, effect: .none).reply }
        }
        return try await ask(message, timeout: timeout, effect: .none).reply
    }

    /// Sends an ask; a successful reply applies `effect` before any later frame is read.
    func ask(
        _ message: Message, timeout: Duration?, effect: ConnStateMachine.ReplyEffect
    ) async throws -> ConnStateMachine.Answer {
        var message = message
        message.wait = isClient ? tokens.clientToken() : tokens.serverToken()
        let frame = try MessageCodec.encode(message)
        let token = message.wait
        let deadline = timeout ?? settings.askTimeout
        let event = message.event
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ConnStateMachine.Answer, any Error>) in
                switch machine.withLock({ $0.registerAsk(token, message, continuation, effect: effect, limit: settings.maxPendingAsks) }) {
                case .failure(let error):
                    if error == .limitExceeded { self.server?.metrics.limitExceeded(.pendingAsks) }
                    continuation.resume(throwing: error)
                case .success(let transport):
                    let timer = transport.eventLoop.scheduleTask(in: deadline.timeAmount) {
                        self.server?.metrics.askTimedOut()
                        self.failAsk(token, NeffosError.timeout.with(detail: "ask \"\(event)\" got no reply within \(deadline)"))
                    }
                    if !machine.withLock({ $0.pending.setTimer(timer, for: token) }) { timer.cancel() }
                    send(frame, binary: message.isBinary, reliable: true, via: transport)
                    if Task.isCancelled { failAsk(token, CancellationError()) }
                }
            }
        } onCancel: {
            self.failAsk(token, CancellationError())
        }
    }

    /// Ends the ask waiting on `token` with `error`, if it is still waiting.
    func failAsk(_ token: String, _ error: any Error) {
        machine.withLock { $0.endAsk(token) }?.resume(with: .failure(error))
    }

    // MARK: Waiting for the connection to open

    /// Waits until the handshake completed.
    ///
    /// On the server, calling this from the on-connect hook (which ``connect(_:timeout:)``
    /// does) accepts the connection early: `A<id>` is sent as soon as the client identified
    /// itself, so the hook may force the client into namespaces.
    func awaitOpen() async throws {
        if machine.withLock({ $0.phase.isOpen }) { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            switch machine.withLock({ $0.waitOpen(continuation) }) {
            case .ready: continuation.resume()
            case .wait: break
            case .failed(let error): continuation.resume(throwing: error)
            case .completeHandshake(let loop): loop.execute { self.completeHandshake() }
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
        var request = Message(namespace: namespace, event: .namespaceConnect)
        request.isLocal = true
        _ = try await fire(.namespaceConnect, on: ns, request)
        _ = try await ask(request, timeout: timeout, effect: .addNamespace(ns))
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
            switch machine.withLock({ $0.waitNamespace(namespace, continuation) }) {
            case .ready(let ns): continuation.resume(returning: ns)
            case .failed(let error): continuation.resume(throwing: error)
            case .wait(let id, let loop):
                loop.scheduleTask(in: deadline.timeAmount) {
                    self.machine.withLock { $0.namespaceWaitTimedOut(namespace, id: id) }?
                        .resume(throwing: NeffosError.timeout.with(detail: "not connected to \"\(namespace)\" within \(deadline)"))
                }
            }
        }
    }

    /// Disconnects from every connected namespace (see ``NSConn/disconnect(timeout:)``).
    public func disconnectAll(timeout: Duration? = nil) async throws {
        for ns in connectedNamespaces { try await ns.disconnect(timeout: timeout) }
    }
}
