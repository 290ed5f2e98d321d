import NIOCore

extension Server {
    /// Asks connections and waits for the first reply.
    ///
    /// The ask goes to the connections with ID `to` when given, otherwise to every connection
    /// of the message's namespace (or room), on this node and, with an exchange, on every
    /// other node. The first reply wins; later ones are dropped.
    ///
    /// - Throws: the replying client's error; ``NeffosError/timeout`` when nobody replied in
    ///   time; ``NeffosError/limitExceeded`` when
    ///   ``Configuration/maxPendingServerAsks`` asks already wait; `CancellationError`.
    public func ask(_ message: Message, to id: String? = nil, timeout: Duration? = nil) async throws -> Message {
        guard let tracing else { return try await askUntraced(message, to: id, timeout: timeout) }
        return try await tracing.ask(message, to: id) { try await askUntraced(message, to: id, timeout: timeout) }
    }

    private func askUntraced(_ message: Message, to id: String?, timeout: Duration?) async throws -> Message {
        var message = message
        message.wait = WaitTokens.shared.serverToken()
        if let id { message.to = id }
        let token = message.wait
        let frame = try MessageCodec.encode(message)
        let deadline = timeout ?? configuration.askTimeout
        let event = message.event
        let target = BroadcastTarget(of: message, except: nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Message, any Error>) in
                // The target is kept: only a connection the ask went to may answer it.
                let limit = configuration.maxPendingServerAsks
                let waiting = serverAsks.withLock { asks -> Int? in
                    guard asks.count < limit else { return asks.count }
                    asks.register(token, continuation, effect: target)
                    return nil
                }
                if let waiting {
                    metrics.limitExceeded(.pendingServerAsks)
                    continuation.resume(throwing: NeffosError.limitExceeded.with(
                        detail: "\(waiting) server asks already wait for a reply (maxPendingServerAsks)"))
                    return
                }
                // The timer starts after the ask is registered (so even a zero deadline finds
                // it), and is kept unless a reply already ended the ask.
                let timer = Task {
                    guard (try? await Task.sleep(for: deadline)) != nil else { return }
                    let error = NeffosError.timeout.with(detail: "nobody answered \"\(event)\" within \(deadline)")
                    self.resolveAsk(token, .failure(error), timedOut: true)
                }
                if !serverAsks.withLock({ $0.setTimer(timer, for: token) }) { timer.cancel() }
                let receivers = deliverLocally(frame, binary: message.isBinary, to: target)
                if let link {
                    let deadlineNanos = Int64(WaitTokens.wallClockNanoseconds()) + Int64(deadline.timeAmount.nanoseconds)
                    link.publish(.ask, frame: frame, binary: message.isBinary, to: target, token: token, deadline: deadlineNanos)
                } else if receivers == 0 {
                    resolveAsk(token, .failure(NeffosError.timeout.with(detail: "no connection to ask \"\(event)\"")))
                }
            }
        } onCancel: {
            self.resolveAsk(token, .failure(CancellationError()))
        }
    }

    /// Ends the server ask `token` with `result` (counted as timed out when `timedOut`);
    /// returns whether it was still waiting. A client's reply, or one another node forwarded.
    @discardableResult
    func resolveAsk(_ token: String, _ result: Result<Message, any Error>, timedOut: Bool = false) -> Bool {
        guard let ask = serverAsks.withLock({ $0.take(token) }) else { return false }
        endedAsks.withLock { $0.insert(token) }
        if timedOut { metrics.askTimedOut() }
        ask.resume(with: result)
        return true
    }
}

extension Server {
    /// The server's asks waiting for a reply now (for tests and diagnostics).
    package var pendingServerAsks: Int { serverAsks.withLock { $0.count } }

    /// Whether `token` is one of this server's asks that ended lately.
    func askEnded(_ token: String) -> Bool {
        endedAsks.withLock { $0.contains(token) }
    }
}

extension Server: ClusterLocal {
    /// The error texts replies are resolved with.
    var knownErrors: KnownErrors { configuration.knownErrors }
}
