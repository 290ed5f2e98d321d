/// A WebSocket close code (RFC 6455 §7.4).
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric code.
    public let rawValue: UInt16
    /// A close code from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// 1000: normal closure.
    public static let normal = CloseCode(rawValue: 1000)
    /// 1001: the server is going away (shutdown).
    public static let goingAway = CloseCode(rawValue: 1001)
    /// 1002: protocol error.
    public static let protocolError = CloseCode(rawValue: 1002)
    /// 1003: a data type that cannot be accepted.
    public static let unacceptableData = CloseCode(rawValue: 1003)
    /// 1007: data inconsistent with the message type.
    public static let invalidData = CloseCode(rawValue: 1007)
    /// 1008: policy violation (a refused connection, a missing handshake, a slow consumer).
    public static let policyViolation = CloseCode(rawValue: 1008)
    /// 1009: a message too big to process.
    public static let messageTooBig = CloseCode(rawValue: 1009)
    /// 1011: an unexpected condition on the server.
    public static let internalError = CloseCode(rawValue: 1011)

    /// The number.
    public var description: String { String(rawValue) }
}

/// Why a connection closed.
public struct CloseReason: Sendable, CustomStringConvertible {
    /// The close code, if a close frame was exchanged.
    public var code: CloseCode?
    /// The close frame's reason text, or a description of the failure.
    public var text: String
    /// Whether this side closed the connection.
    public var initiatedLocally: Bool
    /// The error that closed the connection, if it was not an orderly close.
    public var error: (any Error)?

    /// Creates a close reason.
    public init(code: CloseCode?, text: String = "", initiatedLocally: Bool, error: (any Error)? = nil) {
        self.code = code
        self.text = text
        self.initiatedLocally = initiatedLocally
        self.error = error
    }

    /// A readable summary.
    public var description: String {
        var parts: [String] = []
        if let code { parts.append("code \(code)") }
        if !text.isEmpty { parts.append("\"\(text)\"") }
        if let error { parts.append("error: \(error)") }
        parts.append(initiatedLocally ? "closed here" : "closed by the peer")
        return parts.joined(separator: ", ")
    }
}
