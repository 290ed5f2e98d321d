/// Other nodes' asks that this node delivered to its connections, each waiting for the first
/// reply to forward to its origin. Entries are kept a while past their deadline, to recognise
/// (and drop) late replies, and pruned when the table grows.
struct ForwardedAsks {
    private struct Entry {
        let origin: String
        /// Who the ask went to on this node: only they may answer it.
        let target: BroadcastTarget
        let expires: Int64
        var answered = false
    }

    /// How long an entry is kept past its deadline, in nanoseconds.
    static let grace: Int64 = 60_000_000_000
    /// Past this many entries, expired ones are pruned on the next insertion.
    static let pruneAbove = 1024

    private var entries: [String: Entry] = [:]

    /// Remembers the ask `token` from node `origin`, ending at `deadline` (Unix nanoseconds).
    mutating func remember(
        _ token: String, origin: String, target: BroadcastTarget, deadline: Int64,
        now: Int64 = Int64(WaitTokens.wallClockNanoseconds())
    ) {
        if entries.count > Self.pruneAbove { entries = entries.filter { $0.value.expires > now } }
        entries[token] = Entry(origin: origin, target: target, expires: max(deadline, now) + Self.grace)
    }

    /// What to do with a reply to `token`.
    enum Answer: Equatable {
        /// Not another node's ask.
        case unknown
        /// Another connection answered first, or the replier is not one the ask went to: drop
        /// it.
        case answeredAlready
        /// The first reply: forward it to this node.
        case forward(String)
    }

    /// A local connection replied to `token`; `isReceiver` says whether it is one the ask
    /// went to (any other's reply is dropped).
    mutating func answer(_ token: String, isReceiver: (BroadcastTarget) -> Bool) -> Answer {
        guard var entry = entries[token] else { return .unknown }
        if entry.answered || !isReceiver(entry.target) { return .answeredAlready }
        entry.answered = true
        entries[token] = entry
        return .forward(entry.origin)
    }
}
