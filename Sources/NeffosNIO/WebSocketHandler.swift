import Logging
import NIOCore
import NIOWebSocket
import Neffos

/// The handler at the end of a WebSocket channel: it hands text and binary frames to the
/// neffos connection on the event loop, writes the connection's frames, answers pings, runs
/// the heartbeat and the timeouts, and carries out the close handshake.
///
/// It lives on its channel's event loop and is not `Sendable`: the core reaches it through
/// ``WebSocketTransport``, its Sendable face. The outbox is the channel's write buffer,
/// bounded by its high watermark; a frame written while the channel is not writable is dropped
/// (the caller counts it), unless it is a reliable one (a reply).
final class WebSocketHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum CloseState {
        case open
        case closeSent(code: CloseCode, reason: String)
        case closed
    }

    let eventLoop: any EventLoop
    private let settings: WebSocketSettings
    /// Creates the neffos connection once the handler is in the pipeline.
    private let makeConn: (WebSocketTransport) -> Conn?

    private var context: ChannelHandlerContext?
    private(set) var conn: Conn?
    private var inReadBurst = false
    private var flushPending = false
    private var closeState = CloseState.open
    private var receivedClose: (code: CloseCode?, reason: String)?
    private var closeError: (any Error)?
    private var heartbeatState = Heartbeat()
    private var heartbeat: Scheduled<Void>?
    private var readWatch: Scheduled<Void>?
    private var writeTimer: Scheduled<Void>?
    private var closeFallback: Scheduled<Void>?
    private var readingPaused = false
    /// How pings are answered (at most one pong on its way, a bounded rate).
    private var pongs = PongPolicy(now: .now())
    /// Reading stopped until a held ping can be answered (``PongPolicy``).
    private var readingHeldForPing = false
    private var pingHoldTimer: Scheduled<Void>?
    private var readRequestedWhilePaused = false

    init(eventLoop: any EventLoop, settings: WebSocketSettings, makeConn: @escaping (WebSocketTransport) -> Conn?) {
        self.eventLoop = eventLoop
        self.settings = settings
        self.makeConn = makeConn
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        scheduleBeat()
        scheduleReadCheck()
        conn = makeConn(WebSocketTransport(self))
        if conn == nil { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimers()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        let initiatedLocally: Bool
        let code: CloseCode?
        let text: String
        switch closeState {
        case .closeSent(let sentCode, let reason):
            initiatedLocally = true
            code = receivedClose?.code ?? sentCode
            text = receivedClose?.reason ?? reason
        case .open, .closed:
            initiatedLocally = false
            code = receivedClose?.code
            text = receivedClose?.reason ?? ""
        }
        closeState = .closed
        stopTimers()
        conn?.transportClosed(CloseReason(code: code, text: text, initiatedLocally: initiatedLocally, error: closeError))
        context.fireChannelInactive()
    }

    private func stopTimers() {
        pingHoldTimer?.cancel()
        pingHoldTimer = nil
        heartbeat?.cancel()
        heartbeat = nil
        readWatch?.cancel()
        readWatch = nil
        writeTimer?.cancel()
        writeTimer = nil
        closeFallback?.cancel()
        closeFallback = nil
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        inReadBurst = true
        heartbeatState.trafficSeen()
        switch frame.opcode {
        case .text, .binary:
            guard case .open = closeState else { return }
            // Text was checked for UTF-8 (FrameValidator): a browser fails on anything else,
            // so it must never be relayed to others.
            conn?.transportReceived(frame.unmaskedData, binary: frame.opcode == .binary)
        case .ping:
            guard case .open = closeState else { return }
            // Pongs are bounded (PongPolicy): one on its way at a time, a bounded rate, and
            // they count against the outbox like any write. A ping that cannot be answered now
            // is held and the peer is not read from until it can be: a ping flood costs
            // neither memory nor CPU, and the write timeout closes a peer that never reads.
            let writable = context.channel.isWritable
            switch pongs.ping(frame.unmaskedData, now: .now(), writable: writable) {
            case .answer(let payload):
                sendPong(payload, context: context)
            case .hold(let until):
                if !writable { conn?.server?.countDroppedFrames(1) }
                holdReadingForPing(until: until, context: context)
            }
        case .pong:
            break
        case .connectionClose:
            receiveClose(context: context, frame: frame)
        default:
            // Continuations are reassembled by the aggregator before us; anything else is a
            // protocol error.
            close(code: .protocolError, reason: "unexpected frame")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadBurst = false
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    private func receiveClose(context: ChannelHandlerContext, frame: WebSocketFrame) {
        var data = frame.unmaskedData
        let length = data.readableBytes
        let code = data.readInteger(as: UInt16.self).map(CloseCode.init(rawValue:))
        let reasonBytes = data
        let reason = data.readString(length: data.readableBytes) ?? ""
        receivedClose = (code, reason)
        switch closeState {
        case .open:
            // The peer closes: echo its code (1002 for a malformed close, 1007 for a reason
            // that is not UTF-8), then close the socket.
            var answer = code
            if length == 1 || code.map({ !$0.isValidOnTheWire }) == true {
                answer = .protocolError
            } else if !reasonBytes.isValidUTF8 {
                answer = .invalidData
            }
            if answer != code { conn?.server?.countProtocolViolation() }
            var echo = context.channel.allocator.buffer(capacity: 2)
            if let answer { echo.writeInteger(answer.rawValue) }
            var reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: echo)
            if settings.isClient { reply.maskKey = .random() }
            closeState = .closeSent(code: code ?? .normal, reason: reason)
            context.writeAndFlush(wrapOutboundOut(reply)).assumeIsolated().whenComplete { [self] _ in
                self.context?.close(promise: nil)
            }
            // A peer that does not read never lets the echo out: close the socket anyway.
            scheduleCloseFallback(context)
        case .closeSent:
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settings.logger.debug("WebSocket error", metadata: ["error": "\(error)"])
        closeError = error
        if error is ProtocolViolation || error is NIOWebSocketError || error is NIOWebSocketFrameAggregator.Error {
            conn?.server?.countProtocolViolation()
        }
        if case .closeSent = closeState {
            // Our close frame is out: a peer that answers it with garbage is not waited for.
            context.close(promise: nil)
            return
        }
        switch error {
        case NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            close(code: .messageTooBig, reason: "message too big")
        case let violation as ProtocolViolation:
            fail(code: violation.closeCode, reason: violation.description)
        case let error as NIOWebSocketError where error == .invalidFrameLength:
            close(code: .messageTooBig, reason: "frame too big")
        case is NIOWebSocketFrameAggregator.Error, is NIOWebSocketError:
            fail(code: .protocolError, reason: "protocol error")
        default:
            context.close(promise: nil)
        }
    }

    /// A server that hosts this connection is shutting down gracefully (Hummingbird's and
    /// Vapor's HTTP servers send `ChannelShouldQuiesceEvent` to every open connection): close
    /// with 1001 (going away), once.
    ///
    /// A peer that ended its side of the socket (`inputClosed`, seen where the host server
    /// allows half-closure, as Hummingbird's does) can send nothing more, not even a close
    /// frame: the connection is over.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            close(code: .goingAway, reason: "server shutting down")
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Backpressure from the handler queue

    func read(context: ChannelHandlerContext) {
        if readingPaused || readingHeldForPing {
            readRequestedWhilePaused = true
        } else {
            context.read()
        }
    }

    // MARK: Pongs

    private func sendPong(_ payload: ByteBuffer, context: ChannelHandlerContext) {
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
    private func holdReadingForPing(until: NIODeadline?, context: ChannelHandlerContext) {
        readingHeldForPing = true
        guard let until, pingHoldTimer == nil else { return }
        pingHoldTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: until) { [self] in
            pingHoldTimer = nil
            resumeReadingHeldForPing()
        }
    }

    /// Answers the held ping and reads again, when the pong policy lets it.
    private func resumeReadingHeldForPing() {
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
        guard paused != readingPaused else { return }
        readingPaused = paused
        if !paused && !readingHeldForPing && readRequestedWhilePaused {
            readRequestedWhilePaused = false
            context?.read()
        }
    }

    // MARK: Writing (ConnTransport)

    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool {
        guard case .open = closeState, let context else { return false }
        if !context.channel.isWritable {
            guard reliable else { return false }
            // A reply may pass the outbox bound, by at most the bound again: a peer that keeps
            // asking and never reads is closed, not answered without limit.
            let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
            if buffered + frame.readableBytes > 2 * settings.maxOutboxBytes {
                settings.logger.debug("closing a connection whose replies overflowed its outbox", metadata: ["buffered": "\(buffered)"])
                close(code: .policyViolation, reason: "outbox overflow")
                return false
            }
        }
        var wsFrame = WebSocketFrame(fin: true, opcode: binary ? .binary : .text, data: frame)
        if settings.isClient { wsFrame.maskKey = .random() }
        context.write(wrapOutboundOut(wsFrame), promise: nil)
        return true
    }

    func flush() {
        if inReadBurst {
            flushPending = true
        } else {
            context?.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writeTimer?.cancel()
            writeTimer = nil
            resumeReadingHeldForPing()
        } else if writeTimer == nil, let timeout = settings.writeTimeout {
            writeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout.timeAmount) { [self] in
                settings.logger.debug("closing a connection whose outbox stayed full")
                close(code: .policyViolation, reason: "write timeout")
            }
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Closing (ConnTransport)

    func close(code: CloseCode, reason: String) {
        guard let context, sendClose(code: code, reason: reason, context: context) != nil else { return }
        // Wait for the peer's close frame, but not forever.
        scheduleCloseFallback(context)
    }

    /// Fails the connection (RFC 6455 §7.1.7), for a peer that broke the protocol: sends a
    /// close frame with `code`, then ends the socket's output at once, so that the peer sees
    /// the end whether or not it answers (frames after the violation are not read). The
    /// socket closes when the peer closes its side, or at the closing-handshake deadline.
    private func fail(code: CloseCode, reason: String) {
        guard let context, let sent = sendClose(code: code, reason: reason, context: context) else { return }
        sent.assumeIsolated().whenComplete { [self] _ in
            self.context?.close(mode: .output, promise: nil)
        }
        scheduleCloseFallback(context)
    }

    /// Sends a close frame, once: `nil` when the connection is already closing.
    private func sendClose(code: CloseCode, reason: String, context: ChannelHandlerContext) -> EventLoopFuture<Void>? {
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
    private func scheduleCloseFallback(_ context: ChannelHandlerContext) {
        guard closeFallback == nil else { return }
        closeFallback = context.eventLoop.assumeIsolated().scheduleTask(in: settings.closeTimeout.timeAmount) { [self] in
            self.context?.close(promise: nil)
        }
    }

    // MARK: Heartbeat and read timeout

    /// Schedules the next heartbeat tick (each tick schedules the next).
    private func scheduleBeat() {
        guard let interval = settings.pingInterval else { return }
        heartbeat = eventLoop.assumeIsolated().scheduleTask(in: interval.timeAmount) { [self] in
            beat()
            if case .open = closeState { scheduleBeat() }
        }
    }

    /// Schedules the next read-timeout check.
    private func scheduleReadCheck() {
        guard let timeout = settings.readTimeout else { return }
        readWatch = eventLoop.assumeIsolated().scheduleTask(in: timeout.timeAmount) { [self] in
            checkRead()
            if case .open = closeState { scheduleReadCheck() }
        }
    }

    private func beat() {
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

    private func checkRead() {
        guard case .open = closeState else { return }
        if heartbeatState.readTimeoutElapsed() {
            settings.logger.debug("closing a connection that sent nothing within the read timeout")
            close(code: .policyViolation, reason: "read timeout")
        }
    }
}
