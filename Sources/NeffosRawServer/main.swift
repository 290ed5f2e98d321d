import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

// The ceiling `neffos bench` compares with: a bare SwiftNIO WebSocket server, no framework,
// answering just what the bench scenarios send (neffos's handshake, namespace connect, room
// join, the `echo` ask, and `broadcast` to all or to a room), with the same care for speed as
// the framework: everything on the event loop, one hop per loop for a broadcast, flush at
// the end of a read burst.
//
//   neffos-raw-server [--port 0]

var port = 0
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    if argument == "--port" { port = arguments.next().flatMap(Int.init) ?? 0 }
}

/// Every connection and room membership, by event loop.
final class Members: Sendable {
    private let members = NIOLockedValueBox<[String: [ObjectIdentifier: (loop: any EventLoop, handlers: [ObjectIdentifier: RawHandler])]]>([:])

    func join(_ handler: RawHandler, _ group: String, _ loop: any EventLoop) {
        members.withLockedValue { groups in
            let key = ObjectIdentifier(loop)
            if groups[group]?[key] == nil { groups[group, default: [:]][key] = (loop, [:]) }
            groups[group]![key]!.handlers[ObjectIdentifier(handler)] = handler
        }
    }

    func leaveAll(_ handler: RawHandler) {
        members.withLockedValue { groups in
            for group in groups.keys {
                for loop in groups[group]!.keys { groups[group]![loop]!.handlers[ObjectIdentifier(handler)] = nil }
            }
        }
    }

    func broadcast(_ frame: ByteBuffer, to group: String) {
        let loops = members.withLockedValue { $0[group].map { Array($0.values) } ?? [] }
        for (loop, handlers) in loops {
            let deliver: @Sendable () -> Void = {
                for handler in handlers.values { handler.writeOnLoop(frame) }
                for handler in handlers.values { handler.flushOnLoop() }
            }
            if loop.inEventLoop { deliver() } else { loop.execute(deliver) }
        }
    }
}

let members = Members()

final class RawHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked Sendable: its state is only touched on its channel's event loop.
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var context: ChannelHandlerContext?
    private var reading = false
    private var needsFlush = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        members.leaveAll(self)
        self.context = nil
    }

    func writeOnLoop(_ frame: ByteBuffer) {
        guard let context, context.channel.isWritable else { return }
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: frame)), promise: nil)
        needsFlush = true
    }

    func flushOnLoop() {
        if !reading && needsFlush {
            needsFlush = false
            context?.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        reading = true
        switch frame.opcode {
        case .text, .binary: handle(frame.unmaskedData, context: context)
        case .connectionClose: context.close(promise: nil)
        case .ping:
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
            needsFlush = true
        default: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    private func reply(_ text: String) { writeOnLoop(ByteBuffer(string: text)) }

    private func handle(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        if payload.readableBytes == 1 && payload.getInteger(at: payload.readerIndex, as: UInt8.self) == UInt8(ascii: "M") {
            reply("A\(ObjectIdentifier(self).hashValue)")
            return
        }
        // Split the header: wait;namespace;room;event;isError;isNoOp;body
        var fields: [Range<Int>] = []
        let bytes = payload.readableBytesView
        var start = bytes.startIndex
        var index = start
        while fields.count < 6, index < bytes.endIndex {
            if bytes[index] == UInt8(ascii: ";") {
                fields.append(start..<index)
                start = index + 1
            }
            index += 1
        }
        guard fields.count == 6 else { return }
        func text(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
        let wait = text(fields[0])
        switch text(fields[3]) {
        case "_OnNamespaceConnect":
            members.join(self, text(fields[1]), context.eventLoop)
            reply("\(wait);;;;;;")
        case "_OnRoomJoin":
            members.join(self, text(fields[1]) + "\u{0}" + text(fields[2]), context.eventLoop)
            reply("\(wait);;;;;;")
        case "echo":
            writeOnLoop(payload)
        case "broadcast":
            let namespace = text(fields[1])
            let room = text(fields[2])
            var frame = ByteBuffer()
            frame.writeString(";\(namespace);\(room);tick;0;0;")
            frame.writeBytes(bytes[start...])
            members.broadcast(frame, to: room.isEmpty ? namespace : namespace + "\u{0}" + room)
        default:
            break
        }
    }
}

let upgrader = NIOWebSocketServerUpgrader(
    maxFrameSize: 1 << 20,
    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture([:]) },
    upgradePipelineHandler: { channel, _ in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(RawHandler()) }
    })
let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelOption(.writeBufferWaterMark, value: .init(low: 2 << 20, high: 4 << 20))
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
        }
    }
    .bind(host: "127.0.0.1", port: port).get()
FileHandle.standardOutput.write(Data("listening on \(channel.localAddress?.port ?? 0) pid \(ProcessInfo.processInfo.processIdentifier)\n".utf8))
try await channel.closeFuture.get()
