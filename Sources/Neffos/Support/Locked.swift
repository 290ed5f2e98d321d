#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value behind a lock: one allocation holding both the value and a pthread mutex.
///
/// A pthread mutex rather than the standard library's `Mutex`: on Linux `Mutex` is built on
/// futexes that the thread sanitizer does not model, so every access through it is reported
/// as a race and real races would drown in them. Both in one object (NIO's `NIOLock` is an
/// object of its own): a connection's state sits behind one of these, so the second object
/// would cost every connection ~50 bytes and every access a pointer more.
///
/// A value type with reference semantics: copies share the value and the lock.
package struct Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: the value is only read or written inside `withLock`, while the
    // mutex is held, so no two threads ever touch it at once.
    private let storage: LockedStorage<Value>

    /// A lock around `value`.
    package init(_ value: Value) {
        storage = LockedStorage.make(value)
    }

    /// Runs `body` with the value, the lock held.
    @inline(__always)
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        try storage.withLock(body)
    }
}

/// The value as the buffer's header, the mutex as its one element.
final class LockedStorage<Value>: ManagedBuffer<Value, pthread_mutex_t> {
    static func make(_ value: Value) -> LockedStorage<Value> {
        let buffer = create(minimumCapacity: 1) { _ in value }
        let storage = unsafeDowncast(buffer, to: LockedStorage<Value>.self)
        storage.withUnsafeMutablePointerToElements { mutex in
            var attributes = pthread_mutexattr_t()
            pthread_mutexattr_init(&attributes)
            #if DEBUG
            pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ERRORCHECK))
            #endif
            let status = pthread_mutex_init(mutex, &attributes)
            precondition(status == 0, "pthread_mutex_init failed: \(status)")
            pthread_mutexattr_destroy(&attributes)
        }
        return storage
    }

    @inline(__always)
    func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        try withUnsafeMutablePointers { (value, mutex) throws(Failure) -> Result in
            let locked = pthread_mutex_lock(mutex)
            precondition(locked == 0, "pthread_mutex_lock failed: \(locked)")
            defer {
                let unlocked = pthread_mutex_unlock(mutex)
                precondition(unlocked == 0, "pthread_mutex_unlock failed: \(unlocked)")
            }
            return try body(&value.pointee)
        }
    }

    // The value (the header) is destroyed by ManagedBuffer itself.
    deinit {
        withUnsafeMutablePointerToElements { mutex in
            _ = pthread_mutex_destroy(mutex)
        }
    }
}
