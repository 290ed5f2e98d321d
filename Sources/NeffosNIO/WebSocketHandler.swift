import Logging
import NIOCore
import NIOWebSocket
import Neffos

/// The handler at the end of a WebSocket channel: it hands text and binary frames to the
/// neffos connection on the event loop, writes the connection's frames, answers pings, runs
/// the heartbeat and the timeouts, and carries out the close handshake.
///
/// It lives on its channel's event loop, and is the neffos connection's transport
/// (``ConnTransport``; see WebSocketTransport.swift for why it may be `Sendable`). The outbox
/// is the channel's write buffer, bounded by its high watermark; a frame written while the
/// channel is not writable is dropped (the caller counts it), unless it is a reliable one (a
/// reply).
final class WebSocketHandler: ChannelDuplexHandler, RemovableChannelHandler, TickWheelMember {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    // The state below is internal, not private, only for the extension in
    // WebSocketHandler+Control.swift (pongs, closing, heartbeat); nothing else touches it.

    enum CloseState {
        case open
        case closeSent(code: CloseCode, reason: String)
        case closed
    }

    enum ClosePhase { case open, closeSent, closed }

    /// The handler's state that few connections ever need: kept out of line, so that an idle
    /// connection does not hold ~150 bytes of empty timers and close details.
    final class RareState {
        var sentClose: (code: CloseCode, reason: String)?
        var receivedClose: (code: CloseCode?, reason: String)?
        var closeError: (any Error)?
        var writeTimer: Scheduled<Void>?
        var closeFallback: Scheduled<Void>?
        var pingHoldTimer: Scheduled<Void>?
    }

    // Ordered widest first, the flags last: every connection holds one handler, and
    // interleaved they cost padding.
    let eventLoop: any EventLoop
    /// The loop's write lane (``ConnTransport``).
    let lane: LoopLane
    let settings: WebSocketSettings
    /// Creates the neffos connection once the handler is in the pipeline; dropped once used
    /// (what it captures, the upgrade request among it, is the connection's to keep).
    private var makeConn: ((WebSocketHandler) -> Conn?)?

    var context: ChannelHandlerContext?
    private(set) var conn: Conn?
    /// The loop's heartbeat and read-timeout wheels, while this handler is in them.
    var heartbeatWheel: TickWheel<WebSocketHandler>?
    var readWheel: TickWheel<WebSocketHandler>?
    /// What only a closing, stalled or ping-flooding connection needs, made on first use
    /// (``RareState``).
    private var rareBox: RareState?
    /// How pings are answered (at most one pong on its way, a bounded rate).
    var pongs = PongPolicy(now: .now())
    /// The received frames' checks and reassembly, when this handler runs them (a server
    /// connection's); `nil` when pipeline handlers before it do (the dialler's).
    private var inbound: InboundFrames?
    var heartbeatSeat: WheelSeat?
    var readSeat: WheelSeat?
    var heartbeatState = Heartbeat()
    var inReadBurst = false
    var flushPending = false
    private var closePhase = ClosePhase.open
    var readingPaused = false
    /// Reading stopped until a held ping can be answered (``PongPolicy``).
    var readingHeldForPing = false
    var readRequestedWhilePaused = false

    init(
        eventLoop: any EventLoop, settings: WebSocketSettings, inbound: InboundFrames? = nil,
        makeConn: @escaping (WebSocketHandler) -> Conn?
    ) {
        self.eventLoop = eventLoop
        self.lane = LoopLane.lane(for: eventLoop)
        self.settings = settings
        self.inbound = inbound
        self.makeConn = makeConn
    }

    private var rare: RareState {
        if let rareBox { return rareBox }
        let made = RareState()
        rareBox = made
        return made
    }

    var closeState: CloseState {
        get {
            switch closePhase {
            case .open: return .open
            case .closed: return .closed
            case .closeSent:
                let sent = rareBox?.sentClose
                return .closeSent(code: sent?.code ?? .normal, reason: sent?.reason ?? "")
            }
        }
        set {
            switch newValue {
            case .open: closePhase = .open
            case .closed: closePhase = .closed
            case .closeSent(let code, let reason):
                closePhase = .closeSent
                rare.sentClose = (code, reason)
            }
        }
    }

    // Setting one of these to `nil` makes no box.
    var receivedClose: (code: CloseCode?, reason: String)? {
        get { rareBox?.receivedClose }
        set { if newValue != nil || rareBox != nil { rare.receivedClose = newValue } }
    }
    var closeError: (any Error)? {
        get { rareBox?.closeError }
        set { if newValue != nil || rareBox != nil { rare.closeError = newValue } }
    }
    var writeTimer: Scheduled<Void>? {
        get { rareBox?.writeTimer }
        set { if newValue != nil || rareBox != nil { rare.writeTimer = newValue } }
    }
    var closeFallback: Scheduled<Void>? {
        get { rareBox?.closeFallback }
        set { if newValue != nil || rareBox != nil { rare.closeFallback = newValue } }
    }
    var pingHoldTimer: Scheduled<Void>? {
        get { rareBox?.pingHoldTimer }
        set { if newValue != nil || rareBox != nil { rare.pingHoldTimer = newValue } }
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        joinWheels()
        let make = makeConn
        makeConn = nil
        conn = make?(self)
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
        leaveWheels()
        writeTimer?.cancel()
        writeTimer = nil
        closeFallback?.cancel()
        closeFallback = nil
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        if inbound != nil {
            switch inbound!.receive(frame) {
            case .frame(let whole):
                frame = whole
            case .pending:
                inReadBurst = true
                heartbeatState.trafficSeen()
                return
            case .failed(let error):
                inReadBurst = true
                return errorCaught(context: context, error: error)
            }
        }
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
            // Continuations were reassembled before us (InboundFrames, or the aggregator in a
            // dialled pipeline); anything else is a protocol error.
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

    // MARK: Writing (ConnTransport)

    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool {
        eventLoop.assertInEventLoop()
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
        eventLoop.assertInEventLoop()
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

}
