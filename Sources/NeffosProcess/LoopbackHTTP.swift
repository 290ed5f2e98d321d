import Foundation
import NIOCore
import NIOPosix
import Neffos

/// A tiny HTTP/1.1 client for local test peers (monitoring endpoints, a WebDriver): one
/// request per connection, `Connection: close`, the whole response read into memory.
///
/// ```swift
/// let varz = try await LoopbackHTTP.request("GET", port: monitorPort, path: "/varz")
/// #expect(varz.status == 200)
/// ```
public enum LoopbackHTTP {
    /// The value of the first sample of `series` (a name, or a name with its labels,
    /// `neffos_limits_exceeded{limit="rooms"}`) in a Prometheus text exposition.
    public static func metric(_ series: String, in text: String) -> Double? {
        text.split(separator: "\n")
            .first { $0.hasPrefix(series + " ") || $0.hasPrefix(series + "{") }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
    }

    /// A response: status code and body text.
    public struct Response: Sendable {
        /// The status code (0 when the status line could not be read).
        public var status: Int
        /// The body (de-chunked).
        public var body: String
    }

    /// Sends `method path` to 127.0.0.1:`port` with `body` (as `application/json` unless
    /// `contentType` says otherwise) and returns the response, or throws after `timeout`.
    public static func request(
        _ method: String, port: Int, path: String, body: String? = nil,
        contentType: String = "application/json; charset=utf-8", timeout: Duration = .seconds(30)
    ) async throws -> Response {
        let collector = BodyCollector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if let body {
            head += "Content-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
        }
        try await channel.writeAndFlush(ByteBuffer(string: head + "\r\n" + (body ?? "")))
        let timer = channel.eventLoop.scheduleTask(in: timeout.timeAmount) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        timer.cancel()
        let response = collector.text
        guard let split = response.range(of: "\r\n\r\n") else {
            throw ProcessError(description: "no HTTP response from 127.0.0.1:\(port)\(path) within \(timeout)")
        }
        let headers = response[..<split.lowerBound]
        let status = headers.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        var text = String(response[split.upperBound...])
        if headers.lowercased().contains("transfer-encoding: chunked") { text = dechunk(text) }
        return Response(status: status, body: text)
    }

    private static func dechunk(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
            let start = lineEnd.upperBound
            let utf8 = rest[start...].utf8
            let end = utf8.index(utf8.startIndex, offsetBy: min(size, utf8.count))
            result += String(rest[start..<end])
            rest = rest[end...].dropFirst(2)
        }
        return result
    }

    /// Collects the response, and closes the connection once it is complete (some servers
    /// answer `Connection: close` and keep the connection open anyway).
    final class BodyCollector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        private let buffer = Locked(ByteBuffer())
        var text: String { buffer.withLock { String(buffer: $0) } }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            let complete = buffer.withLock { buffer -> Bool in
                buffer.writeBuffer(&incoming)
                return Self.isComplete(String(buffer: buffer))
            }
            if complete { context.close(promise: nil) }
        }

        /// Whether `response` holds its whole body (by Content-Length, or the last chunk).
        static func isComplete(_ response: String) -> Bool {
            guard let split = response.range(of: "\r\n\r\n") else { return false }
            let headers = response[..<split.lowerBound].lowercased().split(separator: "\r\n")
            let body = response[split.upperBound...]
            if headers.contains(where: { $0.hasPrefix("transfer-encoding:") && $0.contains("chunked") }) {
                return body.hasSuffix("0\r\n\r\n")
            }
            guard let line = headers.first(where: { $0.hasPrefix("content-length:") }),
                let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
            else { return false }
            return body.utf8.count >= length
        }
    }
}
