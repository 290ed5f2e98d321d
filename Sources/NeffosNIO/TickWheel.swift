import NIOCore
import Neffos

/// A periodic check of every connection on one event loop (a WebSocket's heartbeat or read
/// timeout, an HTTP connection's idle or request timeout), run by one scheduled task per loop,
/// kind and period instead of one per connection.
///
/// A per-connection timer costs a scheduled task in NIO's queue, a promise and three closures
/// (~300 bytes a connection, held for the connection's life), a lock and a heap insertion each
/// period, and a cancel that scans the loop's whole queue when the connection closes. Here a
/// connection costs one array slot and its ``WheelSeat``: the period is cut into up to 32
/// slots, a connection sits in one, and every `period / slots` the wheel visits the next slot.
/// So each connection is visited once a period, never earlier than `period` after it joined and
/// at most one slot's time later; a loop's visits are spread over the period, not bunched.
///
/// Loop-bound, like the handlers it serves: every method runs on ``loop``.
final class TickWheel<Member: TickWheelMember> {
    let loop: any EventLoop
    let kind: TickKind
    let period: TimeAmount
    /// The time between two visits: `period / slots.count`.
    private let tick: TimeAmount
    private var slots: [[Member]]
    /// The slot visited last.
    private var cursor = 0
    private(set) var count = 0
    /// When the next visit is scheduled; `nil` while none is (the wheel is empty).
    private var nextVisit: NIODeadline?
    /// Whether a visit is scheduled (while the wheel has members).
    var running: Bool { nextVisit != nil }

    /// The most slots a period is cut into. A tick is never under 1 ms unless the period is.
    static var maxSlots: Int { 32 }

    init(kind: TickKind, period: TimeAmount, loop: any EventLoop) {
        let nanoseconds = max(1, period.nanoseconds)
        let slotCount = Int(max(1, min(Int64(Self.maxSlots), nanoseconds / 1_000_000)))
        self.loop = loop
        self.kind = kind
        self.period = .nanoseconds(nanoseconds)
        self.tick = .nanoseconds(max(1, nanoseconds / Int64(slotCount)))
        self.slots = Array(repeating: [], count: slotCount)
    }

    /// Adds `handler`; its first visit comes at least a period from now. A handler already in
    /// the wheel stays where it is.
    func add(_ handler: Member) {
        guard handler[seat: kind] == nil else { return }
        // The slot after the cursor is visited next, within a tick: that first visit only marks
        // the seat as due, so the handler's first real visit is a whole period after it.
        let slot = (cursor + 1) % slots.count
        handler[seat: kind] = WheelSeat(slot: Int32(slot), index: Int32(slots[slot].count), fresh: true)
        slots[slot].append(handler)
        count += 1
        if !running { start() }
    }

    /// Removes `handler`, if it is in the wheel.
    func remove(_ handler: Member) {
        guard let seat = handler[seat: kind] else { return }
        handler[seat: kind] = nil
        let slot = Int(seat.slot)
        let last = slots[slot].removeLast()
        if last !== handler {
            slots[slot][Int(seat.index)] = last
            last[seat: kind]?.index = seat.index
        }
        count -= 1
    }

    private func start() {
        let next = loop.now + tick
        nextVisit = next
        schedule(at: next)
    }

    private func schedule(at deadline: NIODeadline) {
        loop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in visit() }
    }

    private func visit() {
        cursor = (cursor + 1) % slots.count
        // A copy: a visit may close a connection, which leaves the wheel (and moves another
        // handler into the leaver's place); a handler that left is skipped.
        let members = slots[cursor]
        for handler in members {
            guard var seat = handler[seat: kind], Int(seat.slot) == cursor else { continue }
            if seat.fresh {
                seat.fresh = false
                handler[seat: kind] = seat
                continue
            }
            handler.visit(kind)
        }
        guard count > 0 else {
            nextVisit = nil
            return
        }
        // From the planned deadline, not from now: a late visit does not shift the next ones.
        let now = loop.now
        var next = (nextVisit ?? now) + tick
        if next < now { next = now + tick }
        nextVisit = next
        schedule(at: next)
    }
}

/// Where a handler sits in a ``TickWheel``: its slot, its index in the slot, and whether its
/// first visit (which only marks it due) is still to come.
struct WheelSeat {
    var slot: Int32
    var index: Int32
    var fresh: Bool
}

/// What a ``TickWheel``'s visit does.
enum TickKind: Hashable {
    /// The heartbeat: ``WebSocketHandler/beat()``.
    case heartbeat
    /// The read timeout: ``WebSocketHandler/checkRead()``.
    case readCheck
    /// An HTTP connection with no request in progress for too long (``HTTPGuard``).
    case httpIdle
    /// An HTTP request that has not arrived in full in time (``HTTPGuard``).
    case httpRequest
}

/// What a ``TickWheel`` visits: it keeps its seat for each kind of wheel it joins.
protocol TickWheelMember: AnyObject {
    subscript(seat kind: TickKind) -> WheelSeat? { get set }
    func visit(_ kind: TickKind)
}

/// The wheels of one kind of member, one per event loop, kind and period, made on first use.
final class TickWheels<Member: TickWheelMember>: Sendable {
    private struct Key: Hashable {
        let loop: ObjectIdentifier
        let kind: TickKind
        let period: Int64
    }

    private let wheels = Locked<[Key: NIOLoopBound<TickWheel<Member>>]>([:])

    /// The wheel of `kind` and `period` on `loop`. Call it on `loop`.
    func wheel(_ kind: TickKind, period: TimeAmount, on loop: any EventLoop) -> TickWheel<Member> {
        let key = Key(loop: ObjectIdentifier(loop), kind: kind, period: period.nanoseconds)
        return wheels.withLock { wheels in
            // A loop at the address of one that is gone gets a wheel of its own.
            if let bound = wheels[key], bound.eventLoop === loop { return bound.value }
            let wheel = TickWheel<Member>(kind: kind, period: period, loop: loop)
            wheels[key] = NIOLoopBound(wheel, eventLoop: loop)
            return wheel
        }
    }
}
