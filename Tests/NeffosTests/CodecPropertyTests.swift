import NIOCore
import NeffosTesting
import Testing

@testable import Neffos

/// Pieces names are built from: separators, the escape text and its fragments, UTF-8, NATS
/// wildcards and nothing at all.
let namePieces = [
    "a", "room", ";", "@%!semicolon@%!", "@%!semicolon", "semicolon@%!", "@", "%", "!", "semicolon",
    "é", "日本", "🙂", " ", ".", "*", ">", "", "$", "#", "_On",
]

func randomName(_ rng: inout SplitMix64) -> String {
    let count = Int.random(in: 0...5, using: &rng)
    return (0..<count).map { _ in namePieces.randomElement(using: &rng)! }.joined()
}

func randomBody(_ rng: inout SplitMix64) -> [UInt8] {
    let count = Int.random(in: 0...40, using: &rng)
    let alphabet: [UInt8] = [0x3B, 0x40, 0x25, 0x21, 0x00, 0xFF, 0xC3, 0xA9, 0x31, 0x30, 0x20, 0x0A]
    return (0..<count).map { _ in
        Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
    }
}

func randomMessage(_ rng: inout SplitMix64) -> Message {
    var message = Message(
        namespace: randomName(&rng), room: randomName(&rng), event: EventName(randomName(&rng)),
        bytes: randomBody(&rng))
    switch Int.random(in: 0..<4, using: &rng) {
    case 0: message.wait = ""
    case 1: message.wait = "$\(UInt64.random(in: 0...UInt64.max, using: &rng))"
    case 2: message.wait = "\(UInt64.random(in: 0...UInt64.max, using: &rng))"
    default: message.wait = "#\(Int.random(in: 0...99, using: &rng))"
    }
    message.isNoOp = Int.random(in: 0..<5, using: &rng) == 0
    if Int.random(in: 0..<5, using: &rng) == 0 {
        message.body = ByteBuffer()
        message.error = RemoteError(randomName(&rng) + ";" + randomName(&rng))
    }
    return message
}

/// What every neffos peer does to a received name: replace the escape text, leftmost first.
func peerUnescape(_ text: String) -> String { text.replacing("@%!semicolon@%!", with: ";") }

@Suite("Codec properties")
struct CodecPropertyTests {
    @Test("random messages round-trip, or are refused exactly when a peer could not read their names back",
          arguments: 0..<20)
    func roundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<500 {
            let message = randomMessage(&rng)
            let names = [message.namespace, message.room, message.event.rawValue]
            let representable = names.allSatisfy { peerUnescape($0.replacing(";", with: "@%!semicolon@%!")) == $0 }
            guard representable else {
                #expect(throws: NeffosError.unrepresentableName) { try MessageCodec.encode(message) }
                continue
            }
            let frame = try MessageCodec.encode(message)
            let decoded = try MessageCodec.decode(frame)
            #expect(decoded == message, "seed \(seed): \(message) → \(String(buffer: frame))")
        }
    }

    @Test("a name made only of the escape text cannot be sent")
    func escapeTextRefused() {
        #expect(throws: NeffosError.unrepresentableName) {
            try MessageCodec.encode(Message(namespace: "@%!semicolon@%!", event: "e"))
        }
        #expect(throws: NeffosError.unrepresentableName) {
            try MessageCodec.validate(name: "x@%!semicolon;@%!")
        }
    }

    @Test("names with separators, wildcards, spaces, UTF-8 and nothing travel unchanged",
          arguments: [";", "a;b", ";;", "", " ", "a.b", "*", ">", "日本;語", "🙂", "@", "@%!", "semicolon@%!"])
    func specialNames(_ name: String) throws {
        let message = Message(namespace: name, room: name, event: EventName(name + "e"), body: "x")
        let decoded = try MessageCodec.decode(MessageCodec.encode(message))
        #expect(decoded.namespace == name)
        #expect(decoded.room == name)
        #expect(decoded.event.rawValue == name + "e")
    }

    @Test("the body is a slice of the frame, not a copy")
    func bodyIsASlice() throws {
        var frame = ByteBufferAllocator().buffer(capacity: 256)
        frame.writeString(";default;;chat;0;0;")
        frame.writeBytes(Array(repeating: UInt8(ascii: "x"), count: 64))
        let message = try MessageCodec.decode(frame)
        let framePointer = frame.withUnsafeReadableBytes { $0.baseAddress! + 19 }
        let bodyPointer = message.body.withUnsafeReadableBytes { $0.baseAddress! }
        #expect(framePointer == bodyPointer)
    }

    @Test("a binary frame keeps raw bytes and its binary flag")
    func binaryFrame() throws {
        var frame = ByteBuffer(string: ";default;;blob;0;0;")
        frame.writeBytes([0, 255, 0x3B, 0xC3])
        let message = try MessageCodec.decode(frame, isBinary: true)
        #expect(message.isBinary)
        #expect(message.bodyBytes == [0, 255, 0x3B, 0xC3])
        #expect(try MessageCodec.encode(message) == frame)
    }

    @Test("header fields that are not UTF-8 are invalid")
    func invalidUTF8Header() {
        var frame = ByteBuffer(string: ";de")
        frame.writeBytes([0xFF, 0xFE])
        frame.writeString(";;chat;0;0;x")
        #expect(throws: NeffosError.invalidPayload) { try MessageCodec.decode(frame) }
    }

    @Test("a native message is written as its body alone")
    func nativeEncoding() throws {
        let frame = try MessageCodec.encode(.native(ByteBuffer(string: "raw;text")))
        #expect(String(buffer: frame) == "raw;text")
    }

    @Test("only the byte 1 reads as true in the flag fields")
    func flagParsing() throws {
        for (flag, expected) in [("1", true), ("0", false), ("", false), ("true", false), ("11", false), ("2", false)] {
            let message = try MessageCodec.decode(ByteBuffer(string: "$1;ns;;e;0;\(flag);"))
            #expect(message.isNoOp == expected, "isNoOp \(flag)")
            let error = try MessageCodec.decode(ByteBuffer(string: "$1;ns;;e;\(flag);0;text"))
            #expect((error.error != nil) == expected, "isError \(flag)")
        }
    }

    @Test("handshake frames are recognised")
    func handshakeFrames() {
        #expect(MessageCodec.handshake(MessageCodec.identifyFrame) == .identify)
        #expect(MessageCodec.handshake(MessageCodec.acceptFrame(id: "abc")) == .accepted(id: "abc"))
        #expect(MessageCodec.handshake(MessageCodec.refuseFrame(text: "no;way")) == .refused(text: "no;way"))
        #expect(MessageCodec.handshake(ByteBuffer(string: "MM")) == nil)
        #expect(MessageCodec.handshake(ByteBuffer()) == nil)
        #expect(String(buffer: MessageCodec.emptyReply(to: "$9")) == "$9;;;;;;")
    }
}

@Suite("Codec replies")
struct CodecReplyTests {
    @Test("encodeReply writes the same frame as encoding the reply message", arguments: 0..<5)
    func replyEquivalence(seed: UInt64) throws {
        var rng = SplitMix64(seed: 100 + seed)
        for _ in 0..<300 {
            var request = randomMessage(&rng)
            request.error = nil
            let body = ByteBuffer(bytes: randomBody(&rng))
            guard let expected = try? MessageCodec.encode(request.reply(body)) else {
                #expect(throws: NeffosError.unrepresentableName) { try MessageCodec.encodeReply(to: request, body: body) }
                continue
            }
            #expect(try MessageCodec.encodeReply(to: request, body: body) == expected)
        }
    }
}
