import Neffos
import NeffosTesting
import Testing

/// The history store conformance suite on the memory store (each node its own), two nodes on
/// one in-process bus (each check its own cluster on it).
@Suite("History store conformance: memory")
struct HistoryConformanceTests {
    static let bus = InProcessExchange()

    @Test("History: the memory store passes the store conformance suite", arguments: HistoryConformance.checks(shared: false))
    func memoryStore(_ check: HistoryConformance.Check) async throws {
        let suite = HistoryConformance(name: "memory", shared: false, makeExchange: { _ in Self.bus }) { _ in .node(MemoryHistoryStore()) }
        try await suite.run(check)
    }
}
