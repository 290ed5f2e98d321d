import NIOCore
import NIOWebSocket
import Testing
@testable import NeffosNIO

/// The checks and reassembly a server connection's handler runs on every received frame.
@Suite("Inbound frames")
struct InboundFramesTests {
    static let key = WebSocketMaskingKey([1, 2, 3, 4] as [UInt8])!

    /// A client's frame: masked, as on the wire.
    static func frame(_ opcode: WebSocketOpcode, _ text: String, fin: Bool = true, masked: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(string: text)
        if masked { data.webSocketMask(key) }
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: masked ? key : nil, data: data)
    }

    static func text(of outcome: InboundFrames.Outcome) -> (WebSocketOpcode, String)? {
        guard case .frame(let frame) = outcome else { return nil }
        return (frame.opcode, String(buffer: frame.data))
    }

    static func error(of outcome: InboundFrames.Outcome) -> (any Error)? {
        guard case .failed(let error) = outcome else { return nil }
        return error
    }

    @Test("a whole message is unmasked and read at once; fragments are read as one message, control frames between them at once")
    func reassembly() throws {
        var inbound = InboundFrames(peerIsClient: true)
        #expect(Self.text(of: inbound.receive(Self.frame(.text, "hello")))! == (.text, "hello"))
        guard case .pending = inbound.receive(Self.frame(.binary, "ab", fin: false)) else { Issue.record("kept"); return }
        #expect(Self.text(of: inbound.receive(Self.frame(.ping, "p")))! == (.ping, "p"))
        guard case .pending = inbound.receive(Self.frame(.continuation, "cd", fin: false)) else { Issue.record("kept"); return }
        let whole = try #require(Self.text(of: inbound.receive(Self.frame(.continuation, "ef"))))
        #expect(whole == (.binary, "abcdef"))
        #expect(Self.text(of: inbound.receive(Self.frame(.text, "next")))! == (.text, "next"))
    }

    @Test("what breaks RFC 6455 fails the connection once, and nothing after it is read")
    func violations() {
        var unmasked = InboundFrames(peerIsClient: true)
        #expect(Self.error(of: unmasked.receive(Self.frame(.text, "x", masked: false))) as? ProtocolViolation == .unmaskedFrame)
        guard case .pending = unmasked.receive(Self.frame(.text, "after")) else { Issue.record("read after failing"); return }

        var masked = InboundFrames(peerIsClient: false)
        #expect(Self.error(of: masked.receive(Self.frame(.text, "x"))) as? ProtocolViolation == .maskedServerFrame)

        var utf8 = InboundFrames(peerIsClient: true)
        _ = utf8.receive(Self.frame(.text, "caf", fin: false))
        var bad = ByteBuffer(bytes: [0xC3])  // a character cut short at the message's end
        bad.webSocketMask(Self.key)
        #expect(Self.error(of: utf8.receive(WebSocketFrame(fin: true, opcode: .continuation, maskKey: Self.key, data: bad))) as? ProtocolViolation == .invalidUTF8)

        var orphan = InboundFrames(peerIsClient: true)
        #expect(Self.error(of: orphan.receive(Self.frame(.continuation, "x"))) as? NIOWebSocketFrameAggregator.Error == .didReceiveFragmentBeforeReceivingTextOrBinaryFrame)

        var interleaved = InboundFrames(peerIsClient: true)
        _ = interleaved.receive(Self.frame(.binary, "a", fin: false))
        #expect(Self.error(of: interleaved.receive(Self.frame(.binary, "b"))) as? NIOWebSocketFrameAggregator.Error == .receivedNewFrameWithoutFinishingPrevious)
    }

    @Test("a message is bounded in bytes over all its fragments, and in fragments")
    func bounds() {
        var bytes = InboundFrames(peerIsClient: true, maxMessageSize: 5)
        _ = bytes.receive(Self.frame(.binary, "abc", fin: false))
        #expect(Self.error(of: bytes.receive(Self.frame(.continuation, "def"))) as? NIOWebSocketFrameAggregator.Error == .accumulatedFrameSizeIsTooLarge)
        var first = InboundFrames(peerIsClient: true, maxMessageSize: 2)
        #expect(Self.error(of: first.receive(Self.frame(.binary, "abc", fin: false))) as? NIOWebSocketFrameAggregator.Error == .accumulatedFrameSizeIsTooLarge)
        var count = InboundFrames(peerIsClient: true, maxFragments: 2)
        _ = count.receive(Self.frame(.binary, "a", fin: false))
        _ = count.receive(Self.frame(.continuation, "b", fin: false))
        #expect(Self.error(of: count.receive(Self.frame(.continuation, "c"))) as? NIOWebSocketFrameAggregator.Error == .tooManyFragments)
    }
}
