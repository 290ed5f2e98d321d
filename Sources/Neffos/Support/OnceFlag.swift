/// A condition that becomes true once (a process ended, a connection went quiet), and the
/// tasks that wait for it, each with a deadline.
package final class OnceFlag: Sendable {
    private let state = Locked<(isSet: Bool, waiters: [UInt64: CheckedContinuation<Bool, Never>], next: UInt64)>((false, [:], 0))

    /// A flag not set yet.
    package init() {}

    /// Whether it is set.
    package var isSet: Bool { state.withLock { $0.isSet } }

    /// Sets it and wakes every waiter (with `true`). Setting it again does nothing.
    package func set() {
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.isSet = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// Waits until it is set, up to `timeout`; returns whether it was set.
    package func wait(timeout: Duration) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let id = state.withLock { state -> UInt64? in
                if state.isSet { return nil }
                let id = state.next
                state.next += 1
                state.waiters[id] = continuation
                return id
            }
            guard let id else {
                continuation.resume(returning: true)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                self.state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: false)
            }
        }
    }
}
