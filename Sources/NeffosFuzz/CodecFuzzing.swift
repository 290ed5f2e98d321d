import NIOCore
import Neffos

/// The `codec` target: the wire codec on arbitrary frames.
enum CodecFuzzing {
    /// Decodes `frame` four ways (text or binary, native messages allowed or not). Decoding
    /// may refuse the frame (an error), never trap; a decoded message must encode, the
    /// encoding must decode to an equal message and encode again to the same bytes, and the
    /// reply fast path must write what encoding the reply message writes.
    static func check(_ frame: ByteBuffer) {
        _ = MessageCodec.handshake(frame)
        for isBinary in [false, true] {
            for allowNative in [false, true] {
                guard let message = try? MessageCodec.decode(frame, isBinary: isBinary, allowNative: allowNative) else {
                    continue
                }
                roundTrip(message, allowNative: allowNative)
            }
        }
    }

    /// Checks that `message`, decoded with `allowNative`, survives encoding and decoding again.
    private static func roundTrip(_ message: Message, allowNative: Bool) {
        let encoded: ByteBuffer
        do {
            encoded = try MessageCodec.encode(message)
        } catch {
            fatalError("a decoded message does not encode: \(message): \(error)")
        }
        let again: Message
        do {
            again = try MessageCodec.decode(encoded, isBinary: message.isBinary, allowNative: allowNative)
        } catch {
            fatalError("an encoded message does not decode: \(message) as \(String(buffer: encoded)): \(error)")
        }
        require(again == message, "a message does not survive encoding: \(message) became \(again) (wire: \(String(buffer: encoded)))")
        require((try? MessageCodec.encode(again)) == encoded, "encoding is not stable for \(message)")
        guard !message.isNative else { return }
        // Conn.sendReply writes replies through the fast path; it must match the reply message.
        var body = message.body
        body.writeStaticString(";reply")
        let fast = try? MessageCodec.encodeReply(to: message, body: body)
        let slow = try? MessageCodec.encode(message.reply(body))
        require(fast == slow, "encodeReply differs from encoding the reply to \(message)")
    }
}
