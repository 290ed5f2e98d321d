/// Namespaces and rooms: what the connection is a member of, and the owner events each
/// change queues.
extension ConnStateMachine {
    /// Registers a connected namespace; returns the tasks waiting for it (to resume with `ns`),
    /// or `nil` when the connection is closed or already connected to that namespace.
    mutating func addNamespace(_ ns: NSConn) -> [CheckedContinuation<NSConn, any Error>]? {
        guard !phase.isClosed, namespaces[ns.namespace] == nil else { return nil }
        namespaces[ns.namespace] = NamespaceEntry(nsConn: ns)
        if let transport { ownerEvents.append(.connected(ns, transport)) }
        return namespaceWaiters.removeValue(forKey: ns.namespace).map { Array($0.values) } ?? []
    }

    /// Removes namespace `name` and the rooms joined in it; returns them, or `nil` when it was
    /// not connected.
    mutating func removeNamespace(_ name: String) -> (NSConn, rooms: Set<String>)? {
        guard let entry = namespaces.removeValue(forKey: name) else { return nil }
        for room in entry.rooms.sorted() { ownerEvents.append(.left(room, entry.nsConn)) }
        ownerEvents.append(.disconnected(entry.nsConn))
        return (entry.nsConn, entry.rooms.asSet)
    }

    /// Removes every namespace (the connection closed), in name order.
    mutating func removeAllNamespaces() -> [(NSConn, rooms: Set<String>)] {
        // Most connections have one namespace: no sorted copy of the names for it.
        if namespaces.count <= 1 {
            var all = namespaces.makeIterator()
            guard let name = all.next()?.key else { return [] }
            return removeNamespace(name).map { [$0] } ?? []
        }
        return namespaces.keys.sorted().compactMap { removeNamespace($0) }
    }

    /// Whether the peer may join `room` in namespace `name` within `bounds`; the error to
    /// answer when it may not.
    func checkJoin(_ room: String, in name: String, bounds: MembershipBounds) -> NeffosError? {
        if room.utf8.count > bounds.maxNameBytes {
            return NeffosError.limitExceeded.with(detail: "a room name is at most \(bounds.maxNameBytes) bytes")
        }
        let joined = namespaces.values.reduce(0) { $0 + $1.rooms.count }
        if joined >= bounds.maxRooms {
            return NeffosError.limitExceeded.with(detail: "a connection joins at most \(bounds.maxRooms) rooms")
        }
        return nil
    }

    /// Adds a joined room; returns `false` when its namespace is not connected or the room was
    /// joined already (then no owner event, and `recovery` is not used).
    @discardableResult
    mutating func addRoom(_ room: String, in name: String, recovery: JoinRecovery? = nil) -> Bool {
        // Mutated in place: holding a copy of the entry while inserting would copy the whole
        // room set on every join (O(rooms)).
        guard let inserted = namespaces[name]?.rooms.insert(room).inserted, inserted else { return false }
        if let ns = namespaces[name]?.nsConn { ownerEvents.append(.joined(room, ns, recovery)) }
        return true
    }

    /// Removes a joined room; returns whether it was joined.
    @discardableResult
    mutating func removeRoom(_ room: String, in name: String) -> Bool {
        guard namespaces[name]?.rooms.remove(room) != nil, let ns = namespaces[name]?.nsConn else { return false }
        ownerEvents.append(.left(room, ns))
        return true
    }

    /// Takes the namespaces and rooms of a client whose transport was lost, to restore them
    /// on the next one (no owner event: they come back, or fail, one by one), with those a
    /// restore cut short by another loss left for this one (``restoreLater(_:rooms:)``).
    mutating func takeForRestore() -> [(NSConn, rooms: Set<String>)] {
        var taken: [String: (NSConn, rooms: Set<String>)] = [:]
        for (name, entry) in namespaces { taken[name] = (entry.nsConn, entry.rooms.asSet) }
        for (ns, rooms) in unrestored { taken[ns.namespace, default: (ns, [])].rooms.formUnion(rooms) }
        namespaces = [:]
        unrestored = []
        return taken.keys.sorted().map { taken[$0]! }
    }

    /// A restore was cut short by the loss of the new transport: `ns` and `rooms` are restored
    /// on the next one instead.
    mutating func restoreLater(_ ns: NSConn, rooms: Set<String>) {
        unrestored.append((ns, rooms))
    }

    /// Applies what a successful reply confirms; returns the namespace waiters to resume and
    /// the rooms removed.
    mutating func apply(_ effect: ReplyEffect) -> (waiters: [(CheckedContinuation<NSConn, any Error>, NSConn)], removedRooms: Set<String>) {
        switch effect {
        case .none:
            return ([], [])
        case .addNamespace(let ns):
            return ((addNamespace(ns) ?? []).map { ($0, ns) }, [])
        case .removeNamespace(let name):
            return ([], removeNamespace(name)?.rooms ?? [])
        case .addRoom(let room, let name):
            addRoom(room, in: name)
            return ([], [])
        case .removeRoom(let room, let name):
            removeRoom(room, in: name)
            return ([], [])
        }
    }
}
