import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Neffos

/// Where a `ws://` or `wss://` URL points.
package struct WebSocketURL: Sendable, Equatable {
    /// Whether the URL is `wss://` (or `https://`): TLS over TCP.
    package var isSecure: Bool
    /// The host to connect to.
    package var host: String
    /// The TCP port.
    package var port: Int
    /// Path and query, as sent in the request line.
    package var requestURI: String
    /// The `Host` header.
    package var hostHeader: String

    /// Parses a `ws[s]://host[:port][/path][?query]` URL (`http` and `https` are taken as
    /// `ws` and `wss`).
    ///
    /// - Throws: ``NeffosError/dialFailed`` for anything else.
    package init(_ text: String) throws(NeffosError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw NeffosError.dialFailed.with(detail: "\"\(text)\" is not a URL")
        }
        switch scheme {
        case "ws", "http": isSecure = false
        case "wss", "https": isSecure = true
        default:
            throw NeffosError.dialFailed.with(detail: "unsupported scheme \"\(scheme)\" in \"\(text)\"; use ws://host:port/path or wss://")
        }
        guard let host = components.host, !host.isEmpty else {
            throw NeffosError.dialFailed.with(detail: "\"\(text)\" has no host")
        }
        self.host = host
        self.port = components.port ?? (isSecure ? 443 : 80)
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        self.requestURI = components.percentEncodedQuery.map { "\(path)?\($0)" } ?? path
        self.hostHeader = components.port.map { "\(host):\($0)" } ?? host
    }

    /// The URL, for messages.
    package var text: String { "\(isSecure ? "wss" : "ws")://\(hostHeader)\(requestURI)" }
}

/// Opens WebSocket connections: TCP connect, HTTP upgrade, then the caller's handlers.
package enum WebSocketDialer {
    /// Connects to `url`, performs the upgrade with `headers`, and installs the frame
    /// aggregator plus the handler `install` adds; with `validatesFrames`, a ``FrameValidator``
    /// before them (a real client's pipeline; test tools that must see what the server sends,
    /// valid or not, go without).
    ///
    /// With `tls`, the connection is TLS first (a `wss://` URL); without it, a `wss://` URL is
    /// refused.
    ///
    /// - Throws: ``NeffosError/dialFailed`` carrying the cause (refused connection, a
    ///   ``TLSFailure``, HTTP status instead of 101, timeout).
    package static func connect(
        to url: WebSocketURL,
        tls: ClientTLSSession? = nil,
        headers: [(name: String, value: String)],
        group: any EventLoopGroup,
        timeout: Duration,
        maxFrameSize: Int,
        maxMessageSize: Int,
        outboxBytes: Int = 1 << 20,
        localAddress: SocketAddress? = nil,
        validatesFrames: Bool = false,
        install: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> any Channel {
        guard !url.isSecure || tls != nil else {
            throw NeffosError.dialFailed.with(detail: "\(url.text) needs TLS, which this dialler was not given")
        }
        let loop = group.next()
        let upgraded = loop.makePromise(of: Void.self)
        let upgrader = NIOWebSocketClientUpgrader(
            maxFrameSize: max(125, min(maxFrameSize, Int(UInt32.max))),
            automaticErrorHandling: true,
            upgradePipelineHandler: { channel, _ in
                do {
                    let catcher = try channel.pipeline.syncOperations.context(name: UpgradeFailureCatcher.name)
                    channel.pipeline.syncOperations.removeHandler(context: catcher, promise: nil)
                    if validatesFrames {
                        try channel.pipeline.syncOperations.addHandler(FrameValidator(peerIsClient: false))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0,
                            maxAccumulatedFrameCount: 1 << 16,
                            maxAccumulatedFrameSize: max(1, maxMessageSize)))
                    try install(channel)
                    // Done only now: NIO calls the upgrade's completion handler before this
                    // pipeline handler, when our handlers are not installed yet.
                    upgraded.succeed()
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            })
        let channel: any Channel
        do {
            var bootstrap = ClientBootstrap(group: loop)
            if let localAddress {
                bootstrap = bootstrap.channelOption(.socketOption(.so_reuseaddr), value: 1).bind(to: localAddress)
            }
            channel = try await bootstrap
                .connectTimeout(timeout.timeAmount)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.writeBufferWaterMark, value: .init(low: max(1024, outboxBytes) / 2, high: max(1024, outboxBytes)))
                .channelInitializer { channel in
                    do {
                        if let tls { try channel.pipeline.syncOperations.addHandler(try tls.makeHandler()) }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(
                            leftOverBytesStrategy: .forwardBytes,
                            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                        try channel.pipeline.syncOperations.addHandler(
                            UpgradeFailureCatcher(promise: upgraded), name: UpgradeFailureCatcher.name)
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                .connect(host: url.host, port: url.port).get()
        } catch {
            upgraded.fail(error)
            throw NeffosError.dialFailed.with(detail: url.text).with(underlying: error)
        }
        var requestHeaders = HTTPHeaders([("Host", url.hostHeader)])
        for (name, value) in headers { requestHeaders.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: url.requestURI, headers: requestHeaders)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = loop.scheduleTask(in: timeout.timeAmount) {
            upgraded.fail(NeffosError.handshakeTimeout.with(detail: "no WebSocket upgrade within \(timeout)"))
        }
        channel.closeFuture.whenComplete { _ in
            upgraded.fail(NeffosError.dialFailed.with(detail: "the server closed the connection during the upgrade"))
        }
        do {
            try await upgraded.futureResult.get()
            timer.cancel()
            return channel
        } catch {
            timer.cancel()
            try? await channel.close()
            // A failed TLS check closes the connection too: the check's reason is the cause.
            if let failure = tls?.failureCause(of: error) {
                throw NeffosError.dialFailed.with(detail: url.text).with(underlying: failure)
            }
            if let error = error as? NeffosError, error == .dialFailed || error == .handshakeTimeout { throw error }
            throw NeffosError.dialFailed.with(detail: url.text).with(underlying: error)
        }
    }
}

/// Fails the dial when the server answers the upgrade with anything but 101.
private final class UpgradeFailureCatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    static let name = "neffos.upgrade-failure"

    private let promise: EventLoopPromise<Void>
    private var status: HTTPResponseStatus?

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body:
            break
        case .end:
            let status = self.status ?? .badRequest
            promise.fail(NeffosError.dialFailed.with(detail: "the server answered HTTP \(status.code) \(status.reasonPhrase) instead of upgrading"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTPClientUpgradeError, status != nil {
            return  // The response itself follows; its status makes the better error.
        }
        promise.fail(error)
        context.close(promise: nil)
    }
}
