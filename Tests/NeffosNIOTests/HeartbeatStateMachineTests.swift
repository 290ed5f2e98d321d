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
