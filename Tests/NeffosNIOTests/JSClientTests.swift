import Foundation
import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosProcess
import Synchronization
import Testing

/// Runs the JavaScript client's own tests (`Tests/JS`, Node's test runner) against a real server.
@Suite("JavaScript client")
struct JSClientTests {
    /// The repository's root, from this file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `node`, from `PATH` or the usual places.
    static func node() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"] {
            if FileManager.default.isExecutableFile(atPath: directory + "/node") { return directory + "/node" }
        }
        throw TextError("node is not installed: install it with `apt-get install nodejs` (scripts/test does)")
    }

    @Test("Recovery: the JavaScript client's tests pass under Node against a server with history")
    func nodeTests() async throws {
        let counters = Mutex<[String: Int]>([:])
        /// Broadcasts the room's next `count` numbered ticks, leaving `except` out.
        @Sendable func send(_ body: String, from ns: NSConn, except: NSConn?) throws {
            let parts = body.split(separator: " ")
            guard parts.count == 2, let count = Int(parts[1]), (1...10_000).contains(count) else { throw TextError("expected \"ROOM N\"") }
            let room = String(parts[0])
            let first = counters.withLock { table -> Int in
                defer { table[room, default: 0] += count }
                return table[room, default: 0] + 1
            }
            for n in first..<(first + count) {
                ns.conn.server?.broadcast(Message(namespace: "default", room: room, event: "tick", body: ByteBuffer(string: "\(n)")), except: except)
            }
        }
        var events = Events()
        events.answer("send") { ns, message in
            try send(message.bodyString, from: ns, except: nil)
            return Reply("sent")
        }
        // Drops the sender, then broadcasts to the room without it: it has to recover them all.
        events.on("dropAndSend") { ns, message in
            ns.conn.close(code: .goingAway, reason: "test drop")
            try send(message.bodyString, from: ns, except: ns)
        }
        try await withServer(["default": events], configure: { configuration in
            configuration.history.rules = [
                HistoryRule(namespace: "default", rooms: "lobby*", limits: HistoryLimits(maxCount: 1000)),
                HistoryRule(namespace: "default", rooms: "small", limits: HistoryLimits(maxCount: 10)),
            ]
        }) { running in
            let client = Self.root.appendingPathComponent("examples/chat/ChatApp/Public/neffos-client.js").path
            let tests = Self.root.appendingPathComponent("Tests/JS/neffos-client.test.mjs").path
            let (status, output) = try await ChildProcess.run(
                try Self.node(), ["--test", tests],
                environment: ["NEFFOS_URL": running.url, "NEFFOS_CLIENT_JS": client], timeout: .seconds(120))
            #expect(status == 0, "node --test wrote:\n\(output)")
            #expect(output.contains("# pass 4"), "\(output)")
        }
    }
}
