import NIOCore

/// The ping heartbeat and the read timeout of one WebSocket connection, as values: the
/// handler feeds it what happened (traffic from the peer, a timer tick) and carries out what
/// it answers. No clock and no I/O, so its counting is exact in unit tests.
struct Heartbeat: Equatable {
    /// What the handler does on a heartbeat tick.
    enum Beat: Equatable {
        /// Send a ping.
        case ping
        /// Close (1008, "heartbeat timeout"): the peer answered none of the last two pings.
        case close
    }

    /// Pings sent since the peer last sent anything (any frame counts as an answer).
    private(set) var unansweredPings: UInt8 = 0
    /// Whether the peer sent anything since the last read-timeout check.
    private(set) var sawTrafficSinceCheck = false

    /// Pings that may go unanswered before the connection is closed. Two, not one: a loop that
    /// stalled (a loaded machine) may run the timer before it reads a pong already waiting in
    /// the socket.
    static let allowedUnansweredPings: UInt8 = 2

    /// The peer sent a frame (data, ping, pong or close).
    mutating func trafficSeen() {
        unansweredPings = 0
        sawTrafficSinceCheck = true
    }

    /// The ping interval elapsed.
    mutating func beat() -> Beat {
        if unansweredPings >= Self.allowedUnansweredPings { return .close }
        unansweredPings += 1
        return .ping
    }

    /// The read timeout elapsed; returns whether the connection must close (1008, "read
    /// timeout") because the peer sent nothing since the last check.
    mutating func readTimeoutElapsed() -> Bool {
        defer { sawTrafficSinceCheck = false }
        return !sawTrafficSinceCheck
    }
}

/// How one connection answers the peer's pings, as a value (no clock, no I/O): at most one
/// pong on its way at a time, and at most ``burst`` pongs at once, refilled at
/// ``perSecond``. A ping that cannot be answered now is held (the latest one only: RFC 6455
/// §5.5.3 lets a pong answer only the most recent ping), and the handler stops reading from
/// the peer until it can be: a ping flood then costs the server a read burst per pong, not
/// its CPU, and a peer that pings without reading is not read from until it reads.
struct PongPolicy {
    /// What to do with a ping.
    enum Decision: Equatable {
        /// Send a pong with this payload now.
        case answer(ByteBuffer)
        /// Hold it and stop reading until `until` (or, when `nil`, until the pong on its way
        /// has left, or the outbox has room).
        case hold(until: NIODeadline?)
    }

    /// What to do when a hold may end.
    enum Resumption: Equatable {
        /// Keep holding (see ``Decision/hold(until:)``).
        case stillHeld(until: NIODeadline?)
        /// Read again, after answering the held ping, if any.
        case resume(answer: ByteBuffer?)
    }

    /// Pongs the peer may get at once.
    static let burst = 16.0
    /// Pongs per second past the burst.
    static let perSecond = 10.0

    private var tokens = Self.burst
    private var refilledAt: NIODeadline
    /// The latest ping not answered yet.
    private(set) var held: ByteBuffer?
    /// Whether a pong was written and has not reached the socket yet.
    private(set) var inFlight = false

    init(now: NIODeadline) {
        refilledAt = now
    }

    /// A ping arrived.
    mutating func ping(_ payload: ByteBuffer, now: NIODeadline, writable: Bool) -> Decision {
        refill(now)
        guard !inFlight, writable, tokens >= 1 else {
            held = payload
            return .hold(until: inFlight || !writable ? nil : nextToken)
        }
        tokens -= 1
        inFlight = true
        return .answer(payload)
    }

    /// The pong on its way reached the socket.
    mutating func pongSent() {
        inFlight = false
    }

    /// A hold may end (the pong left, the outbox drained, the hold's time came).
    mutating func resume(now: NIODeadline, writable: Bool) -> Resumption {
        refill(now)
        guard !inFlight, writable else { return .stillHeld(until: nil) }
        guard let payload = held else { return .resume(answer: nil) }
        guard tokens >= 1 else { return .stillHeld(until: nextToken) }
        held = nil
        tokens -= 1
        inFlight = true
        return .resume(answer: payload)
    }

    private mutating func refill(_ now: NIODeadline) {
        let elapsed = Double((now - refilledAt).nanoseconds) / 1e9
        if elapsed > 0 { tokens = min(Self.burst, tokens + elapsed * Self.perSecond) }
        refilledAt = now
    }

    /// When the next whole token is there.
    private var nextToken: NIODeadline {
        refilledAt + .nanoseconds(Int64((1 - tokens.truncatingRemainder(dividingBy: 1)) / Self.perSecond * 1e9) + 1)
    }
}
