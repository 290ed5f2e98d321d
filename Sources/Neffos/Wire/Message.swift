import NIOCore

/// One neffos message: what travels between a client and a server, and what event handlers
/// receive.
///
/// On the wire a message is one WebSocket frame of seven `;`-separated fields
/// (`wait;namespace;room;event;isError;isNoOp;body`); see ``MessageCodec``. The *local* fields
/// (``isForced``, ``isLocal``, ``to``, ``isNative`` when sending) never travel: they describe
/// how the message was produced or where a broadcast should go.
///
/// ```swift
/// let hello = Message(namespace: "default", event: "chat", body: "hello")
/// ```
public struct Message: Sendable {
    /// The wait token of an ask and of its reply; empty for a plain emit.
    ///
    /// The library sets it, and only the library can: asks get a fresh token (client tokens
    /// start with `$`, server tokens are plain digits) and replies echo the ask's token.
    public package(set) var wait: String
    /// The namespace the message belongs to (`""` is a valid namespace).
    public var namespace: String
    /// The room inside ``namespace``, or `""` for the whole namespace.
    public var room: String
    /// The event name; system events start with `_On` (see ``EventName``).
    public var event: EventName
    /// The payload. Decoding slices it out of the received frame without copying.
    public var body: ByteBuffer
    /// The error carried by the message, if it is an error frame (`isError=1`).
    ///
    /// On receipt the error text is resolved through ``KnownErrors``: `bad namespace` becomes
    /// ``NeffosError/badNamespace``, an error your application registered becomes that
    /// value, and any other text becomes a ``RemoteError``. On sending, the error's text (see
    /// ``NeffosError/wireText(of:)``) is written in place of the body.
    public var error: (any Error)? {
        get { errorBox?.error }
        set { errorBox = newValue.map(ErrorBox.init) }
    }
    /// The error, boxed: keeps `Message` a loadable type (an existential field would make
    /// every copy go through value witnesses, which showed in the decode profile).
    private var errorBox: ErrorBox?
    /// The reserved no-op flag. A request with `isNoOp` set is not answered.
    public var isNoOp: Bool
    /// Whether the message travels (or travelled) in a binary WebSocket frame.
    public var isBinary: Bool
    /// Whether this is a native WebSocket message: on sending only ``body`` is written; on
    /// receipt the whole frame is the body and the event is ``EventName/nativeMessage``.
    public var isNative: Bool
    /// Local flag: set on the room-leave and namespace-disconnect events that the library fires
    /// by itself when a connection closes.
    public var isForced: Bool
    /// Local flag: set on events fired on this side for an action this side initiated
    /// (for example `_OnNamespaceConnect` fired before asking the remote side).
    public var isLocal: Bool
    /// Local flag for broadcasts: when not empty, only connections with this ID receive the
    /// message.
    public var to: String

    /// Creates a message with a body given as bytes.
    public init(
        namespace: String = "",
        room: String = "",
        event: EventName,
        body: ByteBuffer = ByteBuffer(),
        isBinary: Bool = false
    ) {
        self.wait = ""
        self.namespace = namespace
        self.room = room
        self.event = event
        self.body = body
        self.errorBox = nil
        self.isNoOp = false
        self.isBinary = isBinary
        self.isNative = false
        self.isForced = false
        self.isLocal = false
        self.to = ""
    }

    /// Creates a received message from its wire fields, in one go (the decoder's path).
    @inline(__always)
    init(
        wait: String, namespace: String, room: String, event: EventName, body: ByteBuffer,
        error: (any Error)?, isNoOp: Bool, isBinary: Bool
    ) {
        self.wait = wait
        self.namespace = namespace
        self.room = room
        self.event = event
        self.body = body
        self.errorBox = error.map(ErrorBox.init)
        self.isNoOp = isNoOp
        self.isBinary = isBinary
        self.isNative = false
        self.isForced = false
        self.isLocal = false
        self.to = ""
    }

    /// Creates a message with a UTF-8 text body.
    public init(namespace: String = "", room: String = "", event: EventName, body: String) {
        self.init(namespace: namespace, room: room, event: event, body: ByteBuffer(string: body))
    }

    /// Creates a message with a body given as a byte sequence.
    public init(
        namespace: String = "",
        room: String = "",
        event: EventName,
        bytes: some Sequence<UInt8>,
        isBinary: Bool = false
    ) {
        self.init(
            namespace: namespace, room: room, event: event, body: ByteBuffer(bytes: bytes),
            isBinary: isBinary)
    }

    /// Creates a message whose body is `value` encoded by `coder`: by default, inside a
    /// handler, the connection's configured coder (``BodyCoders/current``).
    public init<Value: Encodable>(
        namespace: String = "",
        room: String = "",
        event: EventName,
        encoding value: Value,
        coder: any BodyCoder = BodyCoders.current
    ) throws {
        self.init(namespace: namespace, room: room, event: event, body: try coder.encode(value))
    }

    /// Creates a native message: only `body` is written to the WebSocket.
    public static func native(_ body: ByteBuffer, isBinary: Bool = false) -> Message {
        var message = Message(event: .nativeMessage, body: body, isBinary: isBinary)
        message.isNative = true
        return message
    }

    /// The empty reply that acknowledges a request carrying `wait` (`<wait>;;;;;;`).
    public static func emptyReply(to wait: String) -> Message {
        var message = Message(event: "")
        message.wait = wait
        return message
    }

    /// Whether this message is an error frame.
    public var isError: Bool { errorBox != nil }

    /// Whether this message is an empty reply (`<wait>;;;;;;`): a token and nothing else.
    public var isEmptyReply: Bool {
        namespace.isEmpty && room.isEmpty && event.rawValue.isEmpty && body.readableBytes == 0
            && errorBox == nil && !isNoOp && !isNative
    }

    /// The body read as UTF-8 text (invalid sequences are replaced by U+FFFD).
    public var bodyString: String { String(buffer: body) }

    /// The body as an array of bytes.
    public var bodyBytes: [UInt8] { Array(body.readableBytesView) }

    /// Decodes the body into `type` with `coder`: by default, inside a handler, the
    /// connection's configured coder (``BodyCoders/current``).
    ///
    /// - Throws: ``NeffosError/invalidPayload`` when the body does not decode; the underlying
    ///   decoding error is kept as its ``NeffosError/underlying``.
    public func decode<Value: Decodable>(
        _ type: Value.Type = Value.self, using coder: any BodyCoder = BodyCoders.current
    ) throws(NeffosError) -> Value {
        do {
            return try coder.decode(type, from: body)
        } catch {
            throw NeffosError.invalidPayload.with(underlying: error)
        }
    }

    /// A data reply to this message: the same namespace, room, event and token with a new body.
    public func reply(_ body: ByteBuffer, isBinary: Bool = false) -> Message {
        var message = Message(
            namespace: namespace, room: room, event: event, body: body, isBinary: isBinary)
        message.wait = wait
        return message
    }

    /// An error reply to this message: the same namespace, room, event and token, marked as an
    /// error with `error`'s text.
    public func replying(error: any Error) -> Message {
        var message = Message(namespace: namespace, room: room, event: event)
        message.wait = wait
        message.error = error
        return message
    }
}

extension Message: Equatable {
    /// Two messages are equal when every wire field is equal, errors compared by their wire
    /// text, along with the local flags.
    public static func == (lhs: Message, rhs: Message) -> Bool {
        lhs.wait == rhs.wait && lhs.namespace == rhs.namespace && lhs.room == rhs.room
            && lhs.event == rhs.event && lhs.body == rhs.body && lhs.isNoOp == rhs.isNoOp
            && lhs.isBinary == rhs.isBinary && lhs.isNative == rhs.isNative
            && lhs.isForced == rhs.isForced && lhs.isLocal == rhs.isLocal && lhs.to == rhs.to
            && lhs.error.map(NeffosError.wireText(of:)) == rhs.error.map(NeffosError.wireText(of:))
    }
}

extension Message: CustomStringConvertible {
    /// A short, log-safe summary: the routing fields and the body size, not the body.
    public var description: String {
        var text = "Message(ns: \"\(namespace)\", event: \"\(event)\""
        if !room.isEmpty { text += ", room: \"\(room)\"" }
        if !wait.isEmpty { text += ", wait: \(wait)" }
        if let error { text += ", error: \"\(NeffosError.wireText(of: error))\"" }
        text += ", body: \(body.readableBytes) bytes)"
        return text
    }
}

/// Holds a message's error.
final class ErrorBox: Sendable {
    let error: any Error
    init(_ error: any Error) { self.error = error }
}
