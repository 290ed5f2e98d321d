import NIOCore
import Synchronization

/// Keeps writes to one event loop's sockets in order.
///
/// A write made on the event loop may go out at once ("inline"), but only when no write made
/// from another thread is still queued to that loop; otherwise it queues behind them. So a
/// sequence of writes by one publisher (a connection's handlers, a task) reaches each
/// receiver in order, whether each write was made on the loop or hopped to it.
package final class LoopLane: Sendable {
    /// The event loop.
    package let loop: any EventLoop
    /// Writes queued to the loop and not yet run.
    private let queued = Atomic<Int>(0)

    private init(loop: any EventLoop) { self.loop = loop }

    /// Whether a write may run inline now: on the loop, with nothing queued before it.
    @inline(__always)
    package var canRunInline: Bool {
        loop.inEventLoop && queued.load(ordering: .relaxed) == 0
    }

    /// Runs `work` now if allowed, or queues it behind the writes already queued.
    @inline(__always)
    package func run(_ work: @escaping @Sendable () -> Void) {
        if canRunInline {
            work()
        } else {
            queue(work)
        }
    }

    /// Queues `work` to the loop (always).
    package func queue(_ work: @escaping @Sendable () -> Void) {
        queued.add(1, ordering: .relaxed)
        loop.execute {
            work()
            self.queued.subtract(1, ordering: .relaxed)
        }
    }

    private static let lanes = Locked<[ObjectIdentifier: LoopLane]>([:])

    /// The lane of `loop` (one per event loop, made on first use).
    package static func lane(for loop: any EventLoop) -> LoopLane {
        lanes.withLock { lanes in
            let key = ObjectIdentifier(loop)
            if let lane = lanes[key], lane.loop === loop { return lane }
            let lane = LoopLane(loop: loop)
            lanes[key] = lane
            return lane
        }
    }
}
