import Neffos
import NeffosTesting
import Testing

@Suite("Exchange conformance")
struct ExchangeConformanceTests {
    @Test("in-process exchange, 3 nodes", arguments: ExchangeConformance.checks)
    func inProcess(_ check: ExchangeConformance.Check) async throws {
        try await Self.inProcessSuite().run(check)
    }

    @Test("loopback exchange, 3 nodes", arguments: ExchangeConformance.checks)
    func loopback(_ check: ExchangeConformance.Check) async throws {
        try await Self.loopbackSuite().run(check)
    }

    @Test("Presence on the in-process exchange, 3 nodes", arguments: ExchangeConformance.presenceChecks)
    func inProcessPresence(_ check: ExchangeConformance.Check) async throws {
        try await Self.inProcessSuite().run(check)
    }

    /// The in-process suite: one bus shared by the nodes (no faults to inject).
    static func inProcessSuite() -> ExchangeConformance {
        let bus = InProcessExchange()
        return ExchangeConformance(name: "in-process") { _ in bus }
    }

    @Test("Presence on the loopback exchange, 3 nodes", arguments: ExchangeConformance.presenceChecks)
    func loopbackPresence(_ check: ExchangeConformance.Check) async throws {
        try await Self.loopbackSuite().run(check)
    }

    /// The loopback suite, its faults cutting one node off the bus.
    static func loopbackSuite() -> ExchangeConformance {
        let bus = LoopbackExchange()
        let faults = ExchangeConformance.Faults(
            disconnect: { index, _ in bus.disconnect("node-\(index)") },
            reconnect: { index, _ in bus.reconnect("node-\(index)") })
        return ExchangeConformance(name: "loopback", faults: faults) { _ in bus }
    }
}
