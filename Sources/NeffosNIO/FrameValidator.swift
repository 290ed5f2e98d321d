import NIOCore
import NIOWebSocket
import Neffos

/// Rejects frames RFC 6455 says must fail the connection, before fragments are reassembled:
/// a client's frame that is not masked (§5.1), and reserved bits set without a negotiated
/// extension (§5.2; we negotiate none). The connection's handler closes with 1002.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    /// Whether the peer is a client (whose frames must be masked).
    private let peerIsClient: Bool
    private var failed = false

    init(peerIsClient: Bool) {
        self.peerIsClient = peerIsClient
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        if peerIsClient && frame.maskKey == nil {
            fail(context, .unmaskedFrame)
        } else if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            fail(context, .reservedBits)
        } else {
            context.fireChannelRead(data)
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ violation: ProtocolViolation) {
        failed = true
        context.fireErrorCaught(violation)
    }
}

/// A frame that breaks RFC 6455: the connection is closed with 1002 and this text.
enum ProtocolViolation: Error, CustomStringConvertible {
    case unmaskedFrame
    case reservedBits

    var description: String {
        switch self {
        case .unmaskedFrame: "unmasked client frame"
        case .reservedBits: "reserved bits set"
        }
    }
}

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8 (ASCII checked eight bytes at a time).
    var isValidUTF8: Bool {
        withUnsafeReadableBytes { bytes in
            var index = 0
            while index + 8 <= bytes.count,
                bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
            {
                index += 8
            }
            while index < bytes.count && bytes[index] < 0x80 { index += 1 }
            if index == bytes.count { return true }
            // From the first non-ASCII byte (a character boundary): validate the rest.
            return String(validating: bytes[index...], as: UTF8.self) != nil
        }
    }
}

extension CloseCode {
    /// Whether a peer may send this code in a close frame (RFC 6455 §7.4: 1000–1003,
    /// 1007–1014 as registered, 3000–4999; never 1004, 1005, 1006, 1015 or other values).
    var isValidOnTheWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}
