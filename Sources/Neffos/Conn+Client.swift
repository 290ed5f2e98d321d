import Logging
import NIOCore

/// The client side of a connection: attaching a (new) transport, and restoring namespaces
/// and rooms after a reconnection onto the same ``NSConn`` values.
extension Conn {
    /// Whether a transport is attached.
    var hasTransport: Bool { state.withLock { $0.transport != nil } }

    /// On the transport's event loop: a freshly upgraded transport for this client. Sends `M`
    /// and waits for `A<id>` (or `H<error>`) within `handshakeTimeout`.
    package func attachClientTransport(_ transport: any ConnTransport, handshakeTimeout: Duration) {
        transport.eventLoop.preconditionInEventLoop()
        let timer = transport.eventLoop.scheduleTask(in: handshakeTimeout.timeAmount) {
            self.clientHandshakeTimedOut(transport, after: handshakeTimeout)
        }
        let accepted = state.withLock { s -> Bool in
            guard !s.closeRequested, !s.phase.isClosed else { return false }
            var handshake = ConnState.Handshake()
            handshake.timer = timer
            s.phase = .handshaking(handshake)
            s.transport = transport
            return true
        }
        guard accepted else {
            timer.cancel()
            transport.close(code: .normal, reason: "")
            return
        }
        _ = transport.write(MessageCodec.identifyFrame, binary: false)
        transport.flush()
    }

    private func clientHandshakeTimedOut(_ transport: any ConnTransport, after timeout: Duration) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>]? in
            guard case .handshaking = s.phase, s.transport === transport else { return nil }
            defer { s.openWaiters = [] }
            return s.openWaiters
        }
        guard let waiters else { return }
        let error = NeffosError.handshakeTimeout.with(detail: "no A<id> within \(timeout)")
        for waiter in waiters { waiter.resume(throwing: error) }
        transport.close(code: .policyViolation, reason: "handshake timeout")
    }

    /// Ends a client connection that has no transport (reconnection gave up or was stopped):
    /// fails what waits and fires the local close events.
    package func finishWithoutTransport(_ reason: CloseReason) {
        let outcome = state.withLock { s -> ([ConnState.PendingAsk], [CheckedContinuation<Void, any Error>], [CheckedContinuation<NSConn, any Error>])? in
            guard !s.phase.isClosed, s.transport == nil else { return nil }
            s.phase = .closed(reason)
            defer {
                s.pending = [:]
                s.openWaiters = []
                s.namespaceWaiters = [:]
            }
            return (Array(s.pending.values), s.openWaiters, s.namespaceWaiters.values.flatMap { $0.values })
        }
        guard let (pending, openWaiters, namespaceWaiters) = outcome else { return }
        let error = NeffosError.writeClosed.with(detail: "connection closed (\(reason))")
        for ask in pending {
            ask.timer?.cancel()
            ask.continuation.resume(throwing: error)
        }
        for waiter in openWaiters { waiter.resume(throwing: error) }
        for waiter in namespaceWaiters { waiter.resume(throwing: error) }
        enqueueClose(reason)
    }

    /// Takes the namespaces and rooms the connection had, to restore them after reconnecting.
    func takeForRestore() -> [(NSConn, Set<String>)] {
        state.withLock { s in
            let entries = s.namespaces.keys.sorted().map { (s.namespaces[$0]!.nsConn, s.namespaces[$0]!.rooms) }
            s.namespaces = [:]
            return entries
        }
    }

    /// Asks the server to connect `ns`'s namespace again, and registers the same `ns`.
    func reconnect(_ ns: NSConn) async throws {
        var request = Message(namespace: ns.namespace, event: EventName.namespaceConnect.rawValue)
        request.isLocal = true
        _ = try await ask(request, timeout: nil) { s, conn in
            guard s.namespaces[ns.namespace] == nil else { return }
            for waiter in s.addNamespace(ns, conn: conn) { waiter.resume(returning: ns) }
        }
        await fireLocal(.namespaceConnected, on: ns, request)
    }

    /// Asks the server to join `room` again for `ns`.
    func rejoin(_ room: String, in ns: NSConn) async throws {
        var request = Message(namespace: ns.namespace, room: room, event: EventName.roomJoin.rawValue)
        request.isLocal = true
        let namespace = ns.namespace
        _ = try await ask(request, timeout: nil) { s, conn in
            s.addRoom(room, in: namespace, conn: conn)
        }
        await fireLocal(.roomJoined, on: ns, request)
    }

    /// A namespace the server would not restore: its rooms and the namespace are left, forced.
    func fireRestoreFailure(_ ns: NSConn, rooms: Set<String>) async {
        _ = state.withLock { $0.removeNamespace(ns.namespace, conn: self) }
        await fireForcedLeaves(ns, rooms: rooms, isLocal: true)
        var message = Message(namespace: ns.namespace, event: EventName.namespaceDisconnect.rawValue)
        message.isForced = true
        message.isLocal = true
        await fireLocal(.namespaceDisconnect, on: ns, message)
    }
}
