/// The table that turns a received error text back into an error value.
///
/// Both sides of a neffos connection send errors as text. When an error frame arrives, its text
/// is looked up here: an exact match gives the registered value, then each resolver is asked in
/// registration order, and any other text becomes a ``RemoteError``.
///
/// The built-in wire errors (``NeffosError/badNamespace``, ``NeffosError/badRoom``,
/// ``NeffosError/writeClosed``, ``NeffosError/invalidPayload``) are always known. Register your
/// own on the server's and the client's configuration:
///
/// ```swift
/// enum ChatError: Error, CustomStringConvertible {
///     case muted
///     var description: String { "you are muted" }
/// }
/// var known = KnownErrors()
/// known.register(ChatError.muted)           // "you are muted" ⇄ ChatError.muted
/// known.register { text in                  // dynamic texts
///     text.hasPrefix("quota:") ? RemoteError(text) : nil
/// }
/// ```
public struct KnownErrors: Sendable {
    private var exact: [String: any Error]
    private var resolvers: [@Sendable (String) -> (any Error)?]

    /// A table with the built-in wire errors only.
    public init() {
        exact = [:]
        resolvers = []
        for error in [NeffosError.badNamespace, .badRoom, .writeClosed, .invalidPayload, .limitExceeded] {
            exact[error.text] = error
        }
    }

    /// A table with the built-in wire errors and `errors`.
    public init(_ errors: [any Error]) {
        self.init()
        for error in errors { register(error) }
    }

    /// The built-in wire errors only.
    public static let builtIn = KnownErrors()

    /// Registers `error`: a received error whose text equals ``NeffosError/wireText(of:)`` of
    /// `error` resolves to `error`. A later registration of the same text replaces the earlier.
    public mutating func register(_ error: any Error) {
        exact[NeffosError.wireText(of: error)] = error
    }

    /// Registers a resolver for dynamic texts: it returns the error for a text it recognises,
    /// or `nil`.
    public mutating func register(resolver: @escaping @Sendable (String) -> (any Error)?) {
        resolvers.append(resolver)
    }

    /// The error value for a received error `text`.
    public func resolve(_ text: String) -> any Error {
        if let known = exact[text] { return known }
        for resolver in resolvers {
            if let known = resolver(text) { return known }
        }
        return RemoteError(text)
    }
}
