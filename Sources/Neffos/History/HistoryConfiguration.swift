extension Server {
    /// Which rooms keep their broadcasts, where, and the bounds of recovering them.
    ///
    /// ```swift
    /// var configuration = Server.Configuration()
    /// configuration.history.rules = [
    ///     HistoryRule(namespace: "chat", rooms: "*", limits: HistoryLimits(maxCount: 50)),
    ///     HistoryRule(namespace: "dashboard", rooms: "metrics.*", replayOnJoin: 1),
    /// ]
    /// ```
    public struct HistoryConfiguration: Sendable {
        /// The rooms that keep history; the first rule matching a room applies. Default: none
        /// (no history, and the broadcast path unchanged).
        public var rules: [HistoryRule] = []
        /// Where kept messages go. Default: a ``MemoryHistoryStore`` (per node).
        public var store: any HistoryStore = MemoryHistoryStore()
        /// A history kept for the whole cluster (JetStream): when set, the rules' rooms keep
        /// their broadcasts there instead of in ``store``, with positions that mean the same on
        /// every node. An open store (`JetStreamHistory.connect(…)`), or what a URL names
        /// (`neffos.history.store.url` = `nats://…`), which ``Server/start()`` opens. Default:
        /// none.
        public var shared: (any SharedHistoryConnector)?
        /// The most kept messages one join sends back (recovery); past it, the newest ones are
        /// sent and the join reports "not recovered". Default: 1,000.
        public var maxRecoveryMessages = 1000
        /// With an exchange: the most emptied rooms a node keeps receiving for their history's
        /// age (so that a member who comes back recovers there). Past it, an emptied room is let
        /// go at once and forgets its history (a later recovery there reports "not
        /// recovered"), counted as `neffos_limits_exceeded{limit="lingeringRooms"}`: members
        /// joining and leaving many rooms cannot make a node hold their subscriptions.
        /// Default: 10,000.
        public var maxLingeringRooms = 10_000

        /// No history.
        public init() {}

        /// The widest bounds of the rules (the most messages and the longest age any of them
        /// keeps): what a shared history keeps per room. The default limits without rules.
        public var widestLimits: HistoryLimits {
            guard let first = rules.first?.limits else { return HistoryLimits() }
            return rules.dropFirst().reduce(first) { widest, rule in
                HistoryLimits(maxCount: max(widest.maxCount, rule.limits.maxCount), maxAge: max(widest.maxAge, rule.limits.maxAge))
            }
        }

        /// The rule for `room` of `namespace`, if any.
        func rule(for room: String, in namespace: String) -> HistoryRule? {
            guard !room.isEmpty else { return nil }
            return rules.first { $0.matches(room, in: namespace) }
        }
    }
}

/// Rooms whose broadcasts are kept, and how.
public struct HistoryRule: Sendable, Hashable {
    /// The namespace.
    public var namespace: String
    /// The rooms: a name (`lobby`), a prefix ending in `*` (`game-*`), or `*` for every room
    /// of the namespace.
    public var rooms: String
    /// How much of each room's history is kept.
    public var limits: HistoryLimits
    /// How many of the room's newest kept messages a member who joins gets at once, oldest
    /// first: after the join's reply, before any newer broadcast, each once. `1` is a
    /// dashboard's current value (what Centrifugo calls cache recovery); a chat may replay its
    /// last lines. Every client gets them, as ordinary messages (positioned for clients of the
    /// extension); a rejoin that recovers gets what it missed instead. Default: 0.
    public var replayOnJoin: Int

    /// Whether a joining member gets the room's newest message (``replayOnJoin`` of at least 1).
    public var latestOnJoin: Bool { replayOnJoin >= 1 }

    /// A rule.
    public init(namespace: String, rooms: String = "*", limits: HistoryLimits = HistoryLimits(), replayOnJoin: Int = 0) {
        self.namespace = namespace
        self.rooms = rooms
        self.limits = limits
        self.replayOnJoin = max(0, replayOnJoin)
    }

    /// Whether the rule covers `room` of `namespace`.
    public func matches(_ room: String, in namespace: String) -> Bool {
        guard namespace == self.namespace else { return false }
        if rooms.hasSuffix("*") { return room.hasPrefix(rooms.dropLast()) }
        return room == rooms
    }
}
