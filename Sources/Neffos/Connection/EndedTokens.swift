import DequeModule

/// The wait tokens of asks that ended recently (answered, timed out, cancelled), to tell a late
/// or duplicate reply (dropped) from a peer's request that happens to carry a token of the
/// same form (dispatched, PROTOCOL.md §4). Bounded: the oldest are forgotten first.
struct EndedTokens {
    /// How many tokens are remembered.
    let capacity: Int
    private var order: Deque<String> = []
    private var set: Set<String> = []

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Remembers `token`.
    mutating func insert(_ token: String) {
        guard set.insert(token).inserted else { return }
        order.append(token)
        if order.count > capacity, let oldest = order.popFirst() { set.remove(oldest) }
    }

    /// Whether `token` ended recently.
    func contains(_ token: String) -> Bool { set.contains(token) }

    /// How many are remembered.
    var count: Int { order.count }
}
