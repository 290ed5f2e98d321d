import NIOCore
import Neffos
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes `request` to 127.0.0.1:`port` and collects everything until the server closes
/// (at most 5 s).
func rawTCP(_ port: Int, _ request: String) async throws -> String {
    try await rawTCPSession(port, request).text
}

/// Writes `request` to 127.0.0.1:`port` and collects everything until the server closes,
/// `deadline` passes, or what was collected satisfies `enough` (then this side closes); says
/// whether the server closed first.
func rawTCPSession(
    _ port: Int, _ request: String, deadline: Duration = .seconds(5), until enough: (@Sendable (String) -> Bool)? = nil
) async throws -> (text: String, closedByServer: Bool) {
    let collected = Collector(enough: enough)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collected) }
        }
        .connect(host: "127.0.0.1", port: port).get()
    if !request.isEmpty { try await channel.writeAndFlush(ByteBuffer(string: request)) }
    let timedOut = Atomic(false)
    let timeout = channel.eventLoop.scheduleTask(in: deadline.timeAmount) {
        timedOut.store(true, ordering: .relaxed)
        channel.close(promise: nil)
    }
    try? await channel.closeFuture.get()
    timeout.cancel()
    return (collected.text, !timedOut.load(ordering: .relaxed))
}

final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let buffer = Mutex(ByteBuffer())
    private let enough: (@Sendable (String) -> Bool)?
    var text: String { buffer.withLock { String(buffer: $0) } }

    init(enough: (@Sendable (String) -> Bool)? = nil) {
        self.enough = enough
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.withLock { _ = $0.writeBuffer(&incoming) }
        if let enough, enough(text) { context.close(promise: nil) }
    }
}

/// A TCP port on 127.0.0.1 bound by this process but not listening: connecting to it is
/// refused, and nothing else can bind it until ``release()``.
struct ReservedPort {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TextError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw TextError("bind: errno \(errno)")
        }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func release() { close(descriptor) }
}
