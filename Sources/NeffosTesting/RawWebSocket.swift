import NIOCore
import NIOPosix
import NIOWebSocket
import Neffos
import NeffosNIO
import Synchronization

/// A WebSocket frame as a ``RawWebSocket`` received it.
public struct RawFrame: Sendable, Equatable, CustomStringConvertible {
    /// The opcode.
    public var opcode: WebSocketOpcode
    /// The (unmasked) payload.
    public var data: ByteBuffer

    /// The payload as UTF-8 text.
    public var text: String { String(buffer: data) }

    /// For a close frame: its code, if any.
    public var closeCode: CloseCode? {
        guard opcode == .connectionClose else { return nil }
        return data.getInteger(at: data.readerIndex, as: UInt16.self).map(CloseCode.init(rawValue:))
    }

    /// For a close frame: its reason text.
    public var closeReason: String {
        guard opcode == .connectionClose, data.readableBytes > 2 else { return "" }
        return data.getString(at: data.readerIndex + 2, length: data.readableBytes - 2) ?? ""
    }

    /// The opcode and the payload (as text when it is text).
    public var description: String {
        switch opcode {
        case .text: "text \"\(text)\""
        case .connectionClose: "close \(closeCode.map { "\($0)" } ?? "-") \"\(closeReason)\""
        default: "\(opcode) \(data.readableBytes) bytes"
        }
    }
}

/// What went wrong while waiting on a ``RawWebSocket``.
public struct RawWebSocketError: Error, CustomStringConvertible, Equatable {
    /// What happened.
    public let description: String
    /// An error saying `description`.
    public init(description: String) { self.description = description }
    /// Nothing arrived before the deadline.
    public static func timedOut(_ what: String) -> RawWebSocketError { .init(description: "timed out waiting for \(what)") }
    /// The connection closed before what was awaited arrived.
    public static let closed = RawWebSocketError(description: "the connection closed")
}

/// A bare WebSocket client for protocol-level tests: it sends exactly the frames you give it
/// and hands you exactly the frames the server sent, so a test can compare bytes.
///
/// ```swift
/// let socket = try await RawWebSocket.connect(to: "ws://127.0.0.1:\(port)/")
/// try await socket.send("M")
/// let accepted = try await socket.nextText()     // "A<id>"
/// ```
///
/// It answers pings unless told not to (to test a server's heartbeat), and never reconnects.
public final class RawWebSocket: Sendable {
    private let channel: any Channel
    private let inbox: FrameInbox
    /// Whether this end masks its frames (a client does, a server does not).
    private let masks: Bool

    init(channel: any Channel, inbox: FrameInbox, masks: Bool) {
        self.channel = channel
        self.inbox = inbox
        self.masks = masks
    }

    /// Connects and upgrades.
    ///
    /// - Parameters:
    ///   - url: a `ws://` URL.
    ///   - headers: extra request headers.
    ///   - answerPings: whether to answer the server's pings (default `true`).
    ///   - reportPings: whether ``next(timeout:)`` hands out the pings it answered too (pings
    ///     it does not answer are always handed out).
    ///   - timeout: the deadline for the TCP connection and the upgrade.
    public static func connect(
        to url: String,
        headers: [(name: String, value: String)] = [],
        answerPings: Bool = true,
        reportPings: Bool = false,
        timeout: Duration = .seconds(5),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RawWebSocket {
        let inbox = FrameInbox(what: "a frame")
        let channel = try await WebSocketDialer.connect(
            to: try WebSocketURL(url), headers: headers, group: group, timeout: timeout,
            maxFrameSize: 1 << 24, maxMessageSize: 1 << 24
        ) { channel in
            try channel.pipeline.syncOperations.addHandler(RawFrameHandler(inbox: inbox, answerPings: answerPings, reportPings: reportPings, masks: true))
        }
        return RawWebSocket(channel: channel, inbox: inbox, masks: true)
    }

    /// Sends a text frame.
    public func send(_ text: String) async throws {
        try await send(ByteBuffer(string: text), opcode: .text)
    }

    /// Sends a frame with any opcode; `fin: false` starts or continues a fragmented message.
    public func send(_ data: ByteBuffer, opcode: WebSocketOpcode, fin: Bool = true) async throws {
        let frame = WebSocketFrame(fin: fin, opcode: opcode, maskKey: masks ? .random() : nil, data: data)
        try await channel.writeAndFlush(frame)
    }

    /// Sends `frame` exactly as given (masked or not, reserved bits and all): for tests of a
    /// peer's protocol checks.
    public func send(frame: WebSocketFrame) async throws {
        try await channel.writeAndFlush(frame)
    }

    /// Sends a close frame with `code`.
    public func sendClose(code: CloseCode = .normal, reason: String = "") async throws {
        var data = ByteBuffer()
        data.writeInteger(code.rawValue)
        data.writeString(reason)
        try await send(data, opcode: .connectionClose)
    }

    /// The next frame (any opcode but pongs; pings only when not answering them or when
    /// reporting them), waiting up to `timeout`.
    ///
    /// - Throws: ``RawWebSocketError/timedOut(_:)`` or ``RawWebSocketError/closed``.
    public func next(timeout: Duration = .seconds(5)) async throws -> RawFrame {
        try await inbox.next(timeout: timeout)
    }

    /// The next frame, which must be a text frame; returns its text.
    public func nextText(timeout: Duration = .seconds(5)) async throws -> String {
        let frame = try await next(timeout: timeout)
        guard frame.opcode == .text else {
            throw RawWebSocketError(description: "expected a text frame, got \(frame)")
        }
        return frame.text
    }

    /// Waits for the next close frame (skipping data frames), up to `timeout`.
    public func nextClose(timeout: Duration = .seconds(5)) async throws -> RawFrame {
        while true {
            let frame = try await next(timeout: timeout)
            if frame.opcode == .connectionClose { return frame }
        }
    }

    /// Whether nothing arrives within `duration` (for tests of what must *not* be sent).
    public func staysQuiet(for duration: Duration) async -> Bool {
        do {
            _ = try await next(timeout: duration)
            return false
        } catch let error as RawWebSocketError where error == .closed {
            return false
        } catch {
            return true
        }
    }

    /// Waits until the TCP connection is closed, up to `timeout`; returns whether it closed.
    ///
    /// A socket that is not reading (see ``setReading(_:)``) cannot notice the peer's close.
    public func waitClosed(timeout: Duration = .seconds(5)) async -> Bool {
        let channel = self.channel
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let once = Locked<CheckedContinuation<Bool, Never>?>(continuation)
            let timer = channel.eventLoop.scheduleTask(in: timeout.timeAmount) {
                once.withLock { $0.take() }?.resume(returning: false)
            }
            channel.closeFuture.whenComplete { _ in
                timer.cancel()
                once.withLock { $0.take() }?.resume(returning: true)
            }
        }
    }

    /// Closes the TCP connection without a close frame.
    public func abort() async {
        try? await channel.close()
    }

    /// Stops reading from the socket (the server's writes pile up), or resumes.
    public func setReading(_ enabled: Bool) async throws {
        try await channel.setOption(.autoRead, value: enabled).get()
        if enabled { channel.read() }
    }
}

/// Items received, and the tasks waiting for them (oldest first).
final class Inbox<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var closed = false
    }
    private let state = Watched(State())
    private let what: String

    init(what: String) { self.what = what }

    func deliver(_ item: Item) {
        state.update { $0.items.append(item) }
    }

    func close() {
        state.update { $0.closed = true }
    }

    /// The next item, waiting up to `timeout`; ``RawWebSocketError/closed`` once closed and
    /// empty.
    func next(timeout: Duration) async throws -> Item {
        let what = self.what
        return try await state.wait(timeout: timeout, orThrow: { RawWebSocketError.timedOut("\(what) within \(timeout)") }) { s in
            if !s.items.isEmpty { return .success(s.items.removeFirst()) }
            return s.closed ? .failure(RawWebSocketError.closed) : nil
        }
    }
}

typealias FrameInbox = Inbox<RawFrame>

/// Puts every received frame into the inbox; answers pings when asked to.
final class RawFrameHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let inbox: FrameInbox
    private let answerPings: Bool
    private let reportPings: Bool
    private let masks: Bool
    private var closeSent = false

    init(inbox: FrameInbox, answerPings: Bool, reportPings: Bool = false, masks: Bool) {
        self.inbox = inbox
        self.answerPings = answerPings
        self.reportPings = reportPings || !answerPings
        self.masks = masks
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            if answerPings {
                let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: masks ? .random() : nil, data: frame.unmaskedData)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            }
            if reportPings {
                inbox.deliver(RawFrame(opcode: .ping, data: frame.unmaskedData))
            }
        case .pong:
            break
        case .connectionClose:
            // Answer as RFC 6455 asks: echo the code, then let the server close the socket.
            inbox.deliver(RawFrame(opcode: .connectionClose, data: frame.unmaskedData))
            guard !closeSent else { return }
            closeSent = true
            var echo = frame.unmaskedData
            echo.moveWriterIndex(to: echo.readerIndex + min(2, echo.readableBytes))
            let reply = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: masks ? .random() : nil, data: echo)
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        default:
            inbox.deliver(RawFrame(opcode: frame.opcode, data: frame.unmaskedData))
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if unwrapOutboundIn(data).opcode == .connectionClose { closeSent = true }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.close()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
