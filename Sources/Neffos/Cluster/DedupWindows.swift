/// The de-duplication windows of every publisher heard from, at most ``capacity`` of them
/// (the least recently heard is forgotten first: a node that restarted or left).
struct DedupWindows {
    /// A publishing node, in one of its lives.
    struct Publisher: Hashable {
        var node: String
        var incarnation: UInt64
    }

    static let capacity = 1024
    private var windows: [Publisher: (window: DedupWindow, lastHeard: UInt64)] = [:]
    private var clock: UInt64 = 0

    /// Records `sequence` from `publisher`; returns `false` when it was seen before.
    mutating func insert(_ sequence: UInt64, from publisher: Publisher) -> Bool {
        clock += 1
        if windows[publisher] == nil && windows.count >= Self.capacity,
            let oldest = windows.min(by: { $0.value.lastHeard < $1.value.lastHeard })?.key {
            windows[oldest] = nil
        }
        var entry = windows[publisher] ?? (DedupWindow(), 0)
        entry.lastHeard = clock
        let first = entry.window.insert(sequence)
        windows[publisher] = entry
        return first
    }

    /// How many publishers are remembered.
    var count: Int { windows.count }
}

/// Remembers which sequence numbers of one publisher were seen, in a sliding window.
struct DedupWindow {
    private var highest: UInt64 = 0
    private var recent: Set<UInt64> = []
    private static let span: UInt64 = 4096

    /// Records `sequence`; returns `false` when it was seen before (or is too old to tell).
    mutating func insert(_ sequence: UInt64) -> Bool {
        if highest >= Self.span && sequence <= highest - Self.span { return false }
        guard recent.insert(sequence).inserted else { return false }
        if sequence > highest {
            highest = sequence
            if recent.count > Int(Self.span) * 2 {
                let floor = highest >= Self.span ? highest - Self.span : 0
                recent = recent.filter { $0 > floor }
            }
        }
        return true
    }
}
