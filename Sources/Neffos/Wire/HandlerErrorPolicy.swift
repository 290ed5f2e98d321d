import Logging

/// What the peer receives when a handler (or the on-connect hook) throws.
///
/// neffos sends the error's text as is, and so do we by default: convenient, and what neffos
/// peers expect, but an error from deep inside your code (a database error, a file path) then
/// reaches every client that triggers it. With ``generic(_:)``, only the errors meant for the
/// wire cross it: ``NeffosError``, ``RemoteError`` and the errors registered in the
/// configuration's ``KnownErrors``; any other is replaced by a fixed text and logged (level
/// `notice`, with the error) on this side.
public struct HandlerErrorPolicy: Sendable {
    private enum Kind: Sendable {
        case describe
        case generic(String)
    }

    private let kind: Kind

    /// The error's own text (``NeffosError/wireText(of:)``), as neffos sends it. The default.
    public static let describe = HandlerErrorPolicy(kind: .describe)

    /// `text` in place of any error not meant for the wire; the error itself is logged.
    public static func generic(_ text: String = "internal error") -> HandlerErrorPolicy {
        HandlerErrorPolicy(kind: .generic(text))
    }

    /// The error to send for `error`, thrown by a handler of `event`.
    func wireError(for error: any Error, event: EventName, known: KnownErrors, logger: Logger) -> any Error {
        guard case .generic(let text) = kind else { return error }
        if error is NeffosError || error is RemoteError { return error }
        if !(known.resolve(NeffosError.wireText(of: error)) is RemoteError) { return error }
        logger.notice("a handler threw; the peer gets a generic error", metadata: ["event": "\(event)", "error": "\(error)"])
        return RemoteError(text)
    }
}
