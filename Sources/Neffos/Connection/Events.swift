import NIOCore

/// The name of an event. Write your own as string literals; the system events are static
/// members.
///
/// ```swift
/// events.on("chat") { conn, message in ... }
/// events.on(.namespaceConnected) { conn, message in ... }
/// ```
public struct EventName: Hashable, Sendable, RawRepresentable, ExpressibleByStringLiteral,
    CustomStringConvertible
{
    /// The name as it travels on the wire.
    public let rawValue: String

    /// An event name from a string.
    public init(rawValue: String) { self.rawValue = rawValue }

    /// An event name from a string.
    public init(_ name: String) { self.rawValue = name }

    /// An event name from a string literal.
    public init(stringLiteral value: String) { self.rawValue = value }

    /// The name.
    public var description: String { rawValue }

    /// `_OnNamespaceConnect`: a connection asks to enter the namespace. Throw to refuse.
    public static let namespaceConnect = EventName("_OnNamespaceConnect")
    /// `_OnNamespaceConnected`: the connection entered the namespace (local only).
    public static let namespaceConnected = EventName("_OnNamespaceConnected")
    /// `_OnNamespaceDisconnect`: the connection leaves the namespace. On the server, throwing
    /// refuses a client's request; when a connection closes it fires with ``Message/isForced``.
    public static let namespaceDisconnect = EventName("_OnNamespaceDisconnect")
    /// `_OnRoomJoin`: the connection asks to join ``Message/room``. Throw to refuse.
    public static let roomJoin = EventName("_OnRoomJoin")
    /// `_OnRoomJoined`: the connection joined ``Message/room`` (local only).
    public static let roomJoined = EventName("_OnRoomJoined")
    /// `_OnRoomLeave`: the connection asks to leave ``Message/room``. Throw to refuse.
    public static let roomLeave = EventName("_OnRoomLeave")
    /// `_OnRoomLeft`: the connection left ``Message/room`` (local only).
    public static let roomLeft = EventName("_OnRoomLeft")
    /// `_OnAnyEvent`: receives every event that has no handler of its own, system events
    /// included. Throwing from it refuses a connect or a join.
    public static let anyEvent = EventName("_OnAnyEvent")
    /// `_OnNativeMessage`: a raw WebSocket message, in the `""` namespace.
    public static let nativeMessage = EventName("_OnNativeMessage")
}

/// What a handler returns to answer the message it handles.
///
/// Return a reply to answer an ask (or to emit the same event back to the sender); return
/// `nil` to answer nothing; throw to send an error reply.
///
/// ```swift
/// events.answer("ping") { conn, message in
///     "pong:\(message.bodyString)"     // a Reply, from a string
/// }
/// ```
public struct Reply: Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    /// The reply's body.
    public var body: ByteBuffer
    /// Whether the reply travels in a binary frame.
    public var isBinary: Bool

    /// A reply with `body`.
    public init(_ body: ByteBuffer, isBinary: Bool = false) {
        self.body = body
        self.isBinary = isBinary
    }

    /// A reply with a UTF-8 text body.
    public init(_ text: String) { self.init(ByteBuffer(string: text)) }

    /// A reply with a text body, from a literal.
    public init(stringLiteral value: String) { self.init(value) }

    /// A reply with a text body, from an interpolated string.
    public init(stringInterpolation: DefaultStringInterpolation) {
        self.init(String(stringInterpolation: stringInterpolation))
    }

    /// A reply with raw bytes, in a binary frame unless `isBinary` is false.
    public static func bytes(_ bytes: some Sequence<UInt8>, isBinary: Bool = true) -> Reply {
        Reply(ByteBuffer(bytes: bytes), isBinary: isBinary)
    }

    /// A reply whose body is `value` encoded with `coder`: by default, inside a handler, the
    /// connection's configured coder (``BodyCoders/current``).
    public static func encoded<Value: Encodable>(
        _ value: Value, coder: any BodyCoder = BodyCoders.current
    ) throws -> Reply {
        Reply(try coder.encode(value))
    }
}

/// An event handler: a closure that receives the namespace connection and the message, and
/// returns a reply or nothing (`nil`).
///
/// Handlers come in two kinds, picked for you by `Events.on(_:_:)`
/// and `Events.answer(_:_:)` from the closure you write:
/// - a *synchronous* closure runs inline on the connection's event loop, with no task hop:
///   the fastest path. It must not block.
/// - an *asynchronous* closure (one that uses `await`) runs in the connection's handler task.
///
/// Either way, the events of one connection are handled one at a time, in arrival order.
///
/// The same rule applies to `EventHandler { … }` written with a trailing closure: without an
/// `await` in it, Swift picks ``init(sync:)``.
public struct EventHandler: Sendable {
    /// A synchronous handler body.
    public typealias Sync = @Sendable (NSConn, Message) throws -> Reply?
    /// An asynchronous handler body.
    public typealias Async = @Sendable (NSConn, Message) async throws -> Reply?

    enum Body: Sendable {
        case sync(Sync)
        case async(Async)
    }

    let body: Body

    /// A handler from an asynchronous closure.
    public init(_ body: @escaping Async) { self.body = .async(body) }

    /// A handler from a synchronous closure; it runs on the event loop and must not block.
    public init(sync body: @escaping Sync) { self.body = .sync(body) }

    /// Whether the handler runs synchronously on the event loop.
    public var isSynchronous: Bool {
        if case .sync = body { return true }
        return false
    }

    /// Runs the handler.
    @inline(__always)
    func callAsFunction(_ conn: NSConn, _ message: Message) async throws -> Reply? {
        switch body {
        case .sync(let handler): try handler(conn, message)
        case .async(let handler): try await handler(conn, message)
        }
    }
}

/// The event handlers of one namespace, by event name.
///
/// ```swift
/// var chat = Events()
/// chat.on(.namespaceConnected) { conn, _ in
///     conn.conn.logger.info("joined", metadata: ["id": "\(conn.conn.id)"])
/// }
/// chat.on("chat") { conn, message in
///     conn.broadcastOthers(message)
/// }
/// chat.answer("echo") { _, message in Reply(message.body) }
/// ```
///
/// A message whose event has no handler goes to the ``EventName/anyEvent`` handler if there is
/// one, and is otherwise ignored.
public struct Events: Sendable, ExpressibleByDictionaryLiteral {
    var handlers: [String: EventHandler]

    /// No handlers.
    public init() { handlers = [:] }

    /// Handlers from a dictionary literal:
    /// `["ping": EventHandler { _, m in Reply(m.body) }]`.
    public init(dictionaryLiteral elements: (EventName, EventHandler)...) {
        handlers = [:]
        for (name, handler) in elements { handlers[name.rawValue] = handler }
    }

    /// The handler registered for `event`, if any.
    public subscript(event: EventName) -> EventHandler? {
        get { handlers[event.rawValue] }
        set { handlers[event.rawValue] = newValue }
    }

    /// The names of the events that have a handler.
    public var eventNames: [EventName] { handlers.keys.map(EventName.init(rawValue:)) }

    /// The handler that receives `event`: its own, or the any-event handler.
    @inline(__always)
    func handler(for event: EventName) -> EventHandler? {
        handlers[event.rawValue] ?? handlers[EventName.anyEvent.rawValue]
    }

    /// Whether the handlers of all of `events` (each its own or the any-event handler) are
    /// synchronous or absent: then they can run on the event loop with no task. Asked per
    /// connect and per close, with the lists below (static: no array made per call).
    func runInline(_ events: [EventName]) -> Bool {
        events.allSatisfy { handler(for: $0)?.isSynchronous ?? true }
    }

    /// The events a namespace connect fires.
    static let connectEvents: [EventName] = [.namespaceConnect, .namespaceConnected]
    /// The events a close fires in each connected namespace.
    static let closeEvents: [EventName] = [.roomLeave, .roomLeft, .namespaceDisconnect]

    // MARK: Handlers that answer nothing

    /// Registers a handler for `event`. A closure without `await` is synchronous: it runs
    /// inline on the event loop and must not block.
    ///
    /// Throwing sends the error back to the sender (an error reply). To answer with data, use
    /// `answer(_:_:)` instead.
    public mutating func on(
        _ event: EventName, _ handler: @escaping @Sendable (NSConn, Message) throws -> Void
    ) {
        handlers[event.rawValue] = EventHandler(sync: { conn, message in
            try handler(conn, message)
            return nil
        })
    }

    /// Registers an asynchronous handler for `event` (a closure that uses `await`); it runs in
    /// the connection's handler task.
    public mutating func on(
        _ event: EventName, _ handler: @escaping @Sendable (NSConn, Message) async throws -> Void
    ) {
        handlers[event.rawValue] = EventHandler({ conn, message in
            try await handler(conn, message)
            return nil
        })
    }

    /// Registers a synchronous handler that receives the body decoded as `Body` with the
    /// connection's ``BodyCoder``. A body that does not decode is answered with an
    /// `invalid payload` error and the handler is not called.
    public mutating func on<Body: Decodable & Sendable>(
        _ event: EventName, as type: Body.Type,
        _ handler: @escaping @Sendable (NSConn, Body) throws -> Void
    ) {
        handlers[event.rawValue] = EventHandler(sync: { conn, message in
            try handler(conn, try message.decode(Body.self, using: conn.conn.bodyCoder))
            return nil
        })
    }

    /// Registers an asynchronous handler that receives the decoded body.
    public mutating func on<Body: Decodable & Sendable>(
        _ event: EventName, as type: Body.Type,
        _ handler: @escaping @Sendable (NSConn, Body) async throws -> Void
    ) {
        handlers[event.rawValue] = EventHandler({ conn, message in
            try await handler(conn, try message.decode(Body.self, using: conn.conn.bodyCoder))
            return nil
        })
    }

    // MARK: Handlers that answer

    /// Registers a handler whose result answers the message: an ask receives the ``Reply`` as
    /// its reply (same token, namespace, room and event); a plain emit gets it emitted back.
    /// Return `nil` to answer nothing. A closure without `await` runs inline on the event loop.
    ///
    /// ```swift
    /// events.answer("ping") { _, message in "pong:\(message.bodyString)" }
    /// ```
    public mutating func answer(
        _ event: EventName, _ handler: @escaping @Sendable (NSConn, Message) throws -> Reply?
    ) {
        handlers[event.rawValue] = EventHandler(sync: handler)
    }

    /// Registers an asynchronous handler whose result answers the message.
    public mutating func answer(
        _ event: EventName, _ handler: @escaping @Sendable (NSConn, Message) async throws -> Reply?
    ) {
        handlers[event.rawValue] = EventHandler(handler)
    }

    /// Registers a synchronous handler that receives the decoded body and answers.
    public mutating func answer<Body: Decodable & Sendable>(
        _ event: EventName, as type: Body.Type,
        _ handler: @escaping @Sendable (NSConn, Body) throws -> Reply?
    ) {
        handlers[event.rawValue] = EventHandler(sync: { conn, message in
            try handler(conn, try message.decode(Body.self, using: conn.conn.bodyCoder))
        })
    }

    /// Registers an asynchronous handler that receives the decoded body and answers.
    public mutating func answer<Body: Decodable & Sendable>(
        _ event: EventName, as type: Body.Type,
        _ handler: @escaping @Sendable (NSConn, Body) async throws -> Reply?
    ) {
        handlers[event.rawValue] = EventHandler({ conn, message in
            try await handler(conn, try message.decode(Body.self, using: conn.conn.bodyCoder))
        })
    }
}

/// The namespaces a server or client declares, each with its ``Events``.
///
/// ```swift
/// let namespaces: Namespaces = [
///     "default": chatEvents,
///     "admin": adminEvents,
/// ]
/// ```
///
/// A connection may enter only declared namespaces; others are refused with `bad namespace`.
/// Declaring only the `""` namespace with only an ``EventName/nativeMessage`` handler turns on
/// native-only mode: no neffos handshake, every WebSocket message goes to that handler.
public struct Namespaces: Sendable, ExpressibleByDictionaryLiteral {
    var table: [String: Events]

    /// No namespaces.
    public init() { table = [:] }

    /// Namespaces from a dictionary literal.
    public init(dictionaryLiteral elements: (String, Events)...) {
        table = [:]
        for (name, events) in elements { table[name] = events }
    }

    /// Namespaces from a dictionary.
    public init(_ namespaces: [String: Events]) { table = namespaces }

    /// A single namespace, `""`, with `events` (as neffos's `Events` used alone).
    public init(_ events: Events) { table = ["": events] }

    /// The events of `namespace`, if it is declared.
    public subscript(namespace: String) -> Events? {
        get { table[namespace] }
        set { table[namespace] = newValue }
    }

    /// The declared namespace names.
    public var names: [String] { Array(table.keys) }

    /// Whether native WebSocket messages are accepted: the `""` namespace has a native-message
    /// handler.
    public var acceptsNativeMessages: Bool {
        table[""]?.handlers[EventName.nativeMessage.rawValue] != nil
    }

    /// Whether connections skip the neffos handshake and receive only native messages.
    public var isNativeOnly: Bool {
        table.count == 1 && table[""]?.handlers.count == 1 && acceptsNativeMessages
    }

    /// Checks every namespace and event name can travel on the wire.
    ///
    /// - Throws: ``NeffosError/unrepresentableName``.
    public func validateNames() throws(NeffosError) {
        for (name, events) in table {
            try MessageCodec.validate(name: name)
            for event in events.handlers.keys { try MessageCodec.validate(name: event) }
        }
    }
}
