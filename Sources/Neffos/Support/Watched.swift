import NIOConcurrencyHelpers

/// A value that tasks wait on, each until a condition of its own holds, or its deadline
/// passes: the package's one way to "wait for something, with a deadline" (a flag set once,
/// a frame received, a record logged, a listener bound).
///
/// A waiter's condition runs with the lock held and may take what it needs from the value (a
/// queue's first item); the waiter is resumed after the lock is released. Deadlines run on
/// one clock (`Task.sleep`, the continuous clock).
package final class Watched<State>: @unchecked Sendable {
    // @unchecked Sendable: `state` and `waiters` are only touched with `lock` held, and the
    // conditions (which see `state`) run only there.
    private typealias Attempt = (inout State) -> (() -> Void)?

    private let lock = NIOLock()
    private var state: State
    private var waiters: [UInt64: Attempt] = [:]
    private var nextID: UInt64 = 0

    /// A watched `state`.
    package init(_ state: State) {
        self.state = state
    }

    /// Reads the value.
    package func read<Result, Failure: Error>(_ body: (State) throws(Failure) -> Result) throws(Failure) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(state)
    }

    /// Changes the value; the waiters whose condition now holds are resumed, oldest first,
    /// once the lock is released.
    @discardableResult
    package func update<Result, Failure: Error>(_ body: (inout State) throws(Failure) -> Result) throws(Failure) -> Result {
        lock.lock()
        let result: Result
        do throws(Failure) {
            result = try body(&state)
        } catch {
            lock.unlock()
            throw error
        }
        var ready: [() -> Void] = []
        for id in waiters.keys.sorted() {
            if let resume = waiters[id]!(&state) {
                waiters[id] = nil
                ready.append(resume)
            }
        }
        lock.unlock()
        for resume in ready { resume() }
        return result
    }

    /// Waits until `condition` gives an outcome (a value, or an error to throw), checked now
    /// and after every ``update(_:)``; after `timeout` (if any), throws `timeoutError()`
    /// instead.
    package func wait<Value: Sendable>(
        timeout: Duration?,
        orThrow timeoutError: @escaping @Sendable () -> any Error,
        until condition: @escaping (inout State) -> Result<Value, any Error>?
    ) async throws -> Value {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
            lock.lock()
            if let outcome = condition(&state) {
                lock.unlock()
                continuation.resume(with: outcome)
                return
            }
            let id = nextID
            nextID += 1
            waiters[id] = { state in
                condition(&state).map { outcome in { continuation.resume(with: outcome) } }
            }
            lock.unlock()
            guard let timeout else { return }
            Task {
                try? await Task.sleep(for: timeout)
                self.lock.lock()
                let expired = self.waiters.removeValue(forKey: id) != nil
                self.lock.unlock()
                if expired { continuation.resume(throwing: timeoutError()) }
            }
        }
    }
}

extension Watched: CustomStringConvertible {
    /// The value's description.
    package var description: String { read { "\($0)" } }
}
