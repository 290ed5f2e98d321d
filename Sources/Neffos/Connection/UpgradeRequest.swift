import HTTPTypes

/// The HTTP request that opened a WebSocket connection, as the server's hooks see it
/// (``Server/Configuration/idGenerator``, ``Server/Configuration/onConnect``, ``Conn/request``).
///
/// Whatever transport brought the connection (the standalone `WebSocketListener`, a mount in
/// Hummingbird or Vapor, or a transport of your own) fills it the same way.
public struct UpgradeRequest: Sendable {
    /// The request line and header fields, packed into one buffer (``PackedRequest``): a
    /// connection keeps its request for life, and as `HTTPRequest` values they would take about
    /// a kilobyte more per connection, in a dozen allocations.
    private var packed: PackedRequest

    /// The request as it arrived: method, path with its query, and the header fields as sent.
    ///
    /// Built when read (the request is kept packed): read it once and keep the value when you
    /// need several of its parts.
    public var http: HTTPRequest {
        get { packed.request() }
        set { packed = PackedRequest(newValue, folded: packed.extraFields(), extraReplaces: packed.extraReplaces) }
    }
    /// The header fields: the request's, followed by one field per `X-Websocket-Header-<Name>`
    /// query parameter (named `<Name>`; how browsers, which cannot set headers on a WebSocket,
    /// send them with neffos.js). Look one up with ``header(_:)``, which reads the packed
    /// fields without building this collection.
    public var headerFields: HTTPFields {
        get { packed.fields() }
        set { packed = PackedRequest(packed.request(), folded: Array(newValue), extraReplaces: true) }
    }
    /// The peer's address, as text, if known: `host:port` (`[host]:port` for IPv6) from the
    /// bundled transports.
    public var remoteAddress: String? {
        get { peer?.description }
        set { peer = newValue.map(PeerAddress.text) }
    }
    /// ``remoteAddress``, kept as numbers when it is an IPv4 address: as text it was a
    /// string allocation per connection (and formatting per connect).
    private var peer: PeerAddress?
    /// What the application's middleware established about the peer before the upgrade (an
    /// authenticated user, a tenant), set by the transport: the Hummingbird and Vapor mounts
    /// set it from their request-context closure. Read it in the ID generator or the connect hook
    /// with ``identity(as:)``.
    public var identity: (any Sendable)? {
        get { identityBox?.value }
        set { identityBox = newValue.map(IdentityBox.init) }
    }
    /// ``identity``, boxed: most connections have none, and inline it took 40 bytes of each.
    private var identityBox: IdentityBox?

    private final class IdentityBox: Sendable {
        let value: any Sendable
        init(_ value: any Sendable) { self.value = value }
    }

    /// Describes a request.
    ///
    /// - Parameters:
    ///   - http: the HTTP request (method, path with query, header fields as sent).
    ///   - remoteAddress: the peer's address, if known.
    ///   - identity: what middleware established about the peer, if anything.
    ///   - foldingQueryHeaders: whether `X-Websocket-Header-<Name>` query parameters become
    ///     header fields (the default, as neffos does).
    public init(_ http: HTTPRequest, remoteAddress: String? = nil, identity: (any Sendable)? = nil, foldingQueryHeaders: Bool = true) {
        self.peer = remoteAddress.map(PeerAddress.text)
        self.identityBox = identity.map(IdentityBox.init)
        var folded: [HTTPField] = []
        if foldingQueryHeaders, let query = Self.query(of: http.path ?? "/") {
            folded = Self.headersFromQuery(query).compactMap { name, value in
                HTTPField.Name(name).map { HTTPField(name: $0, value: value) }
            }
        }
        packed = PackedRequest(http, folded: folded)
    }

    /// A request from its parts as a transport read them, packed without building an
    /// `HTTPRequest` on the way (the listener's, per connect): `fields` are the header fields
    /// as sent, names as received; `X-Websocket-Header-<Name>` query parameters are folded in.
    package init(
        method: String, scheme: String?, authority: String?, path: String,
        fields: some Sequence<(name: String, value: String)>, peer: PeerAddress?, identity: (any Sendable)? = nil
    ) {
        self.peer = peer
        self.identityBox = identity.map(IdentityBox.init)
        let folded = Self.query(of: path).map(Self.headersFromQuery) ?? []
        packed = PackedRequest(method: method, scheme: scheme, authority: authority, path: path, fields: fields, folded: folded)
    }

    /// A `GET` request for `path` with `headers`, for tests and transports without HTTP.
    public init(path: String = "/", headers: [(name: String, value: String)] = [], remoteAddress: String? = nil) {
        var fields = HTTPFields()
        for (name, value) in headers {
            guard let name = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: name, value: value))
        }
        self.init(HTTPRequest(method: .get, scheme: nil, authority: nil, path: path, headerFields: fields), remoteAddress: remoteAddress)
    }

    /// The request path, without the query.
    public var path: String {
        let full = packed.path
        return full.firstIndex(of: "?").map { String(full[..<$0]) } ?? full
    }

    /// The query (the text after `?`), if the request had one.
    public var query: String? { Self.query(of: packed.path) }

    /// The first value of header `name` (case-insensitive), if present; the
    /// `X-Websocket-Header-*` query parameters count as headers. Several fields of that name
    /// read as one value, joined with `, ` (`; ` for `Cookie`), as `HTTPFields` does.
    public func header(_ name: String) -> String? {
        packed.value(of: name)
    }

    /// The ``identity`` as a `T`, or `nil` when there is none or it is of another type.
    public func identity<T: Sendable>(as type: T.Type = T.self) -> T? {
        identity as? T
    }

    private static func query(of path: String) -> String? {
        path.firstIndex(of: "?").map { String(path[path.index(after: $0)...]) }
    }

    /// The headers carried by `X-Websocket-Header-<Name>=<value>` query parameters, names in
    /// Go's canonical form (`x-username` → `X-Username`).
    package static func headersFromQuery(_ query: String) -> [(name: String, value: String)] {
        let prefix = "x-websocket-header-"
        var result: [(name: String, value: String)] = []
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let rawKey = kv.first, let key = decode(String(rawKey)) else { continue }
            guard key.count > prefix.count, key.lowercased().hasPrefix(prefix) else { continue }
            let value = kv.count == 2 ? decode(String(kv[1])) ?? "" : ""
            result.append((name: canonical(String(key.dropFirst(prefix.count))), value: value))
        }
        return result
    }

    /// Form decoding: `+` is a space, `%XX` a byte; `nil` for a bad escape or bytes that are
    /// not UTF-8.
    private static func decode(_ component: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(component.utf8.count)
        var input = component.utf8.makeIterator()
        while let byte = input.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = input.next().flatMap(hexValue), let low = input.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func canonical(_ name: String) -> String {
        name.split(separator: "-", omittingEmptySubsequences: false)
            .map { $0.prefix(1).uppercased() + $0.dropFirst().lowercased() }
            .joined(separator: "-")
    }
}

/// A peer's address as a transport knows it: an IPv4 address and port as numbers (formatted
/// when read), anything else as text.
package enum PeerAddress: Sendable, Equatable, CustomStringConvertible {
    /// An IPv4 address (its four bytes, most significant first) and port.
    case ipv4(UInt32, port: UInt16)
    /// An address as text.
    case text(String)

    package var description: String {
        switch self {
        case .ipv4(let address, let port):
            "\(address >> 24).\((address >> 16) & 0xFF).\((address >> 8) & 0xFF).\(address & 0xFF):\(port)"
        case .text(let text):
            text
        }
    }
}
