import Logging
import NIOCore
import NIOWebSocket
import Neffos

/// Settings of one WebSocket connection's handler.
struct WebSocketSettings: Sendable {
    var isClient: Bool
    var maxOutboxBytes: Int
    var writeTimeout: Duration?
    var readTimeout: Duration?
    var pingInterval: Duration?
    var logger: Logger
}

/// The handler at the end of a WebSocket channel: it hands text and binary frames to the
/// neffos connection on the event loop, writes the connection's frames, answers pings, runs
/// the heartbeat and the timeouts, and carries out the close handshake.
///
/// It is the connection's ``ConnTransport``: the outbox is the channel's write buffer, bounded
/// by its high watermark; a frame written while the channel is not writable is dropped (the
/// caller counts it).
final class WebSocketHandler: ChannelDuplexHandler, RemovableChannelHandler, ConnTransport, @unchecked Sendable {
    // @unchecked Sendable: every stored `var` is read and written only on `eventLoop`
    // (handler callbacks, and the ConnTransport methods, which the core calls on the event
    // loop by contract); `close(code:reason:)`, the one method callable from any thread, hops
    // to the event loop before touching anything.
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum CloseState {
        case open
        case closeSent(code: CloseCode, reason: String)
        case closed
    }

    let eventLoop: any EventLoop
    let lane: LoopLane
    private let settings: WebSocketSettings
    /// Creates the neffos connection once the handler is in the pipeline.
    private let makeConn: (WebSocketHandler) -> Conn?

    private var context: ChannelHandlerContext?
    private(set) var conn: Conn?
    private var inReadBurst = false
    private var flushPending = false
    private var closeState = CloseState.open
    private var receivedClose: (code: CloseCode?, reason: String)?
    private var closeError: (any Error)?
    private var heartbeatState = Heartbeat()
    private var heartbeat: RepeatedTask?
    private var readWatch: RepeatedTask?
    private var writeTimer: Scheduled<Void>?
    private var closeFallback: Scheduled<Void>?
    private var readingPaused = false
    private var readRequestedWhilePaused = false

    init(eventLoop: any EventLoop, settings: WebSocketSettings, makeConn: @escaping (WebSocketHandler) -> Conn?) {
        self.eventLoop = eventLoop
        self.lane = LoopLane.lane(for: eventLoop)
        self.settings = settings
        self.makeConn = makeConn
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let interval = settings.pingInterval {
            heartbeat = context.eventLoop.scheduleRepeatedTask(
                initialDelay: interval.timeAmount, delay: interval.timeAmount
            ) { [self] _ in beat() }
        }
        if let timeout = settings.readTimeout {
            readWatch = context.eventLoop.scheduleRepeatedTask(
                initialDelay: timeout.timeAmount, delay: timeout.timeAmount
            ) { [self] _ in checkRead() }
        }
        conn = makeConn(self)
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
            conn?.transportReceived(frame.unmaskedData, binary: frame.opcode == .binary)
        case .ping:
            guard case .open = closeState else { return }
            var pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            if settings.isClient { pong.maskKey = .random() }
            context.write(wrapOutboundOut(pong), promise: nil)
            flushPending = true
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
        let code = data.readInteger(as: UInt16.self).map(CloseCode.init(rawValue:))
        let reason = data.readString(length: data.readableBytes) ?? ""
        receivedClose = (code, reason)
        switch closeState {
        case .open:
            // The peer closes: echo its code, then close the socket.
            var echo = context.channel.allocator.buffer(capacity: 2)
            if let code { echo.writeInteger(code.rawValue) }
            var reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: echo)
            if settings.isClient { reply.maskKey = .random() }
            closeState = .closeSent(code: code ?? .normal, reason: reason)
            context.writeAndFlush(wrapOutboundOut(reply)).whenComplete { [self] _ in
                self.context?.close(promise: nil)
            }
        case .closeSent:
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settings.logger.debug("WebSocket error", metadata: ["error": "\(error)"])
        closeError = error
        switch error {
        case NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            close(code: .messageTooBig, reason: "message too big")
        case let error as NIOWebSocketError where error == .invalidFrameLength:
            close(code: .messageTooBig, reason: "frame too big")
        case is NIOWebSocketFrameAggregator.Error, is NIOWebSocketError:
            close(code: .protocolError, reason: "protocol error")
        default:
            context.close(promise: nil)
        }
    }

    // MARK: Backpressure from the handler queue

    func read(context: ChannelHandlerContext) {
        if readingPaused {
            readRequestedWhilePaused = true
        } else {
            context.read()
        }
    }

    func setReadingPaused(_ paused: Bool) {
        guard paused != readingPaused else { return }
        readingPaused = paused
        if !paused && readRequestedWhilePaused {
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
        } else if writeTimer == nil, let timeout = settings.writeTimeout {
            writeTimer = context.eventLoop.scheduleTask(in: timeout.timeAmount) { [self] in
                settings.logger.debug("closing a connection whose outbox stayed full")
                close(code: .policyViolation, reason: "write timeout")
            }
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Closing (ConnTransport)

    func close(code: CloseCode, reason: String) {
        if eventLoop.inEventLoop {
            closeOnLoop(code: code, reason: reason)
        } else {
            eventLoop.execute { self.closeOnLoop(code: code, reason: reason) }
        }
    }

    private func closeOnLoop(code: CloseCode, reason: String) {
        guard case .open = closeState, let context else { return }
        closeState = .closeSent(code: code, reason: reason)
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code.rawValue)
        // A control frame carries at most 125 bytes: the code and 123 of the reason.
        data.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self))
        var frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        if settings.isClient { frame.maskKey = .random() }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        // Wait for the peer's close frame, but not forever.
        closeFallback = context.eventLoop.scheduleTask(in: .seconds(2)) { [self] in
            self.context?.close(promise: nil)
        }
    }

    // MARK: Heartbeat and read timeout

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
