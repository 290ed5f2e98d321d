import NIOCore
import NIOPosix
import Synchronization

/// Writes `request` to 127.0.0.1:`port` and collects everything until the server closes
/// (at most 5 s).
func rawTCP(_ port: Int, _ request: String) async throws -> String {
    let collected = Collector()
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collected) }
        }
        .connect(host: "127.0.0.1", port: port).get()
    try await channel.writeAndFlush(ByteBuffer(string: request))
    let timeout = channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
    try? await channel.closeFuture.get()
    timeout.cancel()
    return collected.text
}

final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let buffer = Mutex(ByteBuffer())
    var text: String { buffer.withLock { String(buffer: $0) } }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.withLock { _ = $0.writeBuffer(&incoming) }
    }
}
