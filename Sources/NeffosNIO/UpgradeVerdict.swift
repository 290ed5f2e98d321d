import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import Neffos

/// Why an HTTP request to the listener is, or is not, upgraded.
package enum UpgradeVerdict {
    case upgrade
    /// Not a WebSocket request for us: the HTTP handler answers.
    case notOurs
    case refuse(HTTPResponseStatus, NeffosError)

    init(head: HTTPRequestHead, server: Server, path: String?) {
        if let path, head.uri.utf8.prefix(while: { $0 != UInt8(ascii: "?") }).elementsEqual(path.utf8) == false {
            self = .notOurs
            return
        }
        guard head.method == .GET else {
            self = .notOurs
            return
        }
        let isUpgrade = head.headers.contains { $0.name.isASCIICaseInsensitive("upgrade") && $0.value.isASCIICaseInsensitive("websocket") }
        guard isUpgrade else {
            self = .notOurs
            return
        }
        if let refusal = Self.refusal(of: head, server: server) {
            self = .refuse(HTTPResponseStatus(statusCode: refusal.status.code), NeffosError.invalidConfiguration.with(detail: refusal.reason))
            return
        }
        self = .upgrade
    }

    /// Why a WebSocket upgrade request is refused (RFC 6455 §4.2.1, the server's bounds and
    /// origin policy), or `nil` when it may upgrade.
    private static func refusal(of head: HTTPRequestHead, server: Server) -> (status: HTTPResponse.Status, reason: String)? {
        protocolRefusal(of: head) ?? serverRefusal(uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, server: server)
    }

    /// Why a request is not a valid WebSocket upgrade (RFC 6455 §4.2.1), or `nil`.
    ///
    /// One pass over the headers, comparing names without copying them: this runs per
    /// connect.
    package static func protocolRefusal(of head: HTTPRequestHead) -> (status: HTTPResponse.Status, reason: String)? {
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return (.badRequest, "a WebSocket upgrade needs HTTP/1.1 or later, not \(head.version)")
        }
        var hosts = 0
        var connectionUpgrade = false
        var versions: [String] = []
        var keys = 0
        var validKey = false
        for (name, value) in head.headers {
            if name.isASCIICaseInsensitive("host") {
                hosts += 1
            } else if name.isASCIICaseInsensitive("connection") {
                connectionUpgrade = connectionUpgrade
                    || value.utf8.split(separator: UInt8(ascii: ",")).contains { Substring($0).trimmingASCIISpaces.isASCIICaseInsensitive("upgrade") }
            } else if name.isASCIICaseInsensitive("sec-websocket-version") {
                versions.append(value)
            } else if name.isASCIICaseInsensitive("sec-websocket-key") {
                keys += 1
                validKey = isWebSocketKey(value)
            }
        }
        guard hosts == 1 else {
            return (.badRequest, "the upgrade request needs one Host header")
        }
        guard connectionUpgrade else {
            return (.badRequest, "the upgrade request has no \"Connection: Upgrade\" header")
        }
        guard versions == ["13"] else {
            return (.upgradeRequired, "unsupported Sec-WebSocket-Version \(versions); this server speaks 13")
        }
        guard keys == 1, validKey else {
            return (.badRequest, "Sec-WebSocket-Key must be the base64 text of 16 bytes")
        }
        return nil
    }

    /// Whether `value` (spaces around it ignored) is the base64 text of 16 bytes: 22 characters
    /// of the base64 alphabet and `==` (RFC 6455 §4.1).
    package static func isWebSocketKey(_ value: String) -> Bool {
        let key = value.trimmingASCIISpaces.utf8
        guard key.count == 24, key.suffix(2).elementsEqual("==".utf8) else { return false }
        return key.prefix(22).allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                true
            default:
                false
            }
        }
    }

    /// Counts, logs and reports (``Server/Configuration/onUpgradeError``) a refused upgrade.
    package static func recordRefusal(_ reason: String, on server: Server) {
        server.countRefusedConnection()
        server.logger.debug("upgrade refused: \(reason)")
        server.configuration.onUpgradeError?(NeffosError.invalidConfiguration.with(detail: reason))
    }

    /// Why the server refuses an upgrade that is valid WebSocket: its request-header bound, its
    /// origin policy, its shutdown. Every transport applies it (the listener, the mounts).
    package static func serverRefusal(
        uri: String, headers: [(name: String, value: String)], server: Server
    ) -> (status: HTTPResponse.Status, reason: String)? {
        let transport = server.configuration.transport
        let headerBytes = uri.utf8.count + headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes <= transport.maxRequestHeaderBytes else {
            return (.requestHeaderFieldsTooLarge,
                    "the request line and headers take \(headerBytes) bytes; the limit is \(transport.maxRequestHeaderBytes) (transport.maxRequestHeaderBytes)")
        }
        let origin = headers.first { $0.name.isASCIICaseInsensitive("origin") }?.value
        let host = headers.first { $0.name.isASCIICaseInsensitive("host") }?.value
        let originAllowed = transport.checkOrigin.map { $0(origin) } ?? transport.allowedOrigins.allows(origin: origin, host: host)
        guard originAllowed else {
            return (.forbidden, "origin \(origin ?? "none") refused (transport.allowedOrigins)")
        }
        guard !server.isShuttingDown else {
            return (.serviceUnavailable, "the server is shutting down")
        }
        return nil
    }
}

extension UpgradeRequest {
    /// The request as the core sees it, from NIO's head: method, path with query, headers
    /// (with the `X-Websocket-Header-*` query parameters folded in), and the peer's address.
    package init(head: HTTPRequestHead, remoteAddress: SocketAddress?, identity: (any Sendable)? = nil) {
        if head.uri.hasPrefix("/") {
            // The usual origin form, packed straight from NIO's head (this runs per connect).
            self.init(
                method: head.method.rawValue, scheme: "http", authority: head.headers.first(name: "host"), path: head.uri,
                fields: head.headers.lazy.map { ($0.name, $0.value) }, peer: remoteAddress.map(PeerAddress.init), identity: identity)
        } else {
            let request = (try? HTTPRequest(head, secure: false, splitCookie: false))
                ?? HTTPRequest(method: .get, scheme: nil, authority: nil, path: head.uri, headerFields: HTTPFields(head.headers, splitCookie: false))
            self.init(request, remoteAddress: remoteAddress.map { PeerAddress($0).description }, identity: identity)
        }
    }
}

extension String {
    /// Whether this equals `other` ignoring ASCII case, without copying either.
    func isASCIICaseInsensitive(_ other: String) -> Bool {
        ASCII.equalsIgnoringCase(utf8, other.utf8)
    }

    /// This without the spaces and tabs around it.
    var trimmingASCIISpaces: Substring { self[...].trimmingASCIISpaces }
}

extension Substring {
    /// Whether this equals `other` ignoring ASCII case, without copying either.
    func isASCIICaseInsensitive(_ other: String) -> Bool {
        ASCII.equalsIgnoringCase(utf8, other.utf8)
    }

    /// This without the spaces and tabs around it (looked for in its bytes, not its
    /// characters).
    var trimmingASCIISpaces: Substring {
        let bytes = utf8
        let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}

extension PeerAddress {
    /// `address` kept as numbers when it is IPv4; otherwise `[host]:port` (IPv6) or NIO's text.
    init(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            let port = UInt16(bigEndian: v4.address.sin_port)
            self = .ipv4(UInt32(bigEndian: v4.address.sin_addr.s_addr), port: port)
        case .v6:
            if let ip = address.ipAddress, let port = address.port {
                self = .text("[\(ip)]:\(port)")
            } else {
                self = .text("\(address)")
            }
        case .unixDomainSocket:
            self = .text(address.pathname ?? "\(address)")
        }
    }
}
