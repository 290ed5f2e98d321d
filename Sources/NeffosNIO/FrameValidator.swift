import NIOCore
import NIOWebSocket
import Neffos

/// Rejects frames RFC 6455 says must fail the connection, before fragments are reassembled:
/// a client's frame that is not masked, a server's that is (§5.1), reserved bits set without
/// a negotiated extension (§5.2; we negotiate none), and text that is not UTF-8 (§8.1),
/// checked fragment by fragment so that the connection fails as soon as a fragment breaks it
/// rather than when the message is complete. The connection's handler then fails the
/// connection with the violation's close code.
///
/// It also unmasks the frames it passes on, once, so that nothing after it copies them again.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    /// Whether the peer is a client (whose frames must be masked).
    private let peerIsClient: Bool
    private var failed = false
    /// The text message being received, if any: what its fragments so far left unfinished.
    private var text: UTF8Validation?

    init(peerIsClient: Bool) {
        self.peerIsClient = peerIsClient
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var frame = unwrapInboundIn(data)
        if peerIsClient != (frame.maskKey != nil) {
            return fail(context, peerIsClient ? .unmaskedFrame : .maskedServerFrame)
        }
        if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            return fail(context, .reservedBits)
        }
        if let key = frame.maskKey {
            frame.data.webSocketUnmask(key)
            frame.maskKey = nil
        }
        switch frame.opcode {
        case .text, .continuation:
            if frame.opcode == .text { text = UTF8Validation() }
            guard var validation = text else { break }  // a binary message's continuation
            let valid = frame.data.withUnsafeReadableBytes { validation.feed($0) }
            guard valid, !frame.fin || validation.isComplete else { return fail(context, .invalidUTF8) }
            text = frame.fin ? nil : validation
        case .binary:
            text = nil
        default:
            break
        }
        context.fireChannelRead(wrapInboundOut(frame))
    }

    private func fail(_ context: ChannelHandlerContext, _ violation: ProtocolViolation) {
        failed = true
        context.fireErrorCaught(violation)
    }
}

/// A frame that breaks RFC 6455: the connection is failed with ``closeCode`` and this text.
enum ProtocolViolation: Error, CustomStringConvertible {
    case unmaskedFrame
    case maskedServerFrame
    case reservedBits
    case invalidUTF8

    var description: String {
        switch self {
        case .unmaskedFrame: "unmasked client frame"
        case .maskedServerFrame: "masked server frame"
        case .reservedBits: "reserved bits set"
        case .invalidUTF8: "invalid UTF-8"
        }
    }

    /// The close code that answers it: 1007 for text that is not UTF-8, else 1002.
    var closeCode: CloseCode {
        self == .invalidUTF8 ? .invalidData : .protocolError
    }
}

/// UTF-8 validation that can stop anywhere, in the middle of a character, and go on with the
/// next bytes (a text message arrives in fragments). It fails at the first byte that no
/// valid text could contain (RFC 3629: no overlong forms, no surrogates, nothing past
/// U+10FFFF), even before the character is complete.
struct UTF8Validation {
    /// Continuation bytes still expected in the current character.
    private var pending: UInt8 = 0
    /// The range the next continuation byte must fall in (narrower right after E0, ED, F0, F4).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    /// Whether the bytes so far end on a character boundary.
    var isComplete: Bool { pending == 0 }

    /// Checks the next bytes; `false` once the text can no longer be valid.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            if pending == 0 {
                // ASCII, eight bytes at a time.
                while index + 8 <= count,
                    bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
                {
                    index += 8
                }
                guard index < count else { break }
                let byte = bytes[index]
                index += 1
                switch byte {
                case 0x00...0x7F: continue
                case 0xC2...0xDF: (pending, low, high) = (1, 0x80, 0xBF)
                case 0xE0: (pending, low, high) = (2, 0xA0, 0xBF)
                case 0xED: (pending, low, high) = (2, 0x80, 0x9F)
                case 0xE1...0xEF: (pending, low, high) = (2, 0x80, 0xBF)
                case 0xF0: (pending, low, high) = (3, 0x90, 0xBF)
                case 0xF1...0xF3: (pending, low, high) = (3, 0x80, 0xBF)
                case 0xF4: (pending, low, high) = (3, 0x80, 0x8F)
                default: return false
                }
            } else {
                let byte = bytes[index]
                index += 1
                guard byte >= low && byte <= high else { return false }
                (pending, low, high) = (pending - 1, 0x80, 0xBF)
            }
        }
        return true
    }
}

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8.
    var isValidUTF8: Bool {
        var validation = UTF8Validation()
        return withUnsafeReadableBytes { validation.feed($0) } && validation.isComplete
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
