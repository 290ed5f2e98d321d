import NIOCore
@testable import NeffosNIO
import Testing

@Suite("Heartbeat StateMachine")
struct HeartbeatStateMachineTests {
    /// Runs `ticks` heartbeat ticks; returns what each asked for.
    private func tick(_ heartbeat: inout Heartbeat, _ ticks: Int) -> [Heartbeat.Beat] {
        (0..<ticks).map { _ in heartbeat.beat() }
    }

    @Test("a silent peer gets exactly two pings, then the close")
    func silentPeer() {
        var heartbeat = Heartbeat()
        #expect(tick(&heartbeat, 3) == [.ping, .ping, .close])
    }

    @Test("any frame from the peer answers the pings sent so far")
    func trafficAnswers() {
        var heartbeat = Heartbeat()
        for _ in 0..<10 {
            #expect(tick(&heartbeat, 2) == [.ping, .ping])
            heartbeat.trafficSeen()
        }
        #expect(heartbeat.unansweredPings == 0)
    }

    @Test("a pong read after a slipped tick still counts: one late answer keeps the peer open")
    func lateAnswer() {
        var heartbeat = Heartbeat()
        // The loop stalled: the second tick runs before the waiting pong is read.
        #expect(tick(&heartbeat, 2) == [.ping, .ping])
        heartbeat.trafficSeen()
        #expect(tick(&heartbeat, 1) == [.ping])
    }

    @Test("the read timeout closes only after a whole interval without traffic")
    func readTimeout() {
        var heartbeat = Heartbeat()
        var checks: [Bool] = [heartbeat.readTimeoutElapsed()]
        heartbeat.trafficSeen()
        checks.append(heartbeat.readTimeoutElapsed())
        checks.append(heartbeat.readTimeoutElapsed())
        #expect(checks == [true, false, true])
    }
}

@Suite("Pong policy")
struct PongPolicyTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    func payload(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test("one pong on its way at a time: pings meanwhile are held, the latest answered once it left")
    func oneInFlight() {
        var pongs = PongPolicy(now: start)
        #expect(pongs.ping(payload("a"), now: start, writable: true) == .answer(payload("a")))
        #expect(pongs.ping(payload("b"), now: start, writable: true) == .hold(until: nil))
        #expect(pongs.ping(payload("c"), now: start, writable: true) == .hold(until: nil))
        #expect(pongs.resume(now: start, writable: true) == .stillHeld(until: nil), "the first pong has not left")
        pongs.pongSent()
        #expect(pongs.resume(now: start, writable: true) == .resume(answer: payload("c")), "only the latest is answered")
        pongs.pongSent()
        #expect(pongs.resume(now: start, writable: true) == .resume(answer: nil))
    }

    @Test("a full outbox holds pings until it drains")
    func fullOutbox() {
        var pongs = PongPolicy(now: start)
        #expect(pongs.ping(payload("a"), now: start, writable: false) == .hold(until: nil))
        #expect(pongs.resume(now: start, writable: false) == .stillHeld(until: nil))
        #expect(pongs.resume(now: start, writable: true) == .resume(answer: payload("a")))
    }

    @Test("past the burst, pongs come at the policy's rate")
    func rate() {
        var pongs = PongPolicy(now: start)
        for index in 0..<Int(PongPolicy.burst) {
            #expect(pongs.ping(payload("\(index)"), now: start, writable: true) == .answer(payload("\(index)")))
            pongs.pongSent()
        }
        guard case .hold(let until?) = pongs.ping(payload("x"), now: start, writable: true) else {
            Issue.record("the ping past the burst is held until a token comes")
            return
        }
        let interval = Int64(1e9 / PongPolicy.perSecond)
        #expect(abs((until - start).nanoseconds - interval) < 1_000, "one token's time: \(until - start)")
        #expect(pongs.resume(now: start + .nanoseconds(interval / 2), writable: true) != .resume(answer: payload("x")))
        #expect(pongs.resume(now: until, writable: true) == .resume(answer: payload("x")))
    }
}
