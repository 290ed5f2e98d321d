import NIOCore

/// A timer that can be stopped before it fires: an event loop's `Scheduled` task, or a
/// `Task` that sleeps.
package protocol Cancellable: Sendable {
    /// Stops the timer; does nothing once it fired.
    func cancel()
}

extension Scheduled: Cancellable {}
extension Task: Cancellable {}

/// Asks waiting for their reply: wait token → the waiting task, its deadline timer, and a
/// value the owner applies when a successful reply arrives.
///
/// One type serves both kinds of ask: a connection's (``ConnStateMachine``, effect: the
/// membership change the reply confirms) and the server's asks to its connections
/// (``Server/ask(_:to:timeout:)``, no effect). It is a value: its owner keeps it behind its
/// lock and resumes the waiters it hands back only after releasing that lock.
struct PendingReplies<Value: Sendable, Effect> {
    /// One waiting ask.
    struct Entry {
        let continuation: CheckedContinuation<Value, any Error>
        var timer: (any Cancellable)?
        let effect: Effect

        /// Stops the deadline timer and resumes the waiting task with `result`.
        func resume(with result: Result<Value, any Error>) {
            timer?.cancel()
            continuation.resume(with: result)
        }
    }

    private var entries: [String: Entry] = [:]

    /// How many asks wait.
    var count: Int { entries.count }

    /// Records an ask; its timer comes later (``setTimer(_:for:)``), once it is scheduled.
    mutating func register(_ token: String, _ continuation: CheckedContinuation<Value, any Error>, effect: Effect) {
        entries[token] = Entry(continuation: continuation, timer: nil, effect: effect)
    }

    /// Attaches the deadline timer of `token`; returns `false` when the ask already ended (the
    /// caller then cancels the timer).
    mutating func setTimer(_ timer: any Cancellable, for token: String) -> Bool {
        guard entries[token] != nil else { return false }
        entries[token]!.timer = timer
        return true
    }

    /// Whether `token` waits.
    func contains(_ token: String) -> Bool { entries[token] != nil }

    /// The effect of the ask waiting on `token`, if it waits.
    func effect(of token: String) -> Effect? { entries[token]?.effect }

    /// Ends the ask `token` (a reply came, its deadline passed, it failed): removes and
    /// returns it, or `nil` when it is not waiting.
    mutating func take(_ token: String) -> Entry? {
        entries.removeValue(forKey: token)
    }

    /// Ends every ask (the connection closed): removes and returns them all.
    mutating func takeAll() -> [Entry] {
        defer { entries = [:] }
        return Array(entries.values)
    }
}
