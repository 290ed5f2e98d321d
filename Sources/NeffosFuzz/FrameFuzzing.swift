import Dispatch
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Neffos
import NeffosNIO
import Synchronization

/// The `frames` target: bytes from a client into a server-side WebSocket connection.
///
/// The channel carries the pipeline a listener installs after the upgrade (NIO's frame
/// decoder and encoder as the listener configures them, then `WebSocketListener.installServerPipeline`:
/// the frame validator, the fragment aggregator and the WebSocket handler, which hands the
/// connection to a ``Server``). The channel is a `NIOAsyncTestingChannel`, not an
/// `EmbeddedChannel`: a connection answers system requests (namespace connect, room join) and
/// fires its close events in a task, which comes back to the event loop from another thread,
/// and only the async testing loop may be entered from other threads. Its time is virtual.
///
/// One input is a plan (see ``Plan``): two control bytes, then the client's bytes. Each input
/// gets its own server and channel; the channel is closed, its scheduled tasks run, and the
/// input ends when the server has finished the connection (its disconnect hook ran). Checked:
///
/// - the server writes well-formed frames: unmasked, no reserved bits, text in UTF-8,
///   control frames whole and at most 125 bytes, close codes a peer may send, nothing after
///   its close frame, no neffos message before its handshake answer (`A…` or `H…`);
/// - the connection finishes within 10 seconds once the channel closed (a hang otherwise),
///   and leaves nothing in the server's index;
/// - the server and the connection are freed once the input ended (no reference cycle); with
///   libFuzzer's leak detection on, nothing else of the input stays either.
enum FrameFuzzing {
    /// The event loop of every input's channel. One for the process: the core keeps one
    /// `LoopLane` per event loop it has seen, for the life of the process.
    static let loop = NIOAsyncTestingEventLoop()

    /// How long a connection may take to finish once its channel closed.
    static let finishTimeout = Duration.seconds(10)

    /// Runs one input, blocking the calling thread (libFuzzer's, or the replaying `main`) until
    /// the connection has finished.
    static func check(_ input: [UInt8]) {
        let done = DispatchSemaphore(value: 0)
        Task {
            let (server, conn) = await run(Plan(input))
            await expectFreed(server, conn)
            done.signal()
        }
        done.wait()
    }

    /// Whether to print the frames the server wrote (`NEFFOS_FUZZ_TRACE=1`), to see what a
    /// crash file does.
    static let tracing = ProcessInfo.processInfo.environment["NEFFOS_FUZZ_TRACE"] == "1"

    /// How long the server and the connection may stay alive after the input ended.
    static let freeTimeout = Duration.seconds(2)

    /// Checks that the input's server and connection are freed (the task that fired the close
    /// events lets go of them last): one that stays is held by a reference cycle, a leak that
    /// would grow with every connection. Cheaper than the leak detector's heap scan, so the
    /// long runs can turn that off (`-detect_leaks=0`).
    private static func expectFreed(_ server: Weak<Server>, _ conn: Weak<Conn>) async {
        let clock = ContinuousClock()
        let deadline = clock.now + freeTimeout
        while server.object != nil || conn.object != nil {
            require(clock.now < deadline, "the \(server.object == nil ? "connection" : "server") is still alive \(freeTimeout) after its input: a reference cycle")
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// What one input asks for.
    ///
    /// Byte 0 holds flags, byte 1 an offset; the rest is what the client sends:
    /// - `0x01`: the bytes start with the handshake, a masked text frame `M`;
    /// - `0x02`: then (with `0x01`) a connect to namespace `default` (`$0;default;;_OnNamespaceConnect;0;0;`);
    /// - `0x04`: the bytes arrive in two reads, split at the offset (modulo their length);
    /// - `0x08`: 31 virtual seconds pass before the last read (the handshake timeout, a
    ///   heartbeat ping);
    /// - `0x10`: the channel is not writable (a client that does not read): the outbox is full;
    /// - `0x20`: the server's on-connect hook refuses the connection;
    /// - `0x40`: the on-connect hook accepts it, asynchronously.
    struct Plan {
        var flags: UInt8 = 0
        var chunks: [[UInt8]] = []

        var advancesTime: Bool { flags & 0x08 != 0 }
        var fullOutbox: Bool { flags & 0x10 != 0 }
        var refuses: Bool { flags & 0x20 != 0 }
        var acceptsLater: Bool { flags & 0x40 != 0 }

        init(_ input: [UInt8]) {
            flags = input.first ?? 0
            let offset = input.count > 1 ? Int(input[1]) : 0
            var bytes: [UInt8] = []
            if flags & 0x01 != 0 {
                bytes += ClientFrame.text("M")
                if flags & 0x02 != 0 { bytes += ClientFrame.text("$0;default;;_OnNamespaceConnect;0;0;") }
            }
            let prefixLength = bytes.count
            bytes += input.dropFirst(2)
            if flags & 0x04 != 0, bytes.count > 1 {
                // Split within the client's own bytes when there are any, else in the prefix.
                let start = bytes.count > prefixLength ? prefixLength : 0
                let split = start + offset % (bytes.count - start)
                chunks = [Array(bytes[..<split]), Array(bytes[split...])]
            } else {
                chunks = [bytes]
            }
        }
    }

    // MARK: One input

    /// Runs `plan` on a new server and channel; returns them weakly, once the connection has
    /// finished.
    private static func run(_ plan: Plan) async -> (Weak<Server>, Weak<Conn>) {
        let (finished, finish) = AsyncStream<Weak<Conn>>.makeStream()
        let hooks = RunningHooks(plan.refuses || plan.acceptsLater ? 1 : 0)
        let server = makeServer(plan, hooks: hooks, finished: finish)
        let channel = NIOAsyncTestingChannel(loop: loop)
        do {
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40_000)).get()
            try await loop.executeInContext {
                let pipeline = channel.pipeline.syncOperations
                // What NIO's server upgrader installs, as the listener configures it.
                try pipeline.addHandler(WebSocketFrameEncoder())
                try pipeline.addHandler(ByteToMessageHandler(
                    WebSocketFrameDecoder(maxFrameSize: WebSocketListener.maxFrameSize(server.configuration.transport))))
                if WebSocketListener.usesNIOProtocolErrorHandler {
                    try pipeline.addHandler(WebSocketProtocolErrorHandler())
                }
                if plan.fullOutbox { channel.isWritable = false }
                try WebSocketListener.installServerPipeline(
                    on: channel, server: server,
                    request: UpgradeRequest(path: "/", headers: [("Host", "127.0.0.1")], remoteAddress: "127.0.0.1:40000"))
            }
        } catch {
            fatalError("could not set the channel up: \(error)")
        }
        for (index, chunk) in plan.chunks.enumerated() {
            if index == plan.chunks.count - 1 && plan.advancesTime {
                await loop.advanceTime(by: .seconds(31))
                await settle(server, hooks: hooks)
            }
            // A read after the server closed fails, as a socket would.
            _ = try? await channel.writeInbound(ByteBuffer(bytes: chunk))
            await settle(server, hooks: hooks)
        }
        // Close (if the server has not), run every timer left, then read what it wrote.
        _ = try? await channel.finish(acceptAlreadyClosed: true)
        var written = ByteBuffer()
        while let part = try? await channel.readOutbound(as: ByteBuffer.self) {
            written.writeImmutableBuffer(part)
        }
        guard let conn = await first(of: finished, timeout: finishTimeout) else {
            fatalError("the connection did not finish within \(finishTimeout) of its channel closing")
        }
        require(server.connectionCount == 0, "an open connection is left after its channel closed")
        require(server.connections().isEmpty, "a connection is left in the server's index")
        require(server.connections(namespace: "default").isEmpty, "a namespace member is left in the server's index")
        require(server.rooms(in: "default").isEmpty, "a room is left in the server's index")
        ServerFrames.check(written, tracing: tracing)
        return (Weak(server), conn)
    }

    /// How long ``settle(_:hooks:)`` waits at most for the server's asynchronous work.
    static let settleLimit = Duration.milliseconds(20)

    /// Lets the server finish what it does asynchronously about the bytes read so far, so that
    /// the next bytes (or the close) find it done, as they would from a client that waits for
    /// answers: the on-connect hook and its verdict, and each open connection's handler task
    /// (namespace and room requests, asynchronous handlers). A task that waits for the
    /// client's reply to an ask is done for this purpose. Gives up after ``settleLimit``.
    private static func settle(_ server: Server, hooks: RunningHooks) async {
        let clock = ContinuousClock()
        let deadline = clock.now + settleLimit
        var idleRounds = 0
        while idleRounds < 2 && clock.now < deadline {
            // Runs what the loop has, the writes the tasks hopped to it included.
            await loop.run()
            let idle = hooks.count == 0
                && server.connections().allSatisfy { $0.isIdle || $0.pendingAskCount > 0 }
            idleRounds = idle ? idleRounds + 1 : 0
            await Task.yield()
        }
        await loop.run()
    }

    /// The first element of `stream`, or `nil` if none comes within `timeout`.
    private static func first<Element: Sendable>(of stream: AsyncStream<Element>, timeout: Duration) async -> Element? {
        await withTaskGroup(of: Element?.self) { group in
            group.addTask {
                for await element in stream { return element }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    // MARK: The server

    /// A server with small bounds (so that short inputs reach them), namespace `default` with
    /// an echo ask (synchronous and asynchronous), a broadcast event, an ask back to the client
    /// and a failing event; `finished` is told when a connection has finished.
    private static func makeServer(
        _ plan: Plan, hooks: RunningHooks, finished: AsyncStream<Weak<Conn>>.Continuation
    ) -> Server {
        var events = Events()
        events.answer("echo") { _, message in Reply(message.body, isBinary: message.isBinary) }
        events.answer("echoLater") { _, message in
            await Task.yield()
            return Reply(message.body, isBinary: message.isBinary)
        }
        events.on("broadcast") { ns, message in
            ns.broadcast(Message(namespace: ns.namespace, room: message.room, event: "tick", body: message.body, isBinary: message.isBinary))
        }
        events.answer("askback") { ns, message in
            let reply = try await ns.ask("askback", message.body, timeout: .seconds(1))
            return Reply(reply.body, isBinary: reply.isBinary)
        }
        events.on("fail") { _, _ in throw FuzzError.failed }

        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "neffos-fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        configuration.idGenerator = { _ in "fuzz" }
        configuration.fireDisconnectAlways = true
        configuration.onDisconnect = { conn in finished.yield(Weak(conn)) }
        if plan.refuses {
            configuration.onConnect = { _ in
                defer { hooks.ended() }
                await Task.yield()
                throw FuzzError.refused
            }
        } else if plan.acceptsLater {
            configuration.onConnect = { _ in
                defer { hooks.ended() }
                await Task.yield()
            }
        }
        configuration.askTimeout = .seconds(2)
        configuration.handshakeTimeout = .seconds(10)
        configuration.maxQueuedEvents = 8
        configuration.maxQueuedBytes = 4096
        configuration.maxRoomsPerConnection = 4
        configuration.maxNameLength = 32
        configuration.maxPendingAsks = 4
        configuration.transport.maxFrameSize = 4096
        configuration.transport.maxMessageSize = 8192
        configuration.transport.maxOutboxBytes = 4096
        configuration.transport.pingInterval = .seconds(30)
        configuration.transport.readTimeout = .seconds(60)
        configuration.transport.writeTimeout = .seconds(5)
        do {
            return try Server(namespaces: ["default": events, "other": Events()], configuration: configuration)
        } catch {
            fatalError("could not make the server: \(error)")
        }
    }

    /// The errors the fuzzed server's hooks and handlers throw.
    enum FuzzError: Error, CustomStringConvertible {
        case refused
        case failed

        var description: String {
            switch self {
            case .refused: "refused by the fuzzer"
            case .failed: "failed on purpose"
            }
        }
    }
}

/// How many on-connect hooks have yet to return: counted from the start (the server calls
/// the hook in a task of its own, which may not have started yet).
final class RunningHooks: Sendable {
    private let running: Atomic<Int>

    init(_ expected: Int) { running = Atomic(expected) }

    func ended() { running.subtract(1, ordering: .relaxed) }
    var count: Int { running.load(ordering: .relaxed) }
}

/// A weak reference, to see whether an object was freed.
struct Weak<Object: AnyObject & Sendable>: Sendable {
    weak var object: Object?

    init(_ object: Object) { self.object = object }
}

/// WebSocket frames as a client writes them (masked), for the plans and the seeds.
enum ClientFrame {
    /// The opcodes of RFC 6455.
    enum Opcode: UInt8 {
        case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA
    }

    /// A masked frame. The default mask key is zero, which leaves the payload readable (and
    /// mutable by the fuzzer byte for byte).
    static func frame(_ opcode: Opcode, _ payload: [UInt8], fin: Bool = true, maskKey: [UInt8] = [0, 0, 0, 0]) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode.rawValue]
        switch payload.count {
        case ..<126:
            bytes.append(0x80 | UInt8(payload.count))
        case ..<65_536:
            bytes.append(0x80 | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default:
            bytes.append(0x80 | 127)
            bytes += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        bytes += maskKey
        bytes += payload.enumerated().map { $0.element ^ maskKey[$0.offset % 4] }
        return bytes
    }

    /// A masked, final text frame.
    static func text(_ text: String) -> [UInt8] { frame(.text, Array(text.utf8)) }
}

/// The checks on what a server wrote to one connection.
enum ServerFrames {
    /// Parses `written` as the server's frames and checks each (see ``FrameFuzzing``);
    /// `tracing` prints them.
    static func check(_ written: ByteBuffer, tracing: Bool = false) {
        var bytes = written
        var closed = false
        var handshake: UInt8?
        while bytes.readableBytes > 0 {
            guard let (opcode, fin, payload) = readFrame(&bytes) else {
                fatalError("the server wrote a malformed or partial frame; left: \(Array(bytes.readableBytesView.prefix(16)))")
            }
            if tracing {
                FileHandle.standardError.write(Data("server frame: opcode \(opcode), fin \(fin): \(String(buffer: payload).debugDescription)\n".utf8))
            }
            require(!closed, "the server wrote a frame (opcode \(opcode)) after its close frame")
            switch opcode {
            case 0x1, 0x2:
                require(fin, "the server fragmented a message")
                if opcode == 0x1 {
                    require(String(validating: payload.readableBytesView, as: UTF8.self) != nil, "the server wrote a text frame that is not UTF-8")
                }
                if let handshake {
                    require(handshake == UInt8(ascii: "A"), "the server wrote a frame after refusing the handshake")
                } else {
                    let first = payload.getInteger(at: payload.readerIndex, as: UInt8.self)
                    require(
                        first == UInt8(ascii: "A") || first == UInt8(ascii: "H"),
                        "the server wrote a message before answering the handshake: \(String(buffer: payload).debugDescription)")
                    handshake = first
                }
            case 0x8, 0x9, 0xA:
                require(fin && payload.readableBytes <= 125, "the server wrote a fragmented or oversized control frame")
                if opcode == 0x8 {
                    closed = true
                    require(payload.readableBytes != 1, "the server wrote a close frame of one byte")
                    if let code = payload.getInteger(at: payload.readerIndex, as: UInt16.self) {
                        require(
                            (1000...1003).contains(code) || (1007...1014).contains(code) || (3000...4999).contains(code),
                            "the server wrote close code \(code)")
                        let reason = payload.readableBytesView.dropFirst(2)
                        require(String(validating: reason, as: UTF8.self) != nil, "the server wrote a close reason that is not UTF-8")
                    }
                }
            default:
                fatalError("the server wrote opcode \(opcode)")
            }
        }
    }

    /// Reads one unmasked frame without reserved bits; `nil` when it is not one, or partial.
    private static func readFrame(_ bytes: inout ByteBuffer) -> (opcode: UInt8, fin: Bool, payload: ByteBuffer)? {
        guard let first = bytes.readInteger(as: UInt8.self), let second = bytes.readInteger(as: UInt8.self) else { return nil }
        guard first & 0x70 == 0, second & 0x80 == 0 else { return nil }
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let extended = bytes.readInteger(as: UInt16.self) else { return nil }
            length = Int(extended)
        } else if length == 127 {
            guard let extended = bytes.readInteger(as: UInt64.self), extended <= UInt64(Int32.max) else { return nil }
            length = Int(extended)
        }
        guard let payload = bytes.readSlice(length: length) else { return nil }
        return (first & 0x0F, first & 0x80 != 0, payload)
    }
}
