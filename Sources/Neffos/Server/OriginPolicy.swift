/// Which `Origin`s may open a WebSocket on a server (see
/// ``Server/TransportConfiguration/allowedOrigins``).
public struct OriginPolicy: Sendable {
    private enum Kind: Sendable {
        case any
        case sameOrigin(also: Set<String>)
    }

    private let kind: Kind

    /// Pages from the host (and port) the request is addressed to. The default.
    public static let sameOrigin = OriginPolicy(kind: .sameOrigin(also: []))

    /// Every origin: any page on the web may open a connection with the user's cookies. Use
    /// it only for a public, unauthenticated endpoint.
    public static let any = OriginPolicy(kind: .any)

    /// The same origin and these ones, written as browsers send them (`https://app.example`,
    /// `http://localhost:3000`).
    public static func only(_ origins: [String]) -> OriginPolicy {
        OriginPolicy(kind: .sameOrigin(also: Set(origins.map { Self.normalized($0) })))
    }

    /// Whether a request with `origin` (`nil`: no `Origin` header) addressed to `host` (its
    /// `Host` header) may open a WebSocket.
    public func allows(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        switch kind {
        case .any:
            return true
        case .sameOrigin(let also):
            let normalized = Self.normalized(origin)
            if also.contains(normalized) { return true }
            guard let host, let parsed = Self.parse(normalized) else { return false }
            let (requestHost, requestPort) = Self.split(host.lowercased())
            guard requestHost == parsed.host else { return false }
            // A Host without a port is the default port of whatever scheme the client used.
            return requestPort.map { $0 == parsed.port } ?? (parsed.port == 80 || parsed.port == 443)
        }
    }

    private static func normalized(_ origin: String) -> String {
        var text = origin.lowercased()
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }

    /// `scheme://host[:port]` as host and port (the scheme's default when absent).
    private static func parse(_ origin: String) -> (host: String, port: Int)? {
        let parts = origin.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0]
        let (host, port) = split(String(parts[1]))
        guard !host.isEmpty else { return nil }
        let defaultPort = (scheme == "https" || scheme == "wss") ? 443 : 80
        return (host, port ?? defaultPort)
    }

    /// `host[:port]` (IPv6 in brackets) as host and port.
    private static func split(_ hostPort: String) -> (String, Int?) {
        if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
            let host = String(hostPort[...close])
            let rest = hostPort[hostPort.index(after: close)...]
            return (host, rest.hasPrefix(":") ? Int(rest.dropFirst()) : nil)
        }
        guard let colon = hostPort.lastIndex(of: ":") else { return (hostPort, nil) }
        return (String(hostPort[..<colon]), Int(hostPort[hostPort.index(after: colon)...]))
    }
}
