/// What went wrong starting, watching or talking to a child process (a `nats-server`, an
/// example, the tool): the text says what happened and what to do.
public struct ProcessError: Error, CustomStringConvertible, Equatable {
    /// What happened.
    public let description: String

    /// An error with `description`.
    public init(description: String) { self.description = description }

    /// Nothing came in time.
    public static func timedOut(_ what: String) -> ProcessError { .init(description: "timed out waiting for \(what)") }
}
