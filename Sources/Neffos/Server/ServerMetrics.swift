import Metrics
import Synchronization

extension Server {
    /// Counts frames a transport dropped for a full outbox (control frames included).
    package func countDroppedFrames(_ count: Int) {
        metrics.dropped(count)
    }

    /// Counts a connection or an upgrade request refused before it became a WebSocket (over
    /// the connection limit, a refused origin, a malformed upgrade, headers too large).
    package func countRefusedConnection() {
        metrics.refused()
    }

    /// Counts an HTTP connection closed because a request took too long or it stayed idle.
    package func countHTTPTimeout() {
        metrics.httpTimedOut()
    }

    /// Counts a connection failed for breaking RFC 6455 (closed 1002 or 1007) or for a message
    /// or frame past the configured size (1009).
    package func countProtocolViolation() {
        metrics.protocolViolated()
    }

    /// Counts a failed `accept` (for example out of file descriptors), after which the
    /// listener backs off.
    package func countAcceptError() {
        metrics.acceptFailed()
    }

    /// Counters of what the server did, since it started. Cheap to read.
    public struct Statistics: Sendable, Equatable {
        /// Connections accepted (upgraded), including those later refused.
        public var accepted: Int
        /// Connections open now (handshake completed).
        public var open: Int
        /// Frames dropped because a receiver's outbox was full.
        public var droppedFrames: Int
        /// Asks (by the server or its connections) that got no reply in time.
        public var asksTimedOut: Int
        /// Frames dropped because they could not be decoded.
        public var invalidFrames: Int
        /// Client requests refused because they would pass a per-connection bound (rooms per
        /// connection, name length…).
        public var limitsExceeded: Int
        /// Times a connection stopped reading because its queued events reached their bound
        /// (count or bytes).
        public var readPauses: Int
        /// Connections and upgrade requests refused before they became WebSockets: over the
        /// connection limit (503), a refused origin (403), a malformed upgrade (400), headers
        /// too large (431).
        public var refusedConnections: Int
        /// HTTP connections (not upgraded) closed because a request took too long to arrive
        /// or the connection stayed idle.
        public var httpTimeouts: Int
        /// Failed `accept` calls (for example: out of file descriptors), each followed by a
        /// back-off.
        public var acceptErrors: Int
        /// Connections failed for breaking RFC 6455 (an unmasked frame, reserved bits, text
        /// that is not UTF-8, an invalid close code: closed 1002 or 1007) or for a message or
        /// frame past the configured size (1009).
        public var protocolViolations: Int
    }

    /// What the server did so far (also exported as swift-metrics).
    public var statistics: Statistics {
        Statistics(
            accepted: metrics.acceptedTotal.load(ordering: .relaxed),
            open: connectionCount,
            droppedFrames: metrics.droppedTotal.load(ordering: .relaxed),
            asksTimedOut: metrics.timedOutTotal.load(ordering: .relaxed),
            invalidFrames: metrics.invalidTotal.load(ordering: .relaxed),
            limitsExceeded: metrics.limitsTotal.load(ordering: .relaxed),
            readPauses: metrics.pausesTotal.load(ordering: .relaxed),
            refusedConnections: metrics.refusedTotal.load(ordering: .relaxed),
            httpTimeouts: metrics.httpTimeoutsTotal.load(ordering: .relaxed),
            acceptErrors: metrics.acceptErrorsTotal.load(ordering: .relaxed),
            protocolViolations: metrics.violationsTotal.load(ordering: .relaxed))
    }

    /// Waits until `condition` holds for ``statistics``, checked whenever a counter of the
    /// rare events changes (all but ``Statistics/accepted`` and ``Statistics/open``), up to
    /// `timeout` (for tests and diagnostics).
    ///
    /// - Throws: ``NeffosError/timeout`` naming `what` when it does not hold in time.
    package func waitForStatistics(
        _ what: String, timeout: Duration = .seconds(10), until condition: @escaping @Sendable (Statistics) -> Bool
    ) async throws {
        _ = try await metrics.changes.wait(
            timeout: timeout,
            orThrow: { [self] in NeffosError.timeout.with(detail: "\(what); statistics: \(statistics)") },
            until: { [self] _ in condition(statistics) ? .success(true) : nil })
    }
}

/// The server's counters: swift-metrics (the application bootstraps a backend) and, for the
/// rare events, atomics behind ``Server/statistics``.
final class ServerMetrics: Sendable {
    /// The bounds whose refusals are counted apart (`neffos_limits_exceeded{limit=…}`).
    enum Limit: String, CaseIterable, Sendable {
        case rooms, nameLength, pendingAsks, pendingServerAsks, pendingQueries, lingeringRooms
    }

    let connections: Meter
    private let messagesIn: Counter
    private let messagesOut: Counter
    private let bytesIn: Counter
    private let bytesOut: Counter
    /// Namespace connections open now.
    let namespaces: Meter
    /// Rooms with at least one member on this node.
    let rooms: Meter
    /// How long event handlers take, from the call to the reply.
    let handlerDuration: Timer
    /// 1 while the exchange is connected, 0 otherwise (no exchange: not set).
    let exchangeUp: Gauge
    /// Envelopes this node published to the exchange, and their bytes.
    let busMessagesOut: Counter
    let busBytesOut: Counter
    /// Envelopes this node received from the exchange, and their bytes.
    let busMessagesIn: Counter
    let busBytesIn: Counter
    /// Envelopes from other nodes that never arrived (gaps in their sequences).
    let busLost: Counter
    private let accepted: Counter
    private let droppedFrames: Counter
    private let asksTimedOut: Counter
    private let invalidFrames: Counter
    let acceptedTotal = Atomic<Int>(0)
    let droppedTotal = Atomic<Int>(0)
    let timedOutTotal = Atomic<Int>(0)
    let invalidTotal = Atomic<Int>(0)
    let limitsTotal = Atomic<Int>(0)
    let pausesTotal = Atomic<Int>(0)
    let refusedTotal = Atomic<Int>(0)
    let httpTimeoutsTotal = Atomic<Int>(0)
    let acceptErrorsTotal = Atomic<Int>(0)
    let violationsTotal = Atomic<Int>(0)
    /// Bumped after every change of the counters above, so that tasks can wait on them.
    let changes = Watched<UInt64>(0)
    private let limitsExceeded: [Limit: Counter]
    private let readPauses: Counter
    private let refusedConnections: Counter
    private let httpTimeouts: Counter
    private let acceptErrors: Counter
    private let protocolViolations: Counter
    /// Joins that asked to recover, by outcome, and the kept messages they sent back.
    private let recoveries: [Bool: Counter]
    private let recoveredMessages: Counter

    init(name: String?) {
        let dimensions = name.map { [("server", $0)] } ?? []
        accepted = Counter(label: "neffos_connections_accepted", dimensions: dimensions)
        connections = Meter(label: "neffos_connections", dimensions: dimensions)
        messagesIn = Counter(label: "neffos_messages_in", dimensions: dimensions)
        messagesOut = Counter(label: "neffos_messages_out", dimensions: dimensions)
        droppedFrames = Counter(label: "neffos_dropped_frames", dimensions: dimensions)
        asksTimedOut = Counter(label: "neffos_asks_timed_out", dimensions: dimensions)
        invalidFrames = Counter(label: "neffos_invalid_frames", dimensions: dimensions)
        limitsExceeded = Dictionary(uniqueKeysWithValues: Limit.allCases.map {
            ($0, Counter(label: "neffos_limits_exceeded", dimensions: dimensions + [("limit", $0.rawValue)]))
        })
        readPauses = Counter(label: "neffos_read_pauses", dimensions: dimensions)
        bytesIn = Counter(label: "neffos_bytes_in", dimensions: dimensions)
        bytesOut = Counter(label: "neffos_bytes_out", dimensions: dimensions)
        namespaces = Meter(label: "neffos_namespaces", dimensions: dimensions)
        rooms = Meter(label: "neffos_rooms", dimensions: dimensions)
        handlerDuration = Timer(label: "neffos_handler_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        exchangeUp = Gauge(label: "neffos_exchange_up", dimensions: dimensions)
        busMessagesOut = Counter(label: "neffos_exchange_published_messages", dimensions: dimensions)
        busBytesOut = Counter(label: "neffos_exchange_published_bytes", dimensions: dimensions)
        busMessagesIn = Counter(label: "neffos_exchange_received_messages", dimensions: dimensions)
        busBytesIn = Counter(label: "neffos_exchange_received_bytes", dimensions: dimensions)
        busLost = Counter(label: "neffos_exchange_lost_messages", dimensions: dimensions)
        refusedConnections = Counter(label: "neffos_connections_refused", dimensions: dimensions)
        httpTimeouts = Counter(label: "neffos_http_timeouts", dimensions: dimensions)
        acceptErrors = Counter(label: "neffos_accept_errors", dimensions: dimensions)
        protocolViolations = Counter(label: "neffos_protocol_violations", dimensions: dimensions)
        recoveries = [
            true: Counter(label: "neffos_recoveries", dimensions: dimensions + [("result", "recovered")]),
            false: Counter(label: "neffos_recoveries", dimensions: dimensions + [("result", "incomplete")]),
        ]
        recoveredMessages = Counter(label: "neffos_recovered_messages", dimensions: dimensions)
    }

    /// A join that asked to recover: whether everything missed was there, and how many kept
    /// messages it sent.
    func recovered(_ complete: Bool, messages: Int) {
        recoveries[complete]?.increment()
        recoveredMessages.increment(by: Int64(messages))
    }

    /// A message received from a client: counted with its bytes.
    @inline(__always)
    func received(bytes: Int) {
        messagesIn.increment()
        bytesIn.increment(by: Int64(bytes))
    }

    /// `count` frames of `bytes` each sent (one, or a broadcast's receivers).
    @inline(__always)
    func sent(_ count: Int, bytes: Int) {
        messagesOut.increment(by: Int64(count))
        bytesOut.increment(by: Int64(count &* bytes))
    }

    func acceptedConnection() {
        accepted.increment()
        acceptedTotal.add(1, ordering: .relaxed)
    }

    func dropped(_ count: Int) {
        droppedFrames.increment(by: Int64(count))
        droppedTotal.add(count, ordering: .relaxed)
        changed()
    }

    func readPaused() {
        readPauses.increment()
        pausesTotal.add(1, ordering: .relaxed)
        changed()
    }

    private func changed() {
        changes.update { $0 &+= 1 }
    }

    /// One rare event: the metric, the statistic, and a wake-up for whoever waits on them.
    private func count(_ counter: Counter, _ total: borrowing Atomic<Int>) {
        counter.increment()
        total.add(1, ordering: .relaxed)
        changed()
    }

    func askTimedOut() { count(asksTimedOut, timedOutTotal) }

    func limitExceeded(_ limit: Limit) { count(limitsExceeded[limit]!, limitsTotal) }

    /// Runs a synchronous handler and records its duration.
    @inline(__always)
    func timed<T>(_ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer { handlerDuration.recordNanoseconds(Self.nanoseconds(since: start)) }
        return try body()
    }

    /// Runs an asynchronous handler and records its duration.
    @inline(__always)
    func timed<T>(_ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        defer { handlerDuration.recordNanoseconds(Self.nanoseconds(since: start)) }
        return try await body()
    }

    private static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = start.duration(to: .now).components
        return elapsed.seconds &* 1_000_000_000 &+ elapsed.attoseconds / 1_000_000_000
    }

    func invalidFrame() { count(invalidFrames, invalidTotal) }

    func refused() { count(refusedConnections, refusedTotal) }

    func httpTimedOut() { count(httpTimeouts, httpTimeoutsTotal) }

    func protocolViolated() { count(protocolViolations, violationsTotal) }

    func acceptFailed() { count(acceptErrors, acceptErrorsTotal) }
}
