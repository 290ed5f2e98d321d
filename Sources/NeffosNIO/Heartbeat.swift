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
    private(set) var unansweredPings = 0
    /// Whether the peer sent anything since the last read-timeout check.
    private(set) var sawTrafficSinceCheck = false

    /// Pings that may go unanswered before the connection is closed. Two, not one: a loop that
    /// stalled (a loaded machine) may run the timer before it reads a pong already waiting in
    /// the socket.
    static let allowedUnansweredPings = 2

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
