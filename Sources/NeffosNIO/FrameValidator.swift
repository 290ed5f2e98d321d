import NIOCore
import NIOWebSocket
import Neffos

/// What a connection's handler does with each received frame before it reads it: the checks
/// RFC 6455 says must fail the connection, and the reassembly of fragmented messages.
///
/// Checks, before fragments are reassembled: a client's frame that is not masked, a server's
/// that is (§5.1), reserved bits set without a negotiated extension (§5.2; we negotiate none),
/// and text that is not UTF-8 (§8.1), fragment by fragment, so that the connection fails as
/// soon as a fragment breaks it rather than when the message is complete. Frames are unmasked
/// once, here. Then fragments are reassembled, bounded by `maxMessageSize` bytes and
/// `maxFragments` fragments (control frames pass between them), with NIO's aggregator's errors.
///
/// A server connection's ``WebSocketHandler`` runs it inline:
/// as pipeline handlers of their own, the checks and the reassembly cost two more hops per
/// frame and two more handlers per connection. The dialler's pipeline keeps them as handlers
/// (``FrameValidator`` and NIO's aggregator).
struct InboundFrames {
    // Widest first and counts in 32 bits: every server connection holds one of these.
    let maxMessageSize: Int
    /// The fragmented message being reassembled, if any.
    private var fragments: ByteBuffer?
    let maxFragments: UInt32
    private var fragmentCount: UInt32 = 0
    /// The text message being received, if any: what its fragments so far left unfinished.
    private var text: UTF8Validation?
    /// Whether the peer is a client (whose frames must be masked).
    let peerIsClient: Bool
    /// Set by the first failure: nothing after it is read.
    private(set) var failed = false
    private var fragmentOpcode = WebSocketOpcode.binary

    init(peerIsClient: Bool, maxMessageSize: Int = .max, maxFragments: Int = 1 << 16) {
        self.peerIsClient = peerIsClient
        self.maxMessageSize = maxMessageSize
        self.maxFragments = UInt32(clamping: maxFragments)
    }

    /// What a received frame comes to.
    enum Outcome {
        /// A frame to read: a whole message, or a control frame.
        case frame(WebSocketFrame)
        /// A fragment was kept (or the connection already failed): nothing to read yet.
        case pending
        /// The connection fails with this error (a ``ProtocolViolation`` or an
        /// `NIOWebSocketFrameAggregator.Error`).
        case failed(any Error)
    }

    mutating func receive(_ frame: WebSocketFrame) -> Outcome {
        guard !failed else { return .pending }
        var frame = frame
        if let violation = check(&frame) { return fail(violation) }
        switch frame.opcode {
        case .text, .binary:
            guard fragments == nil else { return fail(NIOWebSocketFrameAggregator.Error.receivedNewFrameWithoutFinishingPrevious) }
            if frame.fin { return .frame(frame) }
            guard frame.data.readableBytes <= maxMessageSize else { return fail(NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge) }
            fragments = frame.data
            fragmentOpcode = frame.opcode
            fragmentCount = 1
            return .pending
        case .continuation:
            guard var message = fragments else {
                return fail(NIOWebSocketFrameAggregator.Error.didReceiveFragmentBeforeReceivingTextOrBinaryFrame)
            }
            fragmentCount += 1
            guard fragmentCount <= maxFragments else { return fail(NIOWebSocketFrameAggregator.Error.tooManyFragments) }
            guard message.readableBytes + frame.data.readableBytes <= maxMessageSize else {
                return fail(NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge)
            }
            fragments = nil  // the only reference while it grows: no copy
            var data = frame.data
            message.writeBuffer(&data)
            guard frame.fin else {
                fragments = message
                return .pending
            }
            return .frame(WebSocketFrame(fin: true, opcode: fragmentOpcode, data: message))
        default:
            return .frame(frame)
        }
    }

    /// The RFC 6455 checks of one frame, which it unmasks: the violation, or `nil`.
    mutating func check(_ frame: inout WebSocketFrame) -> ProtocolViolation? {
        if peerIsClient != (frame.maskKey != nil) {
            return peerIsClient ? .unmaskedFrame : .maskedServerFrame
        }
        if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            return .reservedBits
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
            guard valid, !frame.fin || validation.isComplete else { return .invalidUTF8 }
            text = frame.fin ? nil : validation
        case .binary:
            text = nil
        default:
            break
        }
        return nil
    }

    private mutating func fail(_ error: any Error) -> Outcome {
        failed = true
        fragments = nil
        return .failed(error)
    }
}

/// The checks of ``InboundFrames`` as a pipeline handler, for the dialler's pipeline (before
/// NIO's aggregator): it fails the connection through `errorCaught` with the violation, and
/// passes on the frames unmasked.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private var checks: InboundFrames

    init(peerIsClient: Bool) {
        checks = InboundFrames(peerIsClient: peerIsClient)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var frame = unwrapInboundIn(data)
        if let violation = checks.check(&frame) {
            failed = true
            context.fireErrorCaught(violation)
            return
        }
        context.fireChannelRead(wrapInboundOut(frame))
    }

    private var failed = false
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
