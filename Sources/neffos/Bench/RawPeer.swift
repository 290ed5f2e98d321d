import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket
import Neffos
import NeffosNIO
import Synchronization

/// A raw TCP peer that speaks just enough WebSocket to attack: it writes bytes as told, keeps
/// count of what it receives (the first 64 KiB kept), and notes when the server closes.
final class RawPeer: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private struct State {
        var head = ByteBuffer()
        var received = 0
        /// Empty replies (`…;;;;;;`, the answer to a join) seen so far, and the last bytes
        /// of the previous read (a reply may span two reads).
        var emptyReplies = 0
        var tail: [UInt8] = []
        var closedAt: ContinuousClock.Instant?
        var stoppedReading = false
    }

    private let state = Mutex(State())
    let opened = ContinuousClock.now
    private let channelBox = Mutex<(any Channel)?>(nil)

    var channel: any Channel { channelBox.withLock { $0! } }
    var receivedText: String { state.withLock { String(buffer: $0.head) } }
    var receivedBytes: Int { state.withLock { $0.received } }
    /// Replies with nothing but a token received (join answers).
    var emptyReplies: Int { state.withLock { $0.emptyReplies } }
    /// Seconds from opening to the server's close, if it closed (for a peer that stopped
    /// reading: as seen by ``pollServerClose()``).
    var secondsToClose: Double? { state.withLock { $0.closedAt.map { ($0 - opened).seconds } } }
    /// Whether it stopped reading (its close time is not exact).
    var stoppedReading: Bool { state.withLock { $0.stoppedReading } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        state.withLock { state in
            state.received += bytes.readableBytes
            let scanned = state.tail + bytes.readableBytesView
            var run = 0
            for byte in scanned {
                run = byte == UInt8(ascii: ";") ? run + 1 : 0
                if run == 6 { state.emptyReplies += 1 }
            }
            // Keep the trailing semicolons only (at most 5): they may continue in the next read.
            state.tail = Array(scanned.suffix(min(5, run)))
            if state.head.readableBytes < 65_536 { state.head.writeBuffer(&bytes) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.closedAt = .now }
        context.fireChannelInactive()
    }

    static func connect(_ url: WebSocketURL, group: any EventLoopGroup, source: Int = 0) async throws -> RawPeer {
        let peer = RawPeer()
        var bootstrap = ClientBootstrap(group: group)
        if source >= 25_000 {
            bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: "127.0.0.\(1 + source / 25_000)", port: 0))
        }
        let channel = try await bootstrap
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(peer) }
            }
            .connect(host: url.host, port: url.port).get()
        peer.channelBox.withLock { $0 = channel }
        return peer
    }

    /// Waits (up to 10 s) until the received text contains `text`.
    func wait(for text: String) async throws {
        let start = ContinuousClock.now
        while !receivedText.contains(text) {
            guard ContinuousClock.now - start < .seconds(10), secondsToClose == nil else {
                throw ToolError("the server did not send \"\(text)\" (got \(receivedText.prefix(200)))")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func send(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes)
    }

    /// A valid WebSocket upgrade request for `url`.
    static func upgradeRequest(_ url: WebSocketURL) -> ByteBuffer {
        ByteBuffer(string: "GET \(url.requestURI) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    }

    /// Upgrades, sends `M`, waits for `A…`; with `namespace`, connects it too.
    func open(_ url: WebSocketURL, namespace: String? = nil) async throws {
        try await send(Self.upgradeRequest(url))
        try await wait(for: "\r\n\r\n")
        try await send(Self.frame(.text, "M"))
        try await wait(for: "A")
        if let namespace {
            try await send(Self.frame(.text, "$c;\(namespace);;_OnNamespaceConnect;0;0;"))
            try await wait(for: "$c;;;;;;")
        }
    }

    /// Stops reading: what the server sends piles up in its outbox.
    func stopReading() async throws {
        state.withLock { $0.stoppedReading = true }
        try await channel.setOption(.autoRead, value: false).get()
    }

    /// For a peer that stopped reading (and so never sees the end of the stream): notes the
    /// server's close when the kernel says the server has ended its side (TCP `CLOSE_WAIT`).
    func pollServerClose() async {
        guard stoppedReading, secondsToClose == nil, let provider = channel as? any SocketOptionProvider,
            let info = try? await provider.getTCPInfo().get()
        else { return }
        if info.tcpi_state == 8 || info.tcpi_state == 7 {  // CLOSE_WAIT (the server's FIN), CLOSE (its reset)
            state.withLock { if $0.closedAt == nil { $0.closedAt = .now } }
        }
    }

    /// A masked client frame (mask key 0: masked, payload unchanged).
    static func frame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, fin: Bool = true) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode))
        let length = payload.readableBytes
        if length < 126 {
            buffer.writeInteger(UInt8(0x80 | length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(UInt8(0x80 | 126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(0x80 | 127))
            buffer.writeInteger(UInt64(length))
        }
        buffer.writeInteger(UInt32(0))
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    static func frame(_ opcode: WebSocketOpcode, _ text: String) -> ByteBuffer {
        frame(opcode, ByteBuffer(string: text))
    }
}
