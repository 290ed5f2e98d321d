import Histogram
import NIOCore
import NIOPosix
import NIOWebSocket
import Neffos
import NeffosNIO

#if canImport(Glibc)
import Glibc
#endif

/// One benchmark connection: a bare neffos client that performs the handshake, connects the
/// namespace, joins its rooms, then plays its role. Everything on its event loop.
final class LoadHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked Sendable: all state is touched on the channel's event loop only; `start` and
    // `stop` hop there.
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum Phase {
        case handshake, namespace, joining(Int), recovering(remaining: Int, next: Int), ready
    }

    let namespace: String
    let rooms: [String]
    let role: LoadRole
    /// With the history extension: the position the first room's join recovers from.
    let recoverFrom: String?
    /// With the history extension: the first room's position its join reply gave.
    private(set) var joinedAt: String?
    let recorder: Recorder
    let ready: EventLoopPromise<UInt64>
    /// One key per connection: a fresh random key per frame would cost a system call each.
    private let mask = WebSocketMaskingKey.random()
    private var phase = Phase.handshake
    private var context: ChannelHandlerContext?
    private var running = false
    /// The timer of a paced publisher.
    private var pacer: RepeatedTask?
    private var asks = 0
    private var reading = false
    private var needsFlush = false
    /// `;<namespace>;<room>;broadcast;0;0;` and `;<namespace>;;echo;0;0;`, built once.
    private lazy var broadcastHeader: [UInt8] = []
    private lazy var askTail: [UInt8] = {
        guard case .asker(_, let event, let room) = role else { return [] }
        return Array(";\(namespace);\(room);\(event);0;0;".utf8)
    }()
    /// The churner's next wait number, whether it is in its room, and when it sent its request.
    private var churns: UInt64 = 0
    private var churnSent: UInt64 = 0
    private var inChurnRoom = false
    private let started = monotonicNanoseconds()

    init(namespace: String, rooms: [String], role: LoadRole, recorder: Recorder, ready: EventLoopPromise<UInt64>, recoverFrom: String? = nil) {
        self.namespace = namespace
        self.rooms = rooms
        self.role = role
        self.recoverFrom = recoverFrom
        self.recorder = recorder
        self.ready = ready
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        send("M")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        ready.fail(NeffosError.writeClosed)
    }

    private func send(_ text: String) {
        send(ByteBuffer(string: text))
    }

    /// Writes a frame; flushed at the end of the read burst (or at once outside one).
    private func send(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: mask, data: buffer)), promise: nil)
        if reading {
            needsFlush = true
        } else {
            context.flush()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    /// A frame made of `prefix`, `number` in decimal and `suffix`, with no formatting work.
    private func frame(_ prefix: [UInt8], _ number: UInt64?, _ suffix: [UInt8], _ stamp: UInt64) -> ByteBuffer {
        var buffer = context?.channel.allocator.buffer(capacity: prefix.count + suffix.count + 40) ?? ByteBuffer()
        buffer.writeBytes(prefix)
        if let number { Self.writeDecimal(number, to: &buffer) }
        buffer.writeBytes(suffix)
        Self.writeDecimal(stamp, to: &buffer)
        return buffer
    }

    private static func writeDecimal(_ value: UInt64, to buffer: inout ByteBuffer) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var value = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { bytes in
            repeat {
                bytes[19 - count] = UInt8(value % 10) + 48
                value /= 10
                count += 1
            } while value > 0
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[(20 - count)...]))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        let frame = unwrapInboundIn(data)
        guard frame.opcode == .text || frame.opcode == .binary else {
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        let payload = frame.unmaskedData
        switch phase {
        case .handshake:
            guard payload.getInteger(at: payload.readerIndex, as: UInt8.self) == UInt8(ascii: "A") else {
                return fail(context)
            }
            phase = .namespace
            send("$c;\(namespace);;_OnNamespaceConnect;0;0;")
        case .namespace:
            guard String(buffer: payload) == "$c;;;;;;" else { return fail(context) }
            join(0)
        case .joining(let index):
            // The empty reply, or (the history extension) a data reply; not an error.
            let fields = String(buffer: payload).split(separator: ";", maxSplits: 6, omittingEmptySubsequences: false)
            guard fields.first == "$j\(index)"[...], fields.count == 7, fields[4] != "1" else { return fail(context) }
            // `~<status> <count> <position>`: `count` kept messages follow.
            let outcome = fields[6].split(separator: " ")
            if fields[6].first == "~", outcome.count == 3, let count = Int(outcome[1]) {
                if index == 0 { joinedAt = String(outcome[2]) }
                if count > 0 {
                    phase = .recovering(remaining: count, next: index + 1)
                    return
                }
            }
            join(index + 1)
        case .recovering(let remaining, let next):
            if remaining > 1 {
                phase = .recovering(remaining: remaining - 1, next: next)
            } else {
                join(next)
            }
        case .ready:
            receive(payload)
        }
    }

    private func join(_ index: Int) {
        if index < rooms.count {
            phase = .joining(index)
            let body = index == 0 ? recoverFrom.map { "~" + $0 } ?? "" : ""
            send("$j\(index);\(namespace);\(rooms[index]);_OnRoomJoin;0;0;\(body)")
        } else {
            phase = .ready
            ready.succeed(monotonicNanoseconds() - started)
        }
    }

    private func fail(_ context: ChannelHandlerContext) {
        recorder.errors += 1
        ready.fail(NeffosError.invalidPayload)
        context.close(promise: nil)
    }

    /// A frame of the running benchmark: a `tick` or an ask's reply, whose body is a timestamp;
    /// a churner's acknowledgement; or a `presence` client event.
    private func receive(_ payload: ByteBuffer) {
        if case .churner(let room) = role, payload.readableBytesView.first == UInt8(ascii: "$") {
            return churned(payload, room: room)
        }
        if Self.isPresenceEvent(payload) {
            recorder.presence += 1
            return
        }
        guard let stamp = Self.timestamp(in: payload) else {
            recorder.errors += 1
            return
        }
        let now = monotonicNanoseconds()
        recorder.received += 1
        _ = recorder.latency.record(now >= stamp ? now - stamp : 0)
        guard running else { return }
        switch role {
        case .receiver:
            break
        case .publisher(_, let room):
            publish(room: room)
        case .pacedPublisher:
            break
        case .asker:
            ask()
        case .churner:
            break
        }
    }

    /// A join or leave acknowledgement (`$j7;;;;;;`); the next request follows it.
    private func churned(_ payload: ByteBuffer, room: String) {
        let now = monotonicNanoseconds()
        if payload.readableBytesView.suffix(6).elementsEqual(Self.emptyFields) {
            recorder.received += 1
            _ = recorder.latency.record(now >= churnSent ? now - churnSent : 0)
            inChurnRoom.toggle()
        } else {
            recorder.errors += 1
        }
        if running { churn(room: room) }
    }

    private static let emptyFields = Array(";;;;;;".utf8)

    /// Sends the churner's next join or leave.
    private func churn(room: String) {
        churns += 1
        recorder.sent += 1
        churnSent = monotonicNanoseconds()
        send(inChurnRoom ? "$l\(churns);\(namespace);\(room);_OnRoomLeave;0;0;" : "$j\(churns);\(namespace);\(room);_OnRoomJoin;0;0;")
    }

    /// Whether the frame's event (its fourth field) is `presence`.
    private static func isPresenceEvent(_ payload: ByteBuffer) -> Bool {
        payload.withUnsafeReadableBytes { bytes in
            var separators = 0
            var index = 0
            while index < bytes.count && separators < 3 {
                if bytes[index] == UInt8(ascii: ";") { separators += 1 }
                index += 1
            }
            return separators == 3 && bytes[index...].starts(with: presenceField)
        }
    }

    private static let presenceField = Array("presence;".utf8)

    /// The decimal timestamp after the sixth `;`.
    private static func timestamp(in payload: ByteBuffer) -> UInt64? {
        payload.withUnsafeReadableBytes { bytes -> UInt64? in
            var separators = 0
            var index = 0
            while index < bytes.count && separators < 6 {
                if bytes[index] == UInt8(ascii: ";") { separators += 1 }
                index += 1
            }
            guard separators == 6 else { return nil }
            var value: UInt64 = 0
            var digits = 0
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                value = value &* 10 &+ UInt64(bytes[index] - 48)
                index += 1
                digits += 1
            }
            return digits > 0 ? value : nil
        }
    }

    private func publish(room: String) {
        recorder.sent += 1
        if broadcastHeader.isEmpty { broadcastHeader = Array(";\(namespace);\(room);broadcast;0;0;".utf8) }
        send(frame(broadcastHeader, nil, [], monotonicNanoseconds()))
    }

    private func ask() {
        asks += 1
        recorder.sent += 1
        send(frame(Self.dollar, UInt64(asks), askTail, monotonicNanoseconds()))
    }

    private static let dollar: [UInt8] = [UInt8(ascii: "$")]

    /// Starts the role (on the event loop).
    func start() {
        running = true
        reading = true
        switch role {
        case .receiver: break
        case .publisher(let window, let room): for _ in 0..<window { publish(room: room) }
        case .pacedPublisher(let perSecond, let room):
            guard let context else { break }
            let period = TimeAmount.nanoseconds(Int64(1_000_000_000 / max(1, perSecond)))
            pacer = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [weak self] task in
                guard let self, self.running else { return task.cancel() }
                self.publish(room: room)
                self.context?.flush()
            }
        case .asker(let inflight, _, _): for _ in 0..<inflight { ask() }
        case .churner(let room): churn(room: room)
        }
        reading = false
        if needsFlush {
            needsFlush = false
            context?.flush()
        }
    }

    /// Stops sending (what is in flight still arrives and is recorded).
    func stop() {
        running = false
        pacer?.cancel()
        pacer = nil
    }
}

/// A connected load connection.
struct LoadConnection: Sendable {
    let channel: any Channel
    let handler: LoadHandler

    func start() { channel.eventLoop.execute { handler.start() } }
    /// The first room's position its join gave (the history extension).
    func joinedAt() async throws -> String? { try await channel.eventLoop.submit { handler.joinedAt }.get() }
    func stop() { channel.eventLoop.execute { handler.stop() } }
    func close() { channel.close(promise: nil) }
}

/// Opens load connections.
struct LoadDialer: Sendable {
    let group: any EventLoopGroup
    let recorders: [ObjectIdentifier: Recorder]
    /// The TLS of a `wss://` server.
    let tls: ClientTLSSession?
    /// Whether the clients ask for the history extension (positioned broadcasts).
    var positions = false

    /// Connects one client to `url` and waits until it is ready (handshake, namespace, rooms);
    /// returns it and how long that took.
    func connect(to url: WebSocketURL, namespace: String, rooms: [String], role: LoadRole, sourceIndex: Int, recoverFrom: String? = nil) async throws -> (LoadConnection, UInt64) {
        let loop = group.next()
        let recorder = recorders[ObjectIdentifier(loop)]!
        let ready = loop.makePromise(of: UInt64.self)
        let handler = LoadHandler(namespace: namespace, rooms: rooms, role: role, recorder: recorder, ready: ready, recoverFrom: recoverFrom)
        // Past one address's ephemeral ports, spread the clients over 127.0.0.2, .3, … (the
        // first 25,000 let the kernel pick: an explicit bind cannot reuse ports in TIME_WAIT).
        let source = sourceIndex < 25_000 ? nil : try SocketAddress(ipAddress: "127.0.0.\(1 + sourceIndex / 25_000)", port: 0)
        let channel = try await WebSocketDialer.connect(
            to: url, tls: url.isSecure ? tls : nil, headers: positions ? [(name: "X-Neffos-Recovery", value: "1")] : [], group: loop, timeout: .seconds(30), maxFrameSize: 1 << 24,
            maxMessageSize: 1 << 24, localAddress: source
        ) { channel in
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        let elapsed = try await ready.futureResult.get()
        return (LoadConnection(channel: channel, handler: handler), elapsed)
    }
}
