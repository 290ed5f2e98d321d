/// A condition that becomes true once (a process ended, a connection went quiet, a server
/// drained), and the tasks that wait for it, each with a deadline.
package final class OnceFlag: Sendable {
    private let flag = Watched(false)

    /// A flag not set yet.
    package init() {}

    /// Whether it is set.
    package var isSet: Bool { flag.read { $0 } }

    /// Sets it and wakes every waiter (with `true`). Setting it again does nothing.
    package func set() {
        flag.update { $0 = true }
    }

    /// Waits until it is set, up to `timeout`; returns whether it was set.
    package func wait(timeout: Duration) async -> Bool {
        struct Expired: Error {}
        do {
            return try await flag.wait(timeout: timeout, orThrow: { Expired() }) { isSet in isSet ? .success(true) : nil }
        } catch {
            return false
        }
    }
}
