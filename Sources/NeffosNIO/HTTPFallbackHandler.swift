import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOSSL
import Neffos

/// A plain HTTP response, for the pages a ``WebSocketListener`` serves next to its WebSocket
/// endpoint (see ``HTTPPageResponder``).
public struct HTTPPage: Sendable {
    /// The status and header fields (`Content-Length` is added).
    public var head: HTTPResponse
    /// The body.
    public var body: ByteBuffer

    /// A response with a status, a body and a content type.
    public init(status: HTTPResponse.Status = .ok, contentType: String? = nil, body: ByteBuffer = ByteBuffer(), headerFields: HTTPFields = [:]) {
        self.head = HTTPResponse(status: status, headerFields: headerFields)
        if let contentType { self.head.headerFields[.contentType] = contentType }
        self.body = body
    }

    /// A UTF-8 text response.
    public static func text(_ text: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> HTTPPage {
        HTTPPage(status: status, contentType: contentType, body: ByteBuffer(string: text))
    }
}

/// Answers the HTTP requests to a ``WebSocketListener`` that are not WebSocket upgrades (a
/// browser page, a health check). Return `nil` to let the listener answer (404, or the
/// WebSocket endpoint's rules).
public typealias HTTPPageResponder = @Sendable (_ request: HTTPRequest) -> HTTPPage?

/// Answers the HTTP requests that were not upgraded: the application's pages, then the
/// WebSocket endpoint's rules (HEAD → 302, other methods → 405), then 404.
final class HTTPFallbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "neffos.http-fallback"

    private let server: Server
    private let path: String?
    private let responder: HTTPPageResponder?
    private var head: HTTPRequestHead?

    init(server: Server, path: String?, responder: HTTPPageResponder?) {
        self.server = server
        self.path = path
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        if let responder, let request = Self.request(head), let response = responder(request) {
            send(response, context: context, head: head)
            return
        }
        let requestPath = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == nil || requestPath == path else {
            send(.text("not found\n", status: .notFound), context: context, head: head)
            return
        }
        switch head.method {
        case .HEAD:
            send(HTTPPage(status: .found), context: context, head: head)
        case .GET:
            if case .refuse(let status, let error) = UpgradeVerdict(head: head, server: server, path: path) {
                UpgradeVerdict.recordRefusal(error.detail ?? "", on: server)
                var response = HTTPPage.text("\(status.reasonPhrase): \(error.detail ?? "")\n", status: .init(code: Int(status.code)))
                if status == .upgradeRequired { response.head.headerFields[.secWebSocketVersion] = "13" }
                send(response, context: context, head: head, close: true)
            } else {
                send(.text("this endpoint speaks WebSocket (neffos)\n", status: .badRequest), context: context, head: head)
            }
        default:
            var response = HTTPPage.text("Method Not Allowed\n", status: .methodNotAllowed)
            response.head.headerFields[.allow] = "GET"
            response.head.headerFields[.xContentTypeOptions] = "nosniff"
            send(response, context: context, head: head)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request NIO could not parse (headers too large, not HTTP): its error handler has
        // answered 400; nothing more can be read from this connection.
        if error is HTTPParserError {
            server.countRefusedConnection()
            context.close(promise: nil)
            return
        }
        // A TLS handshake that failed (a client that does not trust the chain, or does not
        // speak TLS): NIOSSL closes the connection; it is counted as refused.
        if let error = error as? NIOSSLError, case .handshakeFailed = error {
            server.countRefusedConnection()
            server.logger.debug("TLS handshake failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    /// The request a responder sees (`nil` for a method swift-http-types refuses).
    private static func request(_ head: HTTPRequestHead) -> HTTPRequest? {
        guard let method = HTTPRequest.Method(head.method.rawValue) else { return nil }
        return HTTPRequest(
            method: method, scheme: "http", authority: head.headers.first(name: "host"), path: head.uri,
            headerFields: HTTPFields(head.headers, splitCookie: false))
    }

    private func send(_ response: HTTPPage, context: ChannelHandlerContext, head: HTTPRequestHead, close: Bool = false) {
        var headers = HTTPHeaders(response.head.headerFields)
        headers.replaceOrAdd(name: "Content-Length", value: "\(response.body.readableBytes)")
        let keepAlive = head.isKeepAlive && !close
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.head.status.code, reasonPhrase: response.head.status.reasonPhrase)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD && response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let loopBound = context.loopBound
            done.whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }
}
