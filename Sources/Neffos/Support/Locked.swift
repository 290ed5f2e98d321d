import NIOConcurrencyHelpers

/// A value behind a lock.
///
/// It uses a pthread mutex (NIO's `NIOLock`) rather than the standard library's `Mutex`:
/// on Linux `Mutex` is built on futexes that the thread sanitizer does not model, so every
/// access through it is reported as a race and real races would drown in them.
package final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only read or written inside `withLock`, while `lock` is
    // held, so no two threads ever touch it at once.
    private let lock = NIOLock()
    private var value: Value

    /// A lock around `value`.
    package init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` with the value, the lock held.
    @inline(__always)
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
