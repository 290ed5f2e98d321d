/// The publishing side of loss detection: each node numbers what it publishes on each
/// subject (1, 2, 3…), so that a receiver can tell when envelopes meant for it never arrived:
/// lost in a bus outage, dropped for a slow consumer elsewhere, whatever the exchange.
///
/// It keeps one counter per subject published to, at most ``capacity``: past that it forgets
/// them all and starts a new epoch (receivers then start afresh, without counting a gap).
struct PublishedStreams {
    /// Subjects counted before the counters are forgotten.
    static let capacity = 65_536

    private(set) var epoch: UInt32 = 0
    private var last: [String: UInt64] = [:]

    /// The epoch and sequence number of the next envelope on `subject`.
    mutating func next(on subject: String) -> (epoch: UInt32, sequence: UInt64) {
        if last[subject] == nil && last.count >= Self.capacity {
            last = [:]
            epoch &+= 1
        }
        let sequence = (last[subject] ?? 0) + 1
        last[subject] = sequence
        return (epoch, sequence)
    }
}

/// The receiving side of loss detection: for each subject this node is subscribed to, the
/// next sequence number expected from each publisher. An envelope further on means the ones
/// in between were lost; an earlier one is late or a duplicate (not counted here).
///
/// Positions exist only while the node is subscribed: a subject it leaves is forgotten, so
/// that what it was not subscribed to is never counted as lost.
struct ReceivedStreams {
    private struct Position {
        var incarnation: UInt64
        var epoch: UInt32
        var next: UInt64
    }

    /// Subject → publishing node → position.
    private var subjects: [String: [String: Position]] = [:]

    /// Records an envelope; returns how many envelopes before it, on its subject from its
    /// publisher, never arrived. The first one seen from a publisher (or from a new
    /// incarnation or epoch of it) starts its count.
    mutating func record(subject: String, origin: String, incarnation: UInt64, epoch: UInt32, sequence: UInt64) -> Int {
        guard sequence > 0 else { return 0 }
        if let position = subjects[subject]?[origin], position.incarnation == incarnation, position.epoch == epoch {
            guard sequence >= position.next else { return 0 }
            subjects[subject]![origin]!.next = sequence + 1
            return Int(clamping: sequence - position.next)
        }
        subjects[subject, default: [:]][origin] = Position(incarnation: incarnation, epoch: epoch, next: sequence + 1)
        return 0
    }

    /// Forgets `subject` (this node unsubscribed from it).
    mutating func forget(_ subject: String) {
        subjects[subject] = nil
    }
}
