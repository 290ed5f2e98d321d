import NIOCore

/// The neffos wire codec: messages to frames and back, byte for byte as neffos.js and the Go
/// implementation read and write them.
///
/// A message frame is seven fields joined by `;`:
/// `wait;namespace;room;event;isError;isNoOp;body`. The body is everything after the sixth
/// `;` and may itself contain `;`. In the namespace, room and event every `;` is escaped as the
/// text `@%!semicolon@%!`; the wait token and the body are never escaped. Only the byte `1`
/// reads as true in the two flag fields.
///
/// Invalid input never traps: ``decode(_:isBinary:allowNative:knownErrors:)`` throws
/// ``NeffosError/invalidPayload``, and the caller drops the frame.
public enum MessageCodec {
    /// The text that stands for `;` inside namespace, room and event names.
    public static let escapedSeparator = "@%!semicolon@%!"

    static let separator: UInt8 = UInt8(ascii: ";")
    static let escapeLead: UInt8 = UInt8(ascii: "@")
    static let one: UInt8 = UInt8(ascii: "1")
    static let zero: UInt8 = UInt8(ascii: "0")

    // MARK: Encoding

    /// Encodes `message` into a new buffer.
    ///
    /// - Throws: ``NeffosError/unrepresentableName`` when a name contains the escape text in a
    ///   way no neffos peer could decode back.
    public static func encode(
        _ message: Message, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws(NeffosError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: estimatedSize(of: message))
        try encode(message, into: &buffer)
        return buffer
    }

    /// Appends the frame for `message` to `buffer`.
    ///
    /// A native message without a wait token is written as its body alone; an empty reply
    /// (a token and nothing else) as `<wait>;;;;;;`; anything else as the seven fields.
    public static func encode(_ message: Message, into buffer: inout ByteBuffer) throws(NeffosError) {
        if message.isNative && message.wait.isEmpty {
            buffer.writeImmutableBuffer(message.body)
            return
        }
        if message.isEmptyReply {
            buffer.writeString(message.wait)
            buffer.writeStaticString(";;;;;;")
            return
        }
        let start = buffer.writerIndex
        let errorText = message.error.map(NeffosError.wireText(of:))
        if writeFast(
            wait: message.wait, namespace: message.namespace, room: message.room, event: message.event.rawValue,
            errorText: errorText, isNoOp: message.isNoOp, body: message.body, into: &buffer)
        {
            return
        }
        // A name holds `;` or `@`: write it again, escaped and checked.
        buffer.moveWriterIndex(to: start)
        let namespace = try wireForm(of: message.namespace)
        let room = try wireForm(of: message.room)
        let event = try wireForm(of: message.event.rawValue)
        buffer.writeString(message.wait)
        buffer.writeInteger(separator)
        buffer.writeString(namespace)
        buffer.writeInteger(separator)
        buffer.writeString(room)
        buffer.writeInteger(separator)
        buffer.writeString(event)
        buffer.writeInteger(separator)
        buffer.writeInteger(message.error == nil ? zero : one)
        buffer.writeInteger(separator)
        buffer.writeInteger(message.isNoOp ? one : zero)
        buffer.writeInteger(separator)
        if let error = message.error {
            buffer.writeString(NeffosError.wireText(of: error))
        } else {
            buffer.writeImmutableBuffer(message.body)
        }
    }

    /// Writes the frame in one reserved region; returns `false` (leaving garbage past the
    /// starting writer index) when a name holds `;` or `@` and needs the escaping path.
    @inline(__always)
    private static func writeFast(
        wait: String, namespace: String, room: String, event: String, errorText: String?,
        isNoOp: Bool, body: ByteBuffer, into buffer: inout ByteBuffer
    ) -> Bool {
        let payloadLength = errorText?.utf8.count ?? body.readableBytes
        let headerLength = wait.utf8.count + namespace.utf8.count + room.utf8.count + event.utf8.count + 10
        var clean = true
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: headerLength + payloadLength) { out in
            var index = 0
            copy(wait, to: out, at: &index)
            out[index] = separator
            index += 1
            clean = copyName(namespace, to: out, at: &index) && clean
            out[index] = separator
            index += 1
            clean = copyName(room, to: out, at: &index) && clean
            out[index] = separator
            index += 1
            clean = copyName(event, to: out, at: &index) && clean
            out[index] = separator
            out[index + 1] = errorText == nil ? zero : one
            out[index + 2] = separator
            out[index + 3] = isNoOp ? one : zero
            out[index + 4] = separator
            index += 5
            return index
        }
        guard clean else { return false }
        if let errorText {
            buffer.writeString(errorText)
        } else {
            buffer.writeImmutableBuffer(body)
        }
        return true
    }

    /// The data reply to `request`: its token, namespace, room and event with `body` (the
    /// same frame as encoding `request.reply(body)`, without building that message).
    public static func encodeReply(to request: Message, body: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(NeffosError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 0)
        if writeFast(
            wait: request.wait, namespace: request.namespace, room: request.room, event: request.event.rawValue,
            errorText: nil, isNoOp: false, body: body, into: &buffer)
        {
            return buffer
        }
        return try encode(request.reply(body))
    }

    @inline(__always)
    private static func copy(_ text: String, to out: UnsafeMutableRawBufferPointer, at index: inout Int) {
        let count = text.utf8.count
        guard count > 0 else { return }
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { source in
            UnsafeMutableRawBufferPointer(rebasing: out[index..<(index + count)]).copyMemory(
                from: UnsafeRawBufferPointer(source))
        }
        if copied == nil {
            for (offset, byte) in text.utf8.enumerated() { out[index + offset] = byte }
        }
        index += count
    }

    /// Copies a name; returns `false` when it holds `;` or `@`.
    @inline(__always)
    private static func copyName(_ name: String, to out: UnsafeMutableRawBufferPointer, at index: inout Int) -> Bool {
        let start = index
        copy(name, to: out, at: &index)
        var clean = true
        for position in start..<index {
            let byte = out[position]
            if byte == separator || byte == escapeLead { clean = false }
        }
        return clean
    }

    /// The empty reply frame `<wait>;;;;;;`.
    public static func emptyReply(to wait: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(wait.utf8.count + 6)
        buffer.writeString(wait)
        buffer.writeStaticString(";;;;;;")
        return buffer
    }

    /// Checks that `name` can travel as a namespace, room or event name.
    ///
    /// - Throws: ``NeffosError/unrepresentableName`` when it cannot.
    public static func validate(name: String) throws(NeffosError) {
        _ = try wireForm(of: name)
    }

    private static func estimatedSize(of message: Message) -> Int {
        message.wait.utf8.count + message.namespace.utf8.count + message.room.utf8.count
            + message.event.rawValue.utf8.count + 10 + message.body.readableBytes
    }

    @inline(__always)
    private static func needsEscapeCheck(_ name: String) -> Bool {
        var found = false
        for byte in name.utf8 where byte == separator || byte == escapeLead {
            found = true
            break
        }
        return found
    }

    /// The escaped form of `name`, checked to decode back to `name`.
    ///
    /// A name holding the escape text (or a prefix of it followed by `;`) would decode to
    /// something else on every neffos peer, so it is refused instead of silently changed.
    static func wireForm(of name: String) throws(NeffosError) -> String {
        guard needsEscapeCheck(name) else { return name }
        let escaped = escape(name)
        guard unescape(escaped) == name else {
            throw NeffosError.unrepresentableName.with(detail: "\"\(name)\"")
        }
        return escaped
    }

    /// Replaces every escape text in `field` with `;`, leftmost first, as neffos peers do.
    static func unescape(_ field: String) -> String {
        guard needsEscapeCheck(field) else { return field }
        return replacing(escapedSeparatorBytes, with: [separator], in: field)
    }

    /// Replaces every `;` in `name` with the escape text.
    static func escape(_ name: String) -> String {
        replacing([separator], with: escapedSeparatorBytes, in: name)
    }

    static let escapedSeparatorBytes = Array(escapedSeparator.utf8)

    /// Replaces the non-overlapping occurrences of `pattern`, leftmost first.
    private static func replacing(_ pattern: [UInt8], with replacement: [UInt8], in text: String) -> String {
        let source = Array(text.utf8)
        var result: [UInt8] = []
        result.reserveCapacity(source.count + replacement.count * 2)
        var index = 0
        while index < source.count {
            if source[index] == pattern[0] && index + pattern.count <= source.count
                && source[index..<(index + pattern.count)].elementsEqual(pattern)
            {
                result.append(contentsOf: replacement)
                index += pattern.count
            } else {
                result.append(source[index])
                index += 1
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    // MARK: Decoding

    /// Decodes one received frame.
    ///
    /// - Parameters:
    ///   - frame: the frame's payload. The message's body is a slice of it (no copy).
    ///   - isBinary: whether it arrived in a binary WebSocket frame.
    ///   - allowNative: whether a frame that is not a valid message frame is taken as a native
    ///     message (event ``EventName/nativeMessage``, the whole frame as body).
    ///   - knownErrors: resolves the text of an error frame to an error value.
    /// - Throws: ``NeffosError/invalidPayload`` for an empty frame, a frame with fewer than six
    ///   `;` (unless `allowNative`), or names that are not valid UTF-8.
    public static func decode(
        _ frame: ByteBuffer,
        isBinary: Bool = false,
        allowNative: Bool = false,
        knownErrors: KnownErrors = .builtIn
    ) throws(NeffosError) -> Message {
        let length = frame.readableBytes
        guard length > 0 else { throw NeffosError.invalidPayload.with(detail: "empty frame") }

        // First pass (trivial values only, no retains): where the six separators are and
        // what each field needs. Then the strings are built once, straight into the message.
        guard let layout = frame.withUnsafeReadableBytes(HeaderLayout.init) else {
            guard allowNative else {
                throw NeffosError.invalidPayload.with(detail: "fewer than seven fields")
            }
            return Message.native(frame, isBinary: isBinary)
        }
        let base = frame.readerIndex
        guard let fields = frame.withUnsafeReadableBytes(layout.fields) else {
            throw NeffosError.invalidPayload.with(detail: "a header field is not valid UTF-8")
        }
        let bodyStart = base + layout.bodyOffset
        let bodyLength = length - layout.bodyOffset
        var error: (any Error)?
        var body = ByteBuffer()
        if layout.isError {
            error = knownErrors.resolve(frame.getString(at: bodyStart, length: bodyLength) ?? "")
        } else if bodyLength > 0 {
            body = frame.getSlice(at: bodyStart, length: bodyLength) ?? ByteBuffer()
        }
        return Message(
            wait: fields.0, namespace: fields.1, room: fields.2, event: EventName(rawValue: fields.3), body: body,
            error: error, isNoOp: layout.isNoOp, isBinary: isBinary)
    }

    /// Where the header fields of a frame are, found in one pass up to the sixth `;`.
    private struct HeaderLayout {
        /// Start and end offset of fields 0 to 3 (wait, namespace, room, event).
        private var starts: (Int, Int, Int, Int) = (0, 0, 0, 0)
        private var ends: (Int, Int, Int, Int) = (0, 0, 0, 0)
        /// Bit i: field i holds `@` (needs unescaping); bit 4+i: field i is not ASCII.
        private var flags: UInt8 = 0
        var isError = false
        var isNoOp = false
        var bodyOffset = 0

        init?(_ bytes: UnsafeRawBufferPointer) {
            var fieldStart = 0
            var index = 0
            let count = bytes.count
            for field in 0..<6 {
                var sawEscapeLead = false
                var nonASCII = false
                while index < count {
                    let byte = bytes[index]
                    if byte == separator { break }
                    sawEscapeLead = sawEscapeLead || byte == escapeLead
                    nonASCII = nonASCII || byte >= 0x80
                    index += 1
                }
                guard index < count else { return nil }
                switch field {
                case 0: (starts.0, ends.0) = (fieldStart, index)
                case 1: (starts.1, ends.1) = (fieldStart, index)
                case 2: (starts.2, ends.2) = (fieldStart, index)
                case 3: (starts.3, ends.3) = (fieldStart, index)
                case 4: isError = index - fieldStart == 1 && bytes[fieldStart] == one
                default: isNoOp = index - fieldStart == 1 && bytes[fieldStart] == one
                }
                if field < 4 {
                    if sawEscapeLead { flags |= 1 << field }
                    if nonASCII { flags |= 1 << (field + 4) }
                }
                index += 1
                fieldStart = index
            }
            bodyOffset = index
        }

        /// The wait token, namespace, room and event, names unescaped; `nil` when a field is
        /// not UTF-8.
        func fields(_ bytes: UnsafeRawBufferPointer) -> (String, String, String, String)? {
            guard let wait = string(bytes, starts.0, ends.0, field: 0),
                let namespace = string(bytes, starts.1, ends.1, field: 1),
                let room = string(bytes, starts.2, ends.2, field: 2),
                let event = string(bytes, starts.3, ends.3, field: 3)
            else { return nil }
            return (wait, namespace, room, event)
        }

        @inline(__always)
        private func string(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, field: Int) -> String? {
            if start == end { return "" }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<end]).assumingMemoryBound(to: UInt8.self)
            let text = String(decoding: slice, as: UTF8.self)
            // ASCII needs no validation; otherwise a repaired string differs from its bytes.
            if flags & (1 << (field + 4)) != 0 && !text.utf8.elementsEqual(slice) { return nil }
            return field > 0 && flags & (1 << field) != 0 ? unescape(text) : text
        }
    }

    // MARK: Handshake frames

    /// The client's first frame, `M`: "I am a neffos client".
    public static let identifyFrame = ByteBuffer(string: "M")

    /// The server's acceptance, `A` followed by the connection's ID.
    public static func acceptFrame(id: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(id.utf8.count + 1)
        buffer.writeStaticString("A")
        buffer.writeString(id)
        return buffer
    }

    /// The server's refusal, `H` followed by the error text.
    public static func refuseFrame(text: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(text.utf8.count + 1)
        buffer.writeStaticString("H")
        buffer.writeString(text)
        return buffer
    }

    /// What a handshake frame says.
    public enum HandshakeFrame: Equatable, Sendable {
        /// `M`: a client identifies itself.
        case identify
        /// `A<id>`: the server accepted the connection and gave it this ID.
        case accepted(id: String)
        /// `H<text>`: the server refused the connection with this text.
        case refused(text: String)
    }

    /// Reads a handshake frame, or returns `nil` when `frame` is not one.
    public static func handshake(_ frame: ByteBuffer) -> HandshakeFrame? {
        guard let first = frame.getInteger(at: frame.readerIndex, as: UInt8.self) else { return nil }
        let rest = frame.getString(at: frame.readerIndex + 1, length: frame.readableBytes - 1) ?? ""
        switch first {
        case UInt8(ascii: "M") where frame.readableBytes == 1: return .identify
        case UInt8(ascii: "A"): return .accepted(id: rest)
        case UInt8(ascii: "H"): return .refused(text: rest)
        default: return nil
        }
    }
}
