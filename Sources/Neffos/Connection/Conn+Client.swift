import Logging
import NIOCore

/// The client side of a connection: attaching a (new) transport, and restoring namespaces
/// and rooms after a reconnection onto the same ``NSConn`` values.
extension Conn {
    /// Whether a transport is attached.
    var hasTransport: Bool { machine.withLock { $0.transport != nil } }

    /// On the transport's event loop: a freshly upgraded transport for this client. Sends `M`
    /// and waits for `A<id>` (or `H<error>`) within `handshakeTimeout`.
    package func attachClientTransport(_ transport: any ConnTransport, handshakeTimeout: Duration) {
        transport.eventLoop.preconditionInEventLoop()
        let timer = transport.eventLoop.scheduleTask(in: handshakeTimeout.timeAmount) {
            self.clientHandshakeTimedOut(transport, after: handshakeTimeout)
        }
        guard machine.withLock({ $0.attachClient(transport, timer: timer) }) else {
            timer.cancel()
            transport.close(code: .normal, reason: "")
            return
        }
        _ = transport.write(MessageCodec.identifyFrame, binary: false, reliable: true)
        transport.flush()
    }

    private func clientHandshakeTimedOut(_ transport: any ConnTransport, after timeout: Duration) {
        let error = NeffosError.handshakeTimeout.with(detail: "no A<id> within \(timeout)")
        // The error stays with the connection: a dial that starts waiting only now gets it too
        // (a loaded machine may run this timer before the dialling task waits).
        guard let (waiters, _) = machine.withLock({ $0.clientHandshakeFailed(error, on: transport, final: false) }) else { return }
        for waiter in waiters { waiter.resume(throwing: error) }
        transport.close(code: .policyViolation, reason: "handshake timeout")
    }

    /// Ends a client connection that has no transport (reconnection gave up or was stopped):
    /// fails what waits and fires the local close events.
    package func finishWithoutTransport(_ reason: CloseReason) {
        guard let waiters = machine.withLock({ $0.finishWithoutTransport(reason) }) else { return }
        waiters.fail(NeffosError.writeClosed.with(detail: "connection closed (\(reason))"))
        enqueueClose(reason)
    }

    /// Takes the namespaces and rooms the connection had, to restore them after reconnecting.
    func takeForRestore() -> [(NSConn, rooms: Set<String>)] {
        machine.withLock { $0.takeForRestore() }
    }

    /// Asks the server to connect `ns`'s namespace again, and registers the same `ns`.
    func reconnect(_ ns: NSConn) async throws {
        var request = Message(namespace: ns.namespace, event: .namespaceConnect)
        request.isLocal = true
        _ = try await ask(request, timeout: nil, effect: .addNamespace(ns))
        await fireLocal(.namespaceConnected, on: ns, request)
    }

    /// Asks the server to join `room` again for `ns`, recovering from the last position
    /// received there (a room with history); returns how that went, or `nil` when the room
    /// has no position (no history, or the server does not speak the extension).
    func rejoin(_ room: String, in ns: NSConn) async throws -> RoomRecovery? {
        var request = Message(namespace: ns.namespace, room: room, event: .roomJoin)
        request.isLocal = true
        if let position = machine.withLock({ $0.positions[RecoveryWire.RoomKey(ns.namespace, room)] }) {
            request.body = RecoveryWire.recoveryBody(after: position)
        }
        let answer = try await ask(request, timeout: nil, effect: .addRoom(room, namespace: ns.namespace))
        let recovery = noteJoinReply(answer.reply, room: room, in: ns.namespace)
        request.body = ByteBuffer()
        await fireLocal(.roomJoined, on: ns, request)
        return recovery
    }

    /// Client side: the server answered a join of `room`. With the history extension, the
    /// reply gives the room's position at the join (kept when no kept message follows it) and
    /// how a recovery went.
    @discardableResult
    func noteJoinReply(_ reply: Message, room: String, in namespace: String) -> RoomRecovery? {
        guard let (status, count, latest) = RecoveryWire.parseJoinReply(reply.body) else { return nil }
        if count == 0 {
            let key = RecoveryWire.RoomKey(namespace, room)
            machine.withLock { state in
                // A live message may have arrived already (it is newer).
                if let current = state.positions[key], current.epoch == latest.epoch, current.offset >= latest.offset { return }
                state.positions[key] = latest
            }
        }
        guard status != .notAsked else { return nil }
        return RoomRecovery(namespace: namespace, room: room, isComplete: status == .recovered, messages: count)
    }

    /// Client side: the last position received in `room` of `namespace`.
    func position(ofRoom room: String, in namespace: String) -> HistoryPosition? {
        machine.withLock { $0.positions[RecoveryWire.RoomKey(namespace, room)] }
    }

    /// Client side: `room` was left on purpose; nothing to recover there.
    func forgetPosition(ofRoom room: String, in namespace: String) {
        machine.withLock { $0.positions[RecoveryWire.RoomKey(namespace, room)] = nil }
    }

    /// The connection was lost during a restore: `ns` and `rooms` are restored after the next
    /// reconnection (the server did not refuse them).
    func restoreLater(_ ns: NSConn, rooms: Set<String>) {
        machine.withLock { $0.restoreLater(ns, rooms: rooms) }
    }

    /// A namespace the server would not restore: its rooms and the namespace are left, forced.
    func fireRestoreFailure(_ ns: NSConn, rooms: Set<String>) async {
        _ = machine.withLock { $0.removeNamespace(ns.namespace) }
        notifyOwner()
        await fireForcedLeaves(ns, rooms: rooms, isLocal: true)
        var message = Message(namespace: ns.namespace, event: .namespaceDisconnect)
        message.isForced = true
        message.isLocal = true
        await fireLocal(.namespaceDisconnect, on: ns, message)
    }
}
