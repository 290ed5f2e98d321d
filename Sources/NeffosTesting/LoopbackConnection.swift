import Logging
import NIOCore
import Neffos
import Synchronization

/// One node's connection to a ``LoopbackExchange``.
final class LoopbackConnection: ExchangeConnection {
    private let bus: LoopbackExchange
    let node: String
    let deliver: @Sendable (String, ByteBuffer) -> Void
    let status: @Sendable (ExchangeStatus) -> Void
    let publishedCount = Atomic<Int>(0)
    let deliveredCount = Atomic<Int>(0)
    let droppedCount = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)

    init(bus: LoopbackExchange, node: String, deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
         status: @escaping @Sendable (ExchangeStatus) -> Void) {
        self.bus = bus
        self.node = node
        self.deliver = deliver
        self.status = status
    }

    func publish(_ payload: ByteBuffer, to subject: String) {
        publishedCount.add(1, ordering: .relaxed)
        bus.publish(payload, subject: subject, from: node)
    }

    func subscribe(_ subject: String) { bus.subscribe(subject, node: node) }
    func unsubscribe(_ subject: String) { bus.unsubscribe(subject, node: node) }
    func hasInterest(in subject: String) -> Bool { bus.hasInterest(in: subject, besides: node) }
    func flush() async throws {}

    func close() async {
        if bus.close(self) { status(.closed) }
    }

    var statistics: ExchangeStatistics {
        ExchangeStatistics(
            published: publishedCount.load(ordering: .relaxed), delivered: deliveredCount.load(ordering: .relaxed),
            dropped: droppedCount.load(ordering: .relaxed), reconnects: reconnects.load(ordering: .relaxed))
    }
}
