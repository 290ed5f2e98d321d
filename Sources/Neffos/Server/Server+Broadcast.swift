import NIOCore

extension Server {
    /// Sends `message` to every connection connected to its namespace; narrowed to a room's
    /// members when ``Message/room`` is set, and to the connections with ID ``Message/to``
    /// when that is set. `except` leaves one connection out (a ``Conn``, ``NSConn``, ``Room``
    /// or ``Exclude``).
    ///
    /// Safe from anywhere, never blocks on a receiver: the frame is encoded once and queued to
    /// each receiver's outbox; a full outbox drops it (counted).
    ///
    /// With an exchange, the message is also published once for the other nodes, which
    /// deliver it to their own connections.
    ///
    /// - Returns: the number of local connections the frame was queued to.
    @discardableResult
    public func broadcast(_ message: Message, except: (any ConnectionIdentifiable)? = nil) -> Int {
        var message = message
        message.wait = ""
        let frame: ByteBuffer
        do {
            frame = try MessageCodec.encode(message)
        } catch {
            logger.debug("broadcast not sent", metadata: ["error": "\(error)"])
            return 0
        }
        let target = BroadcastTarget(of: message, except: except?.connectionID)
        if !configuration.history.rules.isEmpty, let shared = sharedHistory, target.to.isEmpty,
            configuration.history.rule(for: target.room, in: target.namespace) != nil
        {
            return broadcastShared(frame, binary: message.isBinary, to: target, store: shared)
        }
        let local = deliverLocally(frame, binary: message.isBinary, to: target)
        link?.publish(.broadcast, frame: frame, binary: message.isBinary, to: target)
        return local
    }

    /// Queues `frame` to the local receivers of `target`; returns how many. Never waits for a
    /// receiver: a full outbox drops the frame (counted). A room with history keeps it, unless
    /// `keeping` is `false` (the server's own notices, such as presence events).
    func deliverLocally(_ frame: ByteBuffer, binary: Bool, to target: BroadcastTarget) -> Int {
        deliverLocally(frame, binary: binary, to: target, keeping: true)
    }

    func deliverLocally(_ frame: ByteBuffer, binary: Bool, to target: BroadcastTarget, keeping: Bool) -> Int {
        if keeping, !configuration.history.rules.isEmpty, target.to.isEmpty,
            let rule = configuration.history.rule(for: target.room, in: target.namespace)
        {
            if let shared = sharedHistory {
                // From another node, with its chain position.
                guard let (sequence, previous, plain) = Self.parseSharedWireFrame(frame) else {
                    return deliverLocally(frame, binary: binary, to: target, keeping: false)
                }
                deliverShared(SharedHistoryEntry(sequence: sequence, previous: previous, frame: plain, isBinary: binary), to: target, store: shared)
                return 0
            }
            return deliverKept(frame, binary: binary, to: target, rule: rule)
        }
        let (groups, count) = index.withLock { $0.receivers(of: target) }
        guard count > 0 else { return 0 }
        let metrics = self.metrics
        let except = target.except
        @Sendable func deliver(_ group: LoopGroup) {
            var dropped = 0
            for member in group.members.values where member.id != except {
                if !member.transport.write(frame, binary: binary, reliable: false) { dropped += 1 }
            }
            for member in group.members.values where member.id != except { member.transport.flush() }
            if dropped > 0 { metrics.dropped(dropped) }
        }
        if configuration.strictBroadcastOrdering {
            // One global order: every loop receives its share in the order broadcasts took
            // this lock, and never inline (an inline write would overtake queued ones).
            broadcastOrder.withLock { _ in
                for group in groups { group.lane.queue { deliver(group) } }
            }
        } else {
            for group in groups { group.lane.run { deliver(group) } }
        }
        metrics.sent(count, bytes: frame.readableBytes)
        return count
    }
}

// MARK: - Excluding a sender

/// Identifies a connection, to leave it out of a broadcast.
public protocol ConnectionIdentifiable: Sendable {
    /// The ID of the connection to leave out.
    var connectionID: String { get }
}

extension Conn: ConnectionIdentifiable {
    /// The connection's ID.
    public var connectionID: String { id }
}

extension NSConn: ConnectionIdentifiable {
    /// The connection's ID.
    public var connectionID: String { conn.id }
}

extension Room: ConnectionIdentifiable {
    /// The ID of the connection that joined the room.
    public var connectionID: String { nsConn.conn.id }
}

/// Leaves the connection with this ID out of a broadcast, when you have its ID only.
public struct Exclude: ConnectionIdentifiable {
    /// The ID to leave out.
    public let connectionID: String
    /// Leaves out the connection with ID `id`.
    public init(_ id: String) { connectionID = id }
}

extension NSConn {
    /// Broadcasts `message` to every connection of its namespace (or room), this one
    /// included. Server side only; does nothing on a client.
    @discardableResult
    public func broadcast(_ message: Message) -> Int {
        conn.server?.broadcast(message) ?? 0
    }

    /// Broadcasts `message` to every connection of its namespace (or room) but this one.
    /// Server side only; does nothing on a client.
    @discardableResult
    public func broadcastOthers(_ message: Message) -> Int {
        conn.server?.broadcast(message, except: self) ?? 0
    }
}

