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
        let requestPath = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if let path, requestPath != path {
            self = .notOurs
            return
        }
        guard head.method == .GET else {
            self = .notOurs
            return
        }
        let isUpgrade = head.headers["upgrade"].contains { $0.lowercased() == "websocket" }
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
    package static func protocolRefusal(of head: HTTPRequestHead) -> (status: HTTPResponse.Status, reason: String)? {
        let headers = head.headers
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return (.badRequest, "a WebSocket upgrade needs HTTP/1.1 or later, not \(head.version)")
        }
        guard headers["host"].count == 1 else {
            return (.badRequest, "the upgrade request needs one Host header")
        }
        let connectionTokens = headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connectionTokens.contains("upgrade") else {
            return (.badRequest, "the upgrade request has no \"Connection: Upgrade\" header")
        }
        guard headers["sec-websocket-version"] == ["13"] else {
            return (.upgradeRequired, "unsupported Sec-WebSocket-Version \(headers["sec-websocket-version"]); this server speaks 13")
        }
        let keys = headers["sec-websocket-key"]
        guard keys.count == 1, let key = Data(base64Encoded: keys[0].trimmingCharacters(in: .whitespaces)), key.count == 16 else {
            return (.badRequest, "Sec-WebSocket-Key must be the base64 text of 16 bytes")
        }
        return nil
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
        let origin = headers.first { $0.name.lowercased() == "origin" }?.value
        let host = headers.first { $0.name.lowercased() == "host" }?.value
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
        let request: HTTPRequest
        if head.uri.hasPrefix("/"), let method = HTTPRequest.Method(head.method.rawValue) {
            // The usual origin form, converted without a URL parse (this runs per connect).
            request = HTTPRequest(
                method: method, scheme: "http", authority: head.headers.first(name: "host"), path: head.uri,
                headerFields: HTTPFields(head.headers, splitCookie: false))
        } else {
            request = (try? HTTPRequest(head, secure: false, splitCookie: false))
                ?? HTTPRequest(method: .get, scheme: nil, authority: nil, path: head.uri, headerFields: HTTPFields(head.headers, splitCookie: false))
        }
        self.init(request, remoteAddress: remoteAddress.map { "\($0)" }, identity: identity)
    }
}
