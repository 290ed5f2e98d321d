import Logging
import NIOCore
import NIOWebSocket
import Neffos

// The control side of `WebSocketHandler`: pongs, the closing handshake, the heartbeat and the
// read timeout. They run on the channel's event loop, like the rest of the handler.
extension WebSocketHandler {
    // MARK: Pongs

    func sendPong(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        var pong = WebSocketFrame(fin: true, opcode: .pong, data: payload)
        if settings.isClient { pong.maskKey = .random() }
        context.write(wrapOutboundOut(pong)).assumeIsolated().whenComplete { [self] _ in
            pongs.pongSent()
            resumeReadingHeldForPing()
        }
        if inReadBurst { flushPending = true } else { context.flush() }
    }

    /// Stops reading until the held ping can be answered: at `until`, or (when `nil`) when
    /// the pong on its way has left or the outbox has room.
    func holdReadingForPing(until: NIODeadline?, context: ChannelHandlerContext) {
        readingHeldForPing = true
        guard let until, pingHoldTimer == nil else { return }
        pingHoldTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: until) { [self] in
            pingHoldTimer = nil
            resumeReadingHeldForPing()
        }
    }

    /// Answers the held ping and reads again, when the pong policy lets it.
    func resumeReadingHeldForPing() {
        guard readingHeldForPing, let context else { return }
        switch pongs.resume(now: .now(), writable: context.channel.isWritable) {
        case .stillHeld(let until):
            holdReadingForPing(until: until, context: context)
        case .resume(let answer):
            // Once this side's close frame is sent, nothing follows it: a held ping goes
            // unanswered (found by `neffos-fuzz frames`).
            if let answer, case .open = closeState { sendPong(answer, context: context) }
            readingHeldForPing = false
            if !readingPaused && readRequestedWhilePaused {
                readRequestedWhilePaused = false
                context.read()
            }
        }
    }

    func setReadingPaused(_ paused: Bool) {
        eventLoop.assertInEventLoop()
        guard paused != readingPaused else { return }
        readingPaused = paused
        if !paused && !readingHeldForPing && readRequestedWhilePaused {
            readRequestedWhilePaused = false
            context?.read()
        }
    }

    // MARK: Closing (ConnTransport)

    /// Closes with the closing handshake; from any thread (it hops to the loop).
    func close(code: CloseCode, reason: String) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.close(code: code, reason: reason) }
            return
        }
        guard let context, sendClose(code: code, reason: reason, context: context) != nil else { return }
        // Wait for the peer's close frame, but not forever.
        scheduleCloseFallback(context)
    }

    /// Fails the connection (RFC 6455 §7.1.7), for a peer that broke the protocol: sends a
    /// close frame with `code`, then ends the socket's output at once, so that the peer sees
    /// the end whether or not it answers (frames after the violation are not read). The
    /// socket closes when the peer closes its side, or at the closing-handshake deadline.
    func fail(code: CloseCode, reason: String) {
        guard let context, let sent = sendClose(code: code, reason: reason, context: context) else { return }
        sent.assumeIsolated().whenComplete { [self] _ in
            self.context?.close(mode: .output, promise: nil)
        }
        scheduleCloseFallback(context)
    }

    /// Sends a close frame, once: `nil` when the connection is already closing.
    func sendClose(code: CloseCode, reason: String, context: ChannelHandlerContext) -> EventLoopFuture<Void>? {
        guard case .open = closeState else { return nil }
        closeState = .closeSent(code: code, reason: reason)
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code.rawValue)
        // A control frame carries at most 125 bytes: the code and 123 of the reason.
        data.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self))
        var frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        if settings.isClient { frame.maskKey = .random() }
        return context.writeAndFlush(wrapOutboundOut(frame))
    }

    /// Closes the socket if the closing handshake has not ended within the settings'
    /// `closeTimeout` (a peer that never answers, or never reads our close).
    func scheduleCloseFallback(_ context: ChannelHandlerContext) {
        guard closeFallback == nil else { return }
        closeFallback = context.eventLoop.assumeIsolated().scheduleTask(in: settings.closeTimeout.timeAmount) { [self] in
            self.context?.close(promise: nil)
        }
    }

    // MARK: Heartbeat and read timeout

    /// Joins the loop's heartbeat and read-timeout wheels (``TickWheel``), as the settings ask.
    func joinWheels() {
        if let interval = settings.pingInterval {
            let wheel = Self.wheels.wheel(.heartbeat, period: interval.timeAmount, on: eventLoop)
            heartbeatWheel = wheel
            wheel.add(self)
        }
        if let timeout = settings.readTimeout {
            let wheel = Self.wheels.wheel(.readCheck, period: timeout.timeAmount, on: eventLoop)
            readWheel = wheel
            wheel.add(self)
        }
    }

    /// The WebSocket connections' wheels.
    static let wheels = TickWheels<WebSocketHandler>()

    func leaveWheels() {
        heartbeatWheel?.remove(self)
        heartbeatWheel = nil
        readWheel?.remove(self)
        readWheel = nil
    }

    /// This handler's seat in the wheel of `kind`.
    subscript(seat kind: TickKind) -> WheelSeat? {
        get {
            switch kind {
            case .heartbeat: heartbeatSeat
            case .readCheck: readSeat
            case .httpIdle, .httpRequest: nil
            }
        }
        set {
            switch kind {
            case .heartbeat: heartbeatSeat = newValue
            case .readCheck: readSeat = newValue
            case .httpIdle, .httpRequest: break
            }
        }
    }

    func visit(_ kind: TickKind) {
        switch kind {
        case .heartbeat: beat()
        case .readCheck: checkRead()
        case .httpIdle, .httpRequest: break
        }
    }

    func beat() {
        guard case .open = closeState, let context else { return }
        guard heartbeatState.beat() == .ping else {
            settings.logger.debug("closing a connection that answered none of the last two pings")
            close(code: .policyViolation, reason: "heartbeat timeout")
            return
        }
        var ping = WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))
        if settings.isClient { ping.maskKey = .random() }
        context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
    }

    func checkRead() {
        guard case .open = closeState else { return }
        if heartbeatState.readTimeoutElapsed() {
            settings.logger.debug("closing a connection that sent nothing within the read timeout")
            close(code: .policyViolation, reason: "read timeout")
        }
    }
}
