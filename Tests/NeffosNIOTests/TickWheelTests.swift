import NIOCore
import NIOEmbedded
import Testing
@testable import NeffosNIO

/// The wheel that runs every connection's heartbeat and read-timeout checks on one event loop,
/// on virtual time.
@Suite("Tick wheel")
struct TickWheelTests {
    /// A member that records when it was visited.
    final class Member: TickWheelMember {
        let name: Int
        let loop: EmbeddedEventLoop
        var heartbeatSeat: WheelSeat?
        var readSeat: WheelSeat?
        var visits: [Int64] = []
        /// Runs at each visit (to leave the wheel during one, say).
        var onVisit: (() -> Void)?

        init(_ name: Int, loop: EmbeddedEventLoop) {
            self.name = name
            self.loop = loop
        }

        subscript(seat kind: TickKind) -> WheelSeat? {
            get { kind == .heartbeat ? heartbeatSeat : readSeat }
            set { if kind == .heartbeat { heartbeatSeat = newValue } else { readSeat = newValue } }
        }

        static func milliseconds(_ loop: EmbeddedEventLoop) -> Int64 {
            Int64(loop.now.uptimeNanoseconds / 1_000_000)
        }

        func visit(_ kind: TickKind) {
            visits.append(Self.milliseconds(loop))
            onVisit?()
        }
    }

    /// 32 ms: 32 slots of 1 ms.
    static let period = TimeAmount.milliseconds(32)

    @Test("each member is visited once a period, the first time no earlier than a period after it joined and at most one slot later")
    func periods() {
        let loop = EmbeddedEventLoop()
        let wheel = TickWheel<Member>(kind: .heartbeat, period: Self.period, loop: loop)
        var members: [(joined: Int64, member: Member)] = []
        for name in 0..<40 {
            let member = Member(name, loop: loop)
            members.append((Member.milliseconds(loop), member))
            wheel.add(member)
            // Joins spread over more than a period.
            loop.advanceTime(by: .microseconds(1_300))
        }
        loop.advanceTime(by: .milliseconds(200))
        for (joined, member) in members {
            #expect(member.visits.count >= 4, "member \(member.name): \(member.visits)")
            guard let first = member.visits.first else { continue }
            #expect(first >= joined + 32 && first <= joined + 34, "member \(member.name) joined at \(joined) ms, first visit at \(first)")
            let gaps = zip(member.visits.dropFirst(), member.visits).map { $0 - $1 }
            #expect(gaps.allSatisfy { $0 == 32 }, "member \(member.name): \(member.visits)")
        }
        #expect(wheel.count == 40 && wheel.running)
    }

    @Test("a member that leaves is not visited again; the wheel stops when empty and starts again")
    func leaving() {
        let loop = EmbeddedEventLoop()
        let wheel = TickWheel<Member>(kind: .readCheck, period: Self.period, loop: loop)
        let members = (0..<5).map { Member($0, loop: loop) }
        for member in members { wheel.add(member) }
        #expect(members.allSatisfy { $0.readSeat != nil && $0.heartbeatSeat == nil })
        loop.advanceTime(by: .milliseconds(40))
        #expect(members.allSatisfy { $0.visits.count == 1 })
        // Leaving from the middle moves the last member into the leaver's place.
        wheel.remove(members[1])
        wheel.remove(members[1])
        #expect(members[1].readSeat == nil && wheel.count == 4)
        loop.advanceTime(by: .milliseconds(32))
        #expect(members[1].visits.count == 1)
        #expect([0, 2, 3, 4].allSatisfy { members[$0].visits.count == 2 })
        for member in members { wheel.remove(member) }
        #expect(wheel.count == 0)
        loop.advanceTime(by: .milliseconds(2))
        #expect(!wheel.running, "an empty wheel schedules nothing")
        wheel.add(members[0])
        #expect(wheel.running)
        loop.advanceTime(by: .milliseconds(34))
        #expect(members[0].visits.count == 3)
    }

    @Test("members may leave during a visit, their own or another's, and are skipped")
    func leavingDuringVisit() {
        let loop = EmbeddedEventLoop()
        let wheel = TickWheel<Member>(kind: .heartbeat, period: Self.period, loop: loop)
        let members = (0..<6).map { Member($0, loop: loop) }
        for member in members { wheel.add(member) }
        // All six sit in one slot: the first visited removes itself and the last one.
        members[0].onVisit = { wheel.remove(members[0]); wheel.remove(members[5]) }
        members[2].onVisit = { wheel.remove(members[3]) }
        loop.advanceTime(by: .milliseconds(40))
        #expect(members[0].visits.count == 1 && members[5].visits.isEmpty)
        #expect(members[2].visits.count == 1 && members[3].visits.isEmpty)
        #expect(members[1].visits.count == 1 && members[4].visits.count == 1)
        #expect(wheel.count == 3)
        loop.advanceTime(by: .milliseconds(32))
        #expect([1, 2, 4].allSatisfy { members[$0].visits.count == 2 })
    }

    @Test("a short period has fewer slots, never a tick under 1 ms")
    func shortPeriod() {
        let loop = EmbeddedEventLoop()
        let wheel = TickWheel<Member>(kind: .heartbeat, period: .microseconds(2_500), loop: loop)
        let member = Member(0, loop: loop)
        wheel.add(member)
        loop.advanceTime(by: .milliseconds(20))
        #expect((6...8).contains(member.visits.count), "\(member.visits)")
    }
}
