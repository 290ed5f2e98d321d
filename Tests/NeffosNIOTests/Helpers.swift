import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

/// A server listening on 127.0.0.1 with a free port, through one of the transports.
struct RunningServer: Sendable {
    let server: Server
    let mount: Mount
    let port: Int
    let path: String
    let stopTransport: @Sendable () async -> Void

    var url: String { "ws://127.0.0.1:\(port)\(path)" }
    var httpBase: String { "127.0.0.1:\(port)" }

    /// Stops the transport (its connections close with 1001), then shuts the server down.
    func stop() async {
        await stopTransport()
        await server.shutdown(timeout: .seconds(5))
    }
}

/// Starts `namespaces` on a free port through `mount` (the standalone listener, or mounted in
/// a Hummingbird or a Vapor application, with the test middleware of ``Mount``), runs `body`,
/// and stops the server whatever happens.
func withServer(
    on mount: Mount = .listener,
    _ namespaces: Namespaces,
    path: String = "/",
    responder: HTTPPageResponder? = nil,
    configure: (inout Server.Configuration) -> Void = { _ in },
    _ body: (RunningServer) async throws -> Void
) async throws {
    var configuration = Server.Configuration()
    configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
    configure(&configuration)
    let server = try Server(namespaces: namespaces, configuration: configuration)
    let running = try await mount.start(server, path: path, responder: responder)
    do {
        try await body(running)
    } catch {
        await running.stop()
        throw error
    }
    await running.stop()
}

/// Opens a raw WebSocket and completes the neffos handshake; returns the socket and the ID.
func handshake(_ url: String, headers: [(name: String, value: String)] = []) async throws -> (RawWebSocket, String) {
    let socket = try await RawWebSocket.connect(to: url, headers: headers)
    try await socket.send("M")
    let accepted = try await socket.nextText()
    #expect(accepted.hasPrefix("A"), "expected A<id>, got \(accepted)")
    return (socket, String(accepted.dropFirst()))
}

/// Connects a raw socket to `namespace` with ask token `wait`.
func connectNamespace(_ socket: RawWebSocket, _ namespace: String, wait: String = "$c") async throws {
    try await socket.send("\(wait);\(namespace);;_OnNamespaceConnect;0;0;")
    #expect(try await socket.nextText() == "\(wait);;;;;;")
}

/// A thread-safe log of what handlers saw, that tests can wait on.
final class Log: Sendable {
    private let state = Watched<[String]>([])

    func append(_ entry: String) {
        state.update { $0.append(entry) }
    }

    var entries: [String] { state.read { $0 } }

    /// Waits until `predicate` holds for the log, up to `timeout`.
    func wait(
        for what: String, timeout: Duration = .seconds(10),
        until predicate: @escaping @Sendable ([String]) -> Bool
    ) async throws {
        _ = try await state.wait(
            timeout: timeout, orThrow: { RawWebSocketError.timedOut("\(what); log: \(self.entries)") },
            until: { predicate($0) ? .success(true) : nil })
    }

    /// Waits until the log contains `entry`.
    func wait(for entry: String, timeout: Duration = .seconds(10)) async throws {
        try await wait(for: "\"\(entry)\"", timeout: timeout) { $0.contains(entry) }
    }
}

struct TextError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// Sends a raw HTTP/1.1 request and returns the whole response as text (the server is asked
/// to close the connection after it).
func httpRequest(_ port: Int, _ method: String, _ path: String, headers: [String] = []) async throws -> String {
    let lines = ["\(method) \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Connection: close"] + headers
    return try await rawTCP(port, lines.joined(separator: "\r\n") + "\r\n\r\n")
}

/// Stops `socket` reading and broadcasts 32 KB frames (to `room` when given) until the server
/// drops one: the connection's outbox is full. Returns how many were broadcast.
@discardableResult
func fillOutbox(of socket: RawWebSocket, _ running: RunningServer, room: String = "") async throws -> Int {
    try await socket.setReading(false)
    let body = String(repeating: "x", count: 32 * 1024)
    var sent = 0
    // Kernel buffers absorb a few megabytes first; push until the server drops.
    while running.server.statistics.droppedFrames == 0 && sent < 20_000 {
        running.server.broadcast(Message(namespace: "default", room: room, event: "n", body: body))
        sent += 1
        if sent % 64 == 0 { await Task.yield() }
    }
    #expect(running.server.statistics.droppedFrames > 0, "the outbox never filled")
    return sent
}
