import NIOCore

extension Duration {
    /// This duration as NIO's `TimeAmount`, saturating.
    package var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if nanos.overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        return .nanoseconds(nanos.partialValue &+ attoseconds / 1_000_000_000)
    }
}
