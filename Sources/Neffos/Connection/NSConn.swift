import NIOCore

/// A connection's presence in one namespace: what event handlers receive.
///
/// It emits and asks within its namespace, joins and leaves rooms, and on the server
/// broadcasts to other connections.
///
/// ```swift
/// events.on("chat") { ns, message in
///     try ns.emit("ack", "got it")
///     ns.broadcastOthers(message)
/// }
/// ```
public final class NSConn: Sendable {
    /// The connection.
    public let conn: Conn
    /// The namespace's name.
    public let namespace: String
    /// The namespace's handlers.
    let events: Events

    init(conn: Conn, namespace: String, events: Events) {
        self.conn = conn
        self.namespace = namespace
        self.events = events
    }

    /// The server, on the server side.
    public var server: Server? { conn.server }

    // MARK: Emitting

    /// Emits `event` with `body` to the remote side of this namespace.
    ///
    /// - Throws: ``NeffosError/writeClosed`` when the connection is closed,
    ///   ``NeffosError/badNamespace`` when the namespace was disconnected.
    public func emit(_ event: EventName, _ body: ByteBuffer = ByteBuffer()) throws(NeffosError) {
        try conn.write(Message(namespace: namespace, event: event, body: body))
    }

    /// Emits `event` with a UTF-8 text body.
    public func emit(_ event: EventName, _ text: String) throws(NeffosError) {
        try emit(event, ByteBuffer(string: text))
    }

    /// Emits `event` with a body in a binary frame.
    public func emitBinary(_ event: EventName, _ body: some Sequence<UInt8>) throws(NeffosError) {
        try conn.write(Message(namespace: namespace, event: event, bytes: body, isBinary: true))
    }

    /// Emits `event` with `value` encoded by the connection's ``BodyCoder``.
    public func emit<Value: Encodable>(_ event: EventName, encoding value: Value) throws {
        try conn.write(Message(namespace: namespace, event: event, body: try conn.bodyCoder.encode(value)))
    }

    /// Asks the remote side with `event` and `body`, and waits for the reply.
    ///
    /// - Parameters:
    ///   - event: the event to ask.
    ///   - body: the ask's body.
    ///   - timeout: the deadline; the configuration's ask timeout when `nil`.
    /// - Throws: see ``Conn/ask(_:timeout:)``.
    public func ask(_ event: EventName, _ body: ByteBuffer = ByteBuffer(), timeout: Duration? = nil) async throws -> Message {
        try await conn.ask(Message(namespace: namespace, event: event, body: body), timeout: timeout)
    }

    /// Asks with a UTF-8 text body.
    public func ask(_ event: EventName, _ text: String, timeout: Duration? = nil) async throws -> Message {
        try await ask(event, ByteBuffer(string: text), timeout: timeout)
    }

    /// Asks with `value` encoded by the connection's coder and decodes the reply as `Answer`.
    public func ask<Question: Encodable, Answer: Decodable>(
        _ event: EventName, encoding value: Question, as type: Answer.Type = Answer.self,
        timeout: Duration? = nil
    ) async throws -> Answer {
        let reply = try await ask(event, try conn.bodyCoder.encode(value), timeout: timeout)
        return try reply.decode(type, using: conn.bodyCoder)
    }

    // MARK: Rooms

    /// Whether this connection has joined `room` in this namespace.
    public func isJoined(_ room: String) -> Bool {
        conn.machine.withLock { $0.isJoined(room, in: namespace) }
    }

    /// The joined room named `name`, if joined.
    public func room(_ name: String) -> Room? {
        isJoined(name) ? Room(nsConn: self, name: name) : nil
    }

    /// The rooms this connection has joined in this namespace.
    public var rooms: [Room] {
        let names = conn.machine.withLock { $0.namespaces[namespace]?.rooms ?? [] }
        return names.sorted().map { Room(nsConn: self, name: $0) }
    }

    /// Joins `room` and returns it.
    ///
    /// The local ``EventName/roomJoin`` handler runs first (throwing cancels), then the remote
    /// side is asked (its join handler may refuse); once accepted, ``EventName/roomJoined``
    /// fires locally. Joining a room already joined returns it at once. On the server this
    /// forces the client into the room.
    @discardableResult
    public func joinRoom(_ room: String, timeout: Duration? = nil) async throws -> Room {
        if isJoined(room) { return Room(nsConn: self, name: room) }
        try MessageCodec.validate(name: room)
        var request = Message(namespace: namespace, room: room, event: .roomJoin)
        request.isLocal = true
        _ = try await conn.fire(.roomJoin, on: self, request)
        let answer = try await conn.ask(request, timeout: timeout, effect: .addRoom(room, namespace: namespace))
        if conn.isClient { conn.noteJoinReply(answer.reply, room: room, in: namespace) }
        guard isJoined(room) else {
            throw NeffosError.badNamespace.with(detail: "\"\(namespace)\" was disconnected while joining \"\(room)\"")
        }
        await conn.fireLocal(.roomJoined, on: self, request)
        return Room(nsConn: self, name: room)
    }

    /// Leaves `room`.
    ///
    /// The local ``EventName/roomLeave`` handler runs first (throwing cancels), then the remote
    /// side is asked; once accepted, ``EventName/roomLeft`` fires locally.
    ///
    /// - Throws: ``NeffosError/badRoom`` when the room is not joined.
    public func leaveRoom(_ room: String, timeout: Duration? = nil) async throws {
        guard isJoined(room) else { throw NeffosError.badRoom.with(detail: "not joined to \"\(room)\"") }
        var request = Message(namespace: namespace, room: room, event: .roomLeave)
        request.isLocal = true
        _ = try await conn.fire(.roomLeave, on: self, request)
        _ = try await conn.ask(request, timeout: timeout, effect: .removeRoom(room, namespace: namespace))
        if conn.isClient { conn.forgetPosition(ofRoom: room, in: namespace) }
        await conn.fireLocal(.roomLeft, on: self, request)
    }

    /// Leaves every joined room of this namespace.
    public func leaveAll(timeout: Duration? = nil) async throws {
        for room in rooms where isJoined(room.name) {
            try await leaveRoom(room.name, timeout: timeout)
        }
    }

    // MARK: Disconnecting

    /// Disconnects from this namespace: asks the remote side, then leaves every room (their
    /// leave events fire, marked forced) and fires ``EventName/namespaceDisconnect`` locally.
    public func disconnect(timeout: Duration? = nil) async throws {
        guard conn.namespace(namespace) === self else {
            throw NeffosError.badNamespace.with(detail: "not connected to \"\(namespace)\"")
        }
        var request = Message(namespace: namespace, event: .namespaceDisconnect)
        request.isLocal = true
        let answer = try await conn.ask(request, timeout: timeout, effect: .removeNamespace(namespace))
        await conn.fireForcedLeaves(self, rooms: answer.removedRooms, isLocal: true)
        await conn.fireLocal(.namespaceDisconnect, on: self, request)
    }
}

extension Conn {
    /// Whether this connection is one that a broadcast (or a server ask) to `target` reaches:
    /// connected to its namespace, joined to its room, bearing its ID, not excluded.
    func isReceiver(of target: BroadcastTarget) -> Bool {
        if !target.to.isEmpty && target.to != id { return false }
        if let except = target.except, except == id { return false }
        return machine.withLock { machine in
            guard machine.namespace(target.namespace) != nil else { return false }
            return target.room.isEmpty || machine.isJoined(target.room, in: target.namespace)
        }
    }
}

extension NSConn: CustomStringConvertible {
    /// The connection's ID and the namespace.
    public var description: String { "\(conn.id)@\(namespace)" }
}

/// A room joined by a namespace connection.
///
/// Messages emitted to a room go to the remote side tagged with the room; on the server,
/// ``Server/broadcast(_:except:)`` with a room reaches every member.
public struct Room: Sendable, Hashable, CustomStringConvertible {
    /// The namespace connection that joined the room.
    public let nsConn: NSConn
    /// The room's name.
    public let name: String

    /// Emits `event` with `body` to the remote side, tagged with this room.
    ///
    /// - Throws: ``NeffosError/badRoom`` when the room was left.
    public func emit(_ event: EventName, _ body: ByteBuffer = ByteBuffer()) throws(NeffosError) {
        try nsConn.conn.write(Message(namespace: nsConn.namespace, room: name, event: event, body: body))
    }

    /// Emits `event` with a UTF-8 text body.
    public func emit(_ event: EventName, _ text: String) throws(NeffosError) {
        try emit(event, ByteBuffer(string: text))
    }

    /// Emits `event` with `value` encoded by the connection's coder.
    public func emit<Value: Encodable>(_ event: EventName, encoding value: Value) throws {
        try emit(event, try nsConn.conn.bodyCoder.encode(value))
    }

    /// Leaves the room (see ``NSConn/leaveRoom(_:timeout:)``).
    public func leave(timeout: Duration? = nil) async throws {
        try await nsConn.leaveRoom(name, timeout: timeout)
    }

    /// Rooms are equal when they are the same room of the same namespace connection.
    public static func == (lhs: Room, rhs: Room) -> Bool {
        lhs.nsConn === rhs.nsConn && lhs.name == rhs.name
    }

    /// Hashes the namespace connection's identity and the name.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(nsConn))
        hasher.combine(name)
    }

    /// The room's name and its connection.
    public var description: String { "\(name) (\(nsConn))" }
}
