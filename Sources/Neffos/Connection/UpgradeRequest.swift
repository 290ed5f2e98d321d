/// What the HTTP upgrade request said: headers (with the `X-Websocket-Header-*` query
/// parameters folded in), path and peer.
public struct UpgradeRequest: Sendable {
    /// The request path, without the query.
    public var path: String
    /// The request headers, names as sent; look them up with ``header(_:)``.
    public var headers: [(name: String, value: String)]
    /// The peer's address, as text, if known.
    public var remoteAddress: String?

    /// Creates a request description.
    public init(path: String = "/", headers: [(name: String, value: String)] = [], remoteAddress: String? = nil) {
        self.path = path
        self.headers = headers
        self.remoteAddress = remoteAddress
    }

    /// The first value of header `name` (case-insensitive), if present.
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first { $0.name.lowercased() == lowered }?.value
    }
}
