#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Generates the wait tokens that pair an ask with its reply.
///
/// A token is a decimal number that looks like the Unix time in nanoseconds (as the Go
/// implementation's tokens do) but is strictly increasing across the whole process: two asks
/// issued in the same nanosecond, on any threads, still get different tokens. Client tokens
/// carry the `$` prefix; server tokens are plain digits.
package final class WaitTokens: Sendable {
    /// The process-wide generator used by servers and clients.
    package static let shared = WaitTokens()

    private let last = Atomic<UInt64>(0)

    /// Creates an independent generator (tests use one to start from a known state).
    package init() {}

    /// The next unique number: the current time in nanoseconds, or one more than the last
    /// number issued if the clock has not moved past it.
    package func next() -> UInt64 {
        let now = Self.wallClockNanoseconds()
        var current = last.load(ordering: .relaxed)
        while true {
            let candidate = max(now, current &+ 1)
            let (exchanged, original) = last.compareExchange(
                expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return candidate }
            current = original
        }
    }

    /// A client token: `$` followed by a unique number.
    package func clientToken() -> String { "$" + String(next()) }

    /// A server token: a unique number, no prefix.
    package func serverToken() -> String { String(next()) }

    /// Whether `token` was made by a client (`$` prefix, or the reserved `#`).
    @inline(__always)
    package static func isClientToken(_ token: String) -> Bool {
        guard let first = token.utf8.first else { return false }
        return first == UInt8(ascii: "$") || first == UInt8(ascii: "#")
    }

    static func wallClockNanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }
}
