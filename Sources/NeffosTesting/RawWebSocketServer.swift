import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Neffos
import Synchronization

/// A bare WebSocket server for client tests: it upgrades every request and hands each
/// connection to the test as a ``RawWebSocket``, so the test sees the client's frames byte for
/// byte and scripts the server's side (as a neffos Go server would answer).
///
/// ```swift
/// let server = try await RawWebSocketServer.start()
/// async let client = Client.dial(server.url, namespaces: ["default": Events()])
/// let peer = try await server.accept()
/// #expect(try await peer.nextText() == "M")
/// try await peer.send("Aclient-1")
/// ```
public final class RawWebSocketServer: Sendable {
    private let channel: any Channel
    private let accepted: Inbox<Accepted>

    /// One accepted connection: the socket and the request that opened it.
    public struct Accepted: Sendable {
        /// The connection.
        public let socket: RawWebSocket
        /// The upgrade request's path and query.
        public let uri: String
        /// The upgrade request's headers.
        public let headers: [(name: String, value: String)]

        /// The first value of header `name` (case-insensitive).
        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    private init(channel: any Channel, accepted: Inbox<Accepted>) {
        self.channel = channel
        self.accepted = accepted
    }

    /// The bound port.
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// `ws://127.0.0.1:<port>/`.
    public var url: String { "ws://127.0.0.1:\(port)/" }

    /// Starts listening on `host`, port `port` (`0` picks a free one).
    public static func start(
        host: String = "127.0.0.1", port: Int = 0,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RawWebSocketServer {
        let accepted = Inbox<Accepted>(what: "a connection")
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 1 << 24,
                    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture([:]) },
                    upgradePipelineHandler: { channel, head in
                        channel.eventLoop.makeCompletedFuture {
                            let inbox = FrameInbox(what: "a frame")
                            try channel.pipeline.syncOperations.addHandlers([
                                NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: 1 << 24),
                                RawFrameHandler(inbox: inbox, answerPings: true, masks: false),
                            ])
                            accepted.deliver(Accepted(
                                socket: RawWebSocket(channel: channel, inbox: inbox, masks: false),
                                uri: head.uri,
                                headers: head.headers.map { (name: $0.name, value: $0.value) }))
                        }
                    })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                }
            }
            .bind(host: host, port: port).get()
        return RawWebSocketServer(channel: channel, accepted: accepted)
    }

    /// The next connection, waiting up to `timeout`.
    public func accept(timeout: Duration = .seconds(5)) async throws -> Accepted {
        try await accepted.next(timeout: timeout)
    }

    /// Stops listening (accepted connections stay open until closed).
    public func stop() async {
        try? await channel.close()
    }
}
