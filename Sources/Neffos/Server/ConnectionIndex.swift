/// One connection's membership in a namespace, as broadcasts need it: where to write and
/// what to compare.
struct Member: Sendable {
    let nsConn: NSConn
    let transport: any ConnTransport
    let id: String
}

/// The members of one event loop, so that a broadcast hops once per loop.
struct LoopGroup: Sendable {
    let lane: LoopLane
    var members: [ObjectIdentifier: Member] = [:]
}

/// A set of members grouped by event loop.
struct MemberSet {
    var groups: [ObjectIdentifier: LoopGroup] = [:]
    var count = 0

    var all: [Member] { groups.values.flatMap { $0.members.values } }

    mutating func insert(_ member: Member) {
        let loopID = ObjectIdentifier(member.transport.eventLoop)
        let key = ObjectIdentifier(member.nsConn)
        if groups[loopID] == nil { groups[loopID] = LoopGroup(lane: member.transport.lane) }
        if groups[loopID]!.members.updateValue(member, forKey: key) == nil { count += 1 }
    }

    mutating func remove(_ ns: NSConn, loop: ObjectIdentifier) -> Member? {
        guard let removed = groups[loop]?.members.removeValue(forKey: ObjectIdentifier(ns)) else { return nil }
        count -= 1
        if groups[loop]!.members.isEmpty { groups[loop] = nil }
        return removed
    }

    func contains(_ ns: NSConn, loop: ObjectIdentifier) -> Bool {
        contains(ObjectIdentifier(ns), loop: loop)
    }

    /// Whether the member with key `key` (its ``NSConn``'s identifier) on `loop` is in the set.
    func contains(_ key: ObjectIdentifier, loop: ObjectIdentifier) -> Bool {
        groups[loop]?.members[key] != nil
    }
}

/// One namespace's members and rooms.
struct NamespaceIndex {
    var members = MemberSet()
    var rooms: [String: MemberSet] = [:]
    /// The members under each connection ID: their keys and loops (their ``Member`` is in
    /// ``members``; a copy here cost each connection ~50 bytes).
    var byID: [String: IDEntries<ObjectIdentifier>] = [:]
    /// The loop of each member, to find it again.
    var loops: [ObjectIdentifier: ObjectIdentifier] = [:]
}

/// Every open connection and every namespace and room membership of a server: what a
/// broadcast reads to find its receivers. Joining and leaving cost O(1); finding a room's
/// members costs O(members of the room), never O(connections).
struct ConnectionIndex {
    var connections: [ObjectIdentifier: Conn] = [:]
    var byID: [String: IDEntries<Conn>] = [:]
    var namespaces: [String: NamespaceIndex] = [:]

    mutating func open(_ conn: Conn) {
        let key = ObjectIdentifier(conn)
        connections[key] = conn
        byID[conn.id, default: IDEntries()][key] = conn
    }

    /// Forgets `conn`; returns whether it was open.
    mutating func close(_ conn: Conn) -> Bool {
        let key = ObjectIdentifier(conn)
        guard connections.removeValue(forKey: key) != nil else { return false }
        let id = conn.id
        byID[id]?[key] = nil
        if byID[id]?.isEmpty == true { byID[id] = nil }
        return true
    }

    /// Mutates the index of `namespace` in place (never a copy: a copy of a namespace's
    /// member tables per join would cost O(members)).
    @inline(__always)
    private mutating func withIndex<Result>(_ namespace: String, _ body: (inout NamespaceIndex) -> Result) -> Result {
        body(&namespaces[namespace, default: NamespaceIndex()])
    }

    @discardableResult
    mutating func add(_ member: Member) -> Bool {
        let key = ObjectIdentifier(member.nsConn)
        return withIndex(member.nsConn.namespace) { index in
            guard index.loops[key] == nil else { return false }
            index.members.insert(member)
            let loop = ObjectIdentifier(member.transport.eventLoop)
            index.byID[member.id, default: IDEntries()][key] = loop
            index.loops[key] = loop
            return true
        }
    }

    /// Removes `ns`; returns whether it was there. Its rooms were left first by the
    /// connection (``ConnStateMachine/removeNamespace(_:)``), so no room is scanned here.
    @discardableResult
    mutating func remove(_ ns: NSConn) -> Bool {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return false }
        let removed = withIndex(ns.namespace) { index -> Bool in
            guard let loop = index.loops.removeValue(forKey: key) else { return false }
            if let member = index.members.remove(ns, loop: loop) {
                index.byID[member.id]?[key] = nil
                if index.byID[member.id]?.isEmpty == true { index.byID[member.id] = nil }
            }
            return true
        }
        if namespaces[ns.namespace]?.members.count == 0 { namespaces[ns.namespace] = nil }
        return removed
    }

    /// Adds `ns` to `room`; returns whether it was not a member yet (`joined`), and whether
    /// the room had no member before (`newRoom`).
    @discardableResult
    mutating func join(_ ns: NSConn, room: String) -> (joined: Bool, newRoom: Bool) {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return (false, false) }
        return withIndex(ns.namespace) { index in
            guard let loop = index.loops[key], let member = index.members.groups[loop]?.members[key],
                index.rooms[room]?.contains(ns, loop: loop) != true
            else { return (false, false) }
            let newRoom = index.rooms[room] == nil
            index.rooms[room, default: MemberSet()].insert(member)
            return (true, newRoom)
        }
    }

    /// Removes `ns` from `room`; returns whether it was a member (`left`), and whether the
    /// room has no member left (`roomGone`).
    @discardableResult
    mutating func leave(_ ns: NSConn, room: String) -> (left: Bool, roomGone: Bool) {
        let key = ObjectIdentifier(ns)
        guard namespaces[ns.namespace] != nil else { return (false, false) }
        return withIndex(ns.namespace) { index in
            guard let loop = index.loops[key], index.rooms[room]?.remove(ns, loop: loop) != nil else { return (false, false) }
            guard index.rooms[room]?.count == 0 else { return (true, false) }
            index.rooms[room] = nil
            return (true, true)
        }
    }

    /// The namespace membership of `ns` (where to write to it), if it is in the index.
    func member(_ ns: NSConn) -> Member? {
        let key = ObjectIdentifier(ns)
        guard let index = namespaces[ns.namespace], let loop = index.loops[key] else { return nil }
        return index.members.groups[loop]?.members[key]
    }

    /// Whether `room` of `namespace` has a member on this server.
    func hasMembers(inRoom room: String, of namespace: String) -> Bool {
        (namespaces[namespace]?.rooms[room]?.count ?? 0) > 0
    }

    /// The loop groups a broadcast to `target` goes to, and how many receivers they hold once
    /// the excluded connection is left out.
    func receivers(of target: BroadcastTarget) -> ([LoopGroup], Int) {
        guard let index = namespaces[target.namespace] else { return ([], 0) }
        let except = target.except
        let excluded = except.flatMap { index.byID[$0] } ?? IDEntries()
        if !target.to.isEmpty {
            guard target.to != except, let members = index.byID[target.to] else { return ([], 0) }
            var set = MemberSet()
            for (key, loop) in members {
                guard let member = index.members.groups[loop]?.members[key] else { continue }
                if target.room.isEmpty || index.rooms[target.room]?.contains(key, loop: loop) == true {
                    set.insert(member)
                }
            }
            return (Array(set.groups.values), set.count)
        }
        let set: MemberSet
        if target.room.isEmpty {
            set = index.members
        } else {
            guard let members = index.rooms[target.room] else { return ([], 0) }
            set = members
        }
        var count = set.count
        for (key, loop) in excluded where set.contains(key, loop: loop) { count -= 1 }
        return (Array(set.groups.values), count)
    }
}

/// The entries under one connection ID in an index. IDs are nearly always unique, so the first
/// entry is kept inline and a dictionary is made only for a second: a dictionary per ID would
/// cost every connection an allocation, twice (the server's IDs and its namespace's).
struct IDEntries<Value>: Sequence {
    private var first: (key: ObjectIdentifier, value: Value)?
    private var rest: [ObjectIdentifier: Value] = [:]

    init() {}

    subscript(key: ObjectIdentifier) -> Value? {
        get { first?.key == key ? first?.value : rest[key] }
        set {
            if first?.key == key {
                first = newValue.map { (key, $0) } ?? rest.popFirst()
            } else if first == nil, rest.isEmpty, let newValue {
                first = (key, newValue)
            } else {
                rest[key] = newValue
            }
        }
    }

    var isEmpty: Bool { first == nil && rest.isEmpty }

    var values: [Value] { map { $0.value } }

    func makeIterator() -> Iterator { Iterator(head: first, tail: rest.makeIterator()) }

    struct Iterator: IteratorProtocol {
        var head: (key: ObjectIdentifier, value: Value)?
        var tail: Dictionary<ObjectIdentifier, Value>.Iterator

        mutating func next() -> (key: ObjectIdentifier, value: Value)? {
            if let entry = head {
                head = nil
                return entry
            }
            return tail.next().map { (key: $0.key, value: $0.value) }
        }
    }
}
