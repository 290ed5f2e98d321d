/// The errors of this library.
///
/// Compare with the static members (`error == .badNamespace`); the ``detail`` says what was
/// involved and is safe to log. New kinds of errors may be added without breaking your code.
///
/// Four of them are also *wire errors* that neffos peers exchange by their exact text:
/// ``badNamespace`` (`bad namespace`), ``badRoom`` (`bad room`), ``writeClosed``
/// (`write closed`) and ``invalidPayload`` (`invalid payload`).
public struct NeffosError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case badNamespace, badRoom, writeClosed, invalidPayload
        case timeout, handshakeRefused, handshakeTimeout, messageTooLarge
        case unrepresentableName, invalidConfiguration, dialFailed, reconnecting
        case limitExceeded
    }

    private let code: Code
    /// What was involved (a namespace, a room, the text of a refusal…), if anything.
    public private(set) var detail: String?
    /// The error that caused this one, if any (for example a decoding error behind
    /// ``invalidPayload``).
    public private(set) var underlying: (any Error)?

    private init(_ code: Code) {
        self.code = code
    }

    /// The remote side does not declare the namespace, or this connection is not connected
    /// to it. Wire text: `bad namespace`.
    public static let badNamespace = NeffosError(.badNamespace)
    /// The connection has not joined the room. Wire text: `bad room`.
    public static let badRoom = NeffosError(.badRoom)
    /// The connection is closed: nothing can be written to it. Wire text: `write closed`.
    public static let writeClosed = NeffosError(.writeClosed)
    /// A frame or a body could not be decoded. Wire text: `invalid payload`.
    public static let invalidPayload = NeffosError(.invalidPayload)
    /// An ask got no reply before its deadline.
    public static let timeout = NeffosError(.timeout)
    /// The server refused the connection (its on-connect hook threw); ``detail`` holds the
    /// server's text.
    public static let handshakeRefused = NeffosError(.handshakeRefused)
    /// The neffos handshake (`M` → `A`) did not complete in time.
    public static let handshakeTimeout = NeffosError(.handshakeTimeout)
    /// A message is larger than the configured maximum.
    public static let messageTooLarge = NeffosError(.messageTooLarge)
    /// A namespace, room or event name contains the protocol's escape text
    /// `@%!semicolon@%!` in a way no neffos peer could decode back.
    public static let unrepresentableName = NeffosError(.unrepresentableName)
    /// A configuration value is invalid; ``detail`` says which and why.
    public static let invalidConfiguration = NeffosError(.invalidConfiguration)
    /// A client could not open its WebSocket connection; ``underlying`` holds the cause.
    public static let dialFailed = NeffosError(.dialFailed)
    /// The client lost its connection and is reconnecting; retry once it is connected again.
    public static let reconnecting = NeffosError(.reconnecting)
    /// A request would take a connection past one of the server's bounds (rooms per
    /// connection, the length of a name…); ``detail`` says which. Wire text: `limit exceeded`.
    public static let limitExceeded = NeffosError(.limitExceeded)

    /// A copy of this error carrying `detail`.
    public func with(detail: String) -> NeffosError {
        var copy = self
        copy.detail = detail
        return copy
    }

    /// A copy of this error carrying the error that caused it.
    public func with(underlying: any Error) -> NeffosError {
        var copy = self
        copy.underlying = underlying
        return copy
    }

    /// The stable text of this kind of error. For the four wire errors it is the exact text
    /// neffos peers send.
    public var text: String {
        switch code {
        case .badNamespace: "bad namespace"
        case .badRoom: "bad room"
        case .writeClosed: "write closed"
        case .invalidPayload: "invalid payload"
        case .timeout: "timed out"
        case .handshakeRefused: "connection refused by the server"
        case .handshakeTimeout: "handshake timed out"
        case .messageTooLarge: "message too large"
        case .unrepresentableName: "name cannot be encoded"
        case .invalidConfiguration: "invalid configuration"
        case .dialFailed: "could not connect"
        case .reconnecting: "reconnecting"
        case .limitExceeded: "limit exceeded"
        }
    }

    private var hint: String? {
        switch code {
        case .badNamespace:
            "declare the namespace on both sides, and connect to it before emitting"
        case .badRoom: "join the room before emitting to it or leaving it"
        case .writeClosed: "the connection is closed; dial again"
        case .invalidPayload: nil
        case .timeout: "no reply arrived before the deadline; check the remote handler replies"
        case .handshakeRefused: nil
        case .handshakeTimeout: "the peer did not complete the neffos handshake; is it a neffos peer?"
        case .messageTooLarge: "raise the maximum message size or send less"
        case .unrepresentableName:
            "names must not contain the text \"@%!semicolon@%!\", which the protocol reserves"
        case .invalidConfiguration: nil
        case .dialFailed: "check the URL and that the server is running"
        case .reconnecting: "wait for the client to reconnect (see Client.states)"
        case .limitExceeded: "the server bounds what one connection may hold; see its configuration"
        }
    }

    /// The full, log-safe description: text, detail, cause and what to do.
    public var description: String {
        var parts = text
        if let detail { parts += ": \(detail)" }
        if let underlying { parts += " (\(underlying))" }
        if let hint { parts += "; \(hint)" }
        return parts
    }

    /// Errors of the same kind are equal, whatever their detail.
    public static func == (lhs: NeffosError, rhs: NeffosError) -> Bool { lhs.code == rhs.code }

    /// Matches an error of this kind in a `catch` or a `switch`, whatever its detail:
    ///
    /// ```swift
    /// do {
    ///     _ = try await ns.ask("price", "AAPL")
    /// } catch NeffosError.timeout {
    ///     // nobody answered in time
    /// }
    /// ```
    public static func ~= (pattern: NeffosError, value: any Error) -> Bool {
        (value as? NeffosError) == pattern
    }

    /// Hashes the kind of error only, consistently with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The text that represents `error` on the wire.
    ///
    /// A ``NeffosError`` is written as its ``text`` (so `bad namespace` stays exact), a
    /// ``RemoteError`` as the text it arrived with, and any other error as
    /// `String(describing:)` (its `description` when it is `CustomStringConvertible`).
    public static func wireText(of error: any Error) -> String {
        switch error {
        case let error as NeffosError: error.text
        case let error as RemoteError: error.text
        default: String(describing: error)
        }
    }
}

/// An error received from the remote side whose text matches no known error.
///
/// Register the errors your application sends (see ``KnownErrors``) to receive them as their
/// own values instead.
public struct RemoteError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error text, as it arrived.
    public let text: String

    /// Creates a remote error with the text that arrived.
    public init(_ text: String) { self.text = text }

    /// The error text.
    public var description: String { text }
}
