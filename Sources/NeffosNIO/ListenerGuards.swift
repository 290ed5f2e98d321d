#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import Neffos
import Synchronization

/// Bounds the time an HTTP connection may hold the server before it upgrades: a request must
/// arrive in full within the request timeout once its first byte came (a slow-loris sending
/// one header byte a second is closed with `408`), and a connection with no request in
/// progress (a socket that never sends, an idle keep-alive) is closed after the idle timeout.
///
/// It sits first in the pipeline, on raw bytes: a request is in progress from its first byte
/// until the server starts writing the response. The listener removes it at the upgrade
/// (WebSocket connections have their own heartbeat and timeouts).
final class HTTPGuard: ChannelDuplexHandler, RemovableChannelHandler, TickWheelMember {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let name = "neffos.http-guard"

    /// The guards' timers: a ``TickWheel`` per loop and timeout, not a scheduled task per
    /// connection (each connect moved between the two timers three times, and each move
    /// cancelled a task by scanning the loop's whole queue of them).
    static let wheels = TickWheels<HTTPGuard>()

    private enum Phase {
        /// No request in progress: the idle timer runs.
        case idle
        /// A request's bytes are arriving: the request timer runs.
        case request
    }

    private let requestTimeout: TimeAmount?
    private let idleTimeout: TimeAmount?
    private let server: Server
    private var phase = Phase.idle
    private var context: ChannelHandlerContext?
    /// The wheel this guard is in, and its seat there (for that wheel's kind only).
    private var wheel: TickWheel<HTTPGuard>?
    private var seat: WheelSeat?
    private var seatKind: TickKind?

    init(requestTimeout: Duration?, idleTimeout: Duration?, server: Server) {
        self.requestTimeout = requestTimeout?.timeAmount
        self.idleTimeout = idleTimeout?.timeAmount
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(.idle, context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(.idle, context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if phase == .idle { arm(.request, context: context) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The server answers: the request is complete; the connection is idle until the next.
        if phase == .request { arm(.idle, context: context) }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        self.context = nil
    }

    private func arm(_ phase: Phase, context: ChannelHandlerContext) {
        self.phase = phase
        disarm()
        guard let timeout = phase == .idle ? idleTimeout : requestTimeout else { return }
        let wheel = Self.wheels.wheel(phase == .idle ? .httpIdle : .httpRequest, period: timeout, on: context.eventLoop)
        self.wheel = wheel
        wheel.add(self)
    }

    private func disarm() {
        wheel?.remove(self)
        wheel = nil
    }

    subscript(seat kind: TickKind) -> WheelSeat? {
        get { seatKind == kind ? seat : nil }
        set {
            seat = newValue
            seatKind = newValue == nil ? nil : kind
        }
    }

    func visit(_ kind: TickKind) {
        disarm()
        guard let context else { return }
        expire(kind == .httpIdle ? .idle : .request, context: context)
    }

    private func expire(_ phase: Phase, context: ChannelHandlerContext) {
        server.countHTTPTimeout()
        server.logger.debug(
            "HTTP connection closed: \(phase == .idle ? "idle" : "request incomplete") for too long",
            metadata: ["peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"])
        guard phase == .request else {
            context.close(promise: nil)
            return
        }
        let response = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        let loopBound = context.loopBound
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}

/// Answers a connection the server has no room for with `503 Service Unavailable` and closes
/// it. It waits for the request's first bytes (so that the client reads the answer rather
/// than a reset), or at most a second.
final class ConnectionLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var answered = false
    private var timer: Scheduled<Void>?

    func channelActive(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .seconds(1)) {
            bound.value.handler.answer(context: bound.value.context)
        }
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { channelActive(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answer(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        timer?.cancel()
        let body = "the server is at its connection limit; try again later\n"
        let response = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let loopBound = context.loopBound
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}

/// Pauses accepting for a while after `accept` failed for want of a resource (out of file
/// descriptors, EMFILE/ENFILE, or of memory): retrying at once fails at once, and the event
/// loop would spin at 100 % CPU while the listening socket stays readable.
///
/// NIO's `AcceptBackoffHandler` delays the *next* read, but after a failed `accept` the
/// server channel keeps its read pending and stays registered for readability, so it never
/// asks; this handler turns `autoRead` off for the pause instead, which unregisters the socket.
final class AcceptBackoff: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let delay: Duration
    private let onError: (IOError) -> Void
    private let onResume: () -> Void
    private var paused = false

    /// `onError` is called for each failed accept, `onResume` each time a pause ends.
    init(delay: Duration, onError: @escaping (IOError) -> Void, onResume: @escaping () -> Void = {}) {
        self.delay = delay
        self.onError = onError
        self.onResume = onResume
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? IOError, Self.isResourceShortage(error) else {
            context.fireErrorCaught(error)
            return
        }
        onError(error)
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        try? options.setOption(.autoRead, value: false)
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: delay.timeAmount) {
            let (handler, context) = bound.value
            handler.paused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            handler.onResume()
        }
    }

    /// The errors after which accepting may work again later.
    static func isResourceShortage(_ error: IOError) -> Bool {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode)
    }
}

/// The listener's limits that depend on the process: the open-file limit.
enum ProcessLimits {
    /// File descriptors the listener leaves free below the open-file limit (for the exchange,
    /// logs, files the application opens).
    static let reservedDescriptors = 64

    /// The process's soft open-file limit (`ulimit -n`), if it has one.
    static var openFiles: Int? {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return Int(clamping: limit.rlim_cur)
    }

    /// The connections a listener may hold: the configured limit, kept below the open-file
    /// limit; `nil` when neither bounds it.
    static func connectionLimit(configured: Int?) -> Int? {
        let byFiles = openFiles.map { max(1, $0 - reservedDescriptors) }
        switch (configured, byFiles) {
        case (let c?, let f?): return min(c, f)
        case (let c?, nil): return c
        case (nil, let f?): return f
        case (nil, nil): return nil
        }
    }
}

/// Logs a warning at most once per interval (a flood of refused connections or failed accepts
/// must not become a flood of log lines).
final class ThrottledWarning: Sendable {
    private let next = Atomic<UInt64>(0)
    private let interval: UInt64

    init(every interval: Duration = .seconds(10)) {
        self.interval = UInt64(max(0, interval.timeAmount.nanoseconds))
    }

    /// Logs `message` unless one was logged less than the interval ago.
    func log(_ logger: Logger, _ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata? = nil) {
        let now = NIODeadline.now().uptimeNanoseconds
        let due = next.load(ordering: .relaxed)
        guard now >= due, next.compareExchange(expected: due, desired: now + interval, ordering: .relaxed).exchanged else { return }
        logger.warning(message(), metadata: metadata)
    }
}
