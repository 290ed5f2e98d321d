import Neffos
import NeffosTesting
import Testing

@Suite("Exchange conformance")
struct ExchangeConformanceTests {
    @Test("in-process exchange, 3 nodes", arguments: ExchangeConformance.checks)
    func inProcess(_ check: ExchangeConformance.Check) async throws {
        let bus = InProcessExchange()
        try await ExchangeConformance(name: "in-process") { _ in bus }.run(check)
    }

    @Test("loopback exchange, 3 nodes", arguments: ExchangeConformance.checks)
    func loopback(_ check: ExchangeConformance.Check) async throws {
        let bus = LoopbackExchange()
        let faults = ExchangeConformance.Faults(
            disconnect: { index, _ in bus.disconnect("node-\(index)") },
            reconnect: { index, _ in bus.reconnect("node-\(index)") })
        try await ExchangeConformance(name: "loopback", faults: faults) { _ in bus }.run(check)
    }
}
