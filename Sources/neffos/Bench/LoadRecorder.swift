import Histogram
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds, the clock of every timestamp the benchmarks put in a body (the
/// generator and the servers run on the same machine).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
}

/// What the connections of one event loop measured. Touched only on that loop.
final class Recorder: @unchecked Sendable {
    // @unchecked Sendable: every access happens on `loop` (handlers run there; snapshots and
    // resets are submitted to it).
    let loop: any EventLoop
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    var received = 0
    var sent = 0
    var errors = 0
    /// `presence` client events received.
    var presence = 0

    init(loop: any EventLoop) { self.loop = loop }

    /// A copy of the counters, taken on the loop.
    func snapshot() -> EventLoopFuture<Tally> {
        loop.submit { Tally(latency: self.latency, received: self.received, sent: self.sent, errors: self.errors, presence: self.presence) }
    }

    /// Zeroes the counters, on the loop.
    func reset() -> EventLoopFuture<Void> {
        loop.submit {
            self.latency.reset()
            self.received = 0
            self.sent = 0
            self.errors = 0
            self.presence = 0
        }
    }
}

/// Counters of several recorders, merged.
struct Tally: Sendable {
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    var received = 0
    var sent = 0
    var errors = 0
    var presence = 0

    mutating func add(_ other: Tally) {
        latency.add(other.latency)
        received += other.received
        sent += other.sent
        errors += other.errors
        presence += other.presence
    }
}

/// What a load connection does once it is ready.
enum LoadRole: Sendable {
    /// Receives `tick` broadcasts and records their latency.
    case receiver
    /// Also sends a `broadcast` of a timestamp (to `room`, or the namespace) each time it
    /// receives a tick, keeping `window` broadcasts in flight.
    case publisher(window: Int, room: String)
    /// Sends a `broadcast` (to `room`, or the namespace) `perSecond` times a second from a
    /// timer, whatever comes back: a fixed offered load, for latency below saturation.
    case pacedPublisher(perSecond: Int, room: String)
    /// Keeps `inflight` asks of `event` (`echo` by default) about `room` going, recording each
    /// round trip.
    case asker(inflight: Int, event: String = "echo", room: String = "")
    /// Joins `room`, leaves it, joins it again… as fast as the server acknowledges, recording
    /// each acknowledgement's round trip (a join or a leave is one operation).
    case churner(room: String)
}
