import Foundation
import NIOCore
import NIOPosix
import Neffos
import NeffosProcess
import NeffosTesting
import Synchronization
import Testing

@testable import NeffosNIO

/// The raw text of a WebSocket upgrade request to 127.0.0.1:`port`; `replacing` sets or, with
/// `nil`, removes headers by name.
func upgradeRequest(_ port: Int, path: String = "/", version: String = "HTTP/1.1", replacing changes: [String: String?] = [:]) -> String {
    var headers: [(String, String)] = [
        ("Host", "127.0.0.1:\(port)"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    for (name, value) in changes {
        headers.removeAll { $0.0 == name }
        if let value { headers.append((name, value)) }
    }
    return "GET \(path) \(version)\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
}

/// The status code of a raw HTTP response, or `nil`.
func statusCode(of response: String) -> Int? {
    let parts = response.split(separator: " ", maxSplits: 2)
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/1.") else { return nil }
    return Int(parts[1])
}

@Suite("HTTP layer bounds")
struct HTTPLimitsTests {
    let events: Namespaces = ["default": Events()]

    @Test("a request that trickles in gets 408 at the request timeout and is closed")
    func slowLoris() async throws {
        try await withServer(events, configure: { $0.transport.requestTimeout = .milliseconds(200) }) { running in
            // Half a request head, never finished (before: held open for good).
            let (text, closed) = try await rawTCPSession(running.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            #expect(closed, "the server closed the connection")
            #expect(statusCode(of: text) == 408, "got \(text)")
            #expect(running.server.statistics.httpTimeouts == 1)
        }
    }

    @Test("a socket that sends nothing, and an idle keep-alive, are closed at the idle timeout")
    func idle() async throws {
        try await withServer(events, configure: { $0.transport.idleTimeout = .milliseconds(200) }) { running in
            let (silent, silentClosed) = try await rawTCPSession(running.port, "")
            #expect(silentClosed && silent.isEmpty)
            #expect(running.server.statistics.httpTimeouts == 1)
        }
        // A complete request on a kept-alive connection is answered, then the idle connection
        // is closed. (A longer timeout: the request must come before it, on a busy machine.)
        try await withServer(events, configure: { $0.transport.idleTimeout = .seconds(2) }) { running in
            let (answered, keptClosed) = try await rawTCPSession(running.port, "GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", deadline: .seconds(10))
            #expect(keptClosed)
            #expect(statusCode(of: answered) == 404, "got \(answered)")
            #expect(running.server.statistics.httpTimeouts == 1)
        }
    }

    @Test("an upgrade needs HTTP/1.1, a Host, Connection: Upgrade, a key of 16 base64 bytes and version 13; others are refused")
    func upgradeValidation() async throws {
        try await withServer(events, configure: { $0.handshakeTimeout = .milliseconds(100) }) { running in
            let port = running.port
            let cases: [(changes: [String: String?], status: Int)] = [
                (["Connection": nil], 400),
                (["Connection": "keep-alive"], 400),
                (["Sec-WebSocket-Key": "not base64 at all!"], 400),
                (["Sec-WebSocket-Key": "c2hvcnQ="], 400),  // "short": 5 bytes
                (["Sec-WebSocket-Key": nil], 400),
                (["Sec-WebSocket-Version": "8"], 426),
                (["Host": nil], 400),
                (["HTTP": "1.0"], 400),
            ]
            for (changes, status) in cases {
                let version = changes["HTTP"].map { "HTTP/\($0!)" } ?? "HTTP/1.1"
                let request = upgradeRequest(port, version: version, replacing: changes.filter { $0.key != "HTTP" })
                let (text, closed) = try await rawTCPSession(port, request)
                #expect(statusCode(of: text) == status, "\(changes): \(text)")
                #expect(closed, "\(changes): a refused upgrade closes the connection")
                if status == 426 { #expect(text.contains("Sec-WebSocket-Version: 13")) }
            }
            #expect(running.server.statistics.refusedConnections == cases.count)
            // Tokens in a list, in any case, are fine.
            let valid = upgradeRequest(port, replacing: ["Connection": "keep-alive, UPGRADE"])
            let (upgraded, _) = try await rawTCPSession(port, valid)  // closed at the handshake timeout
            #expect(statusCode(of: upgraded) == 101, "got \(upgraded)")
        }
    }

    @Test("a Sec-WebSocket-Key is 22 base64 characters and ==, spaces around it ignored")
    func webSocketKeys() {
        #expect(UpgradeVerdict.isWebSocketKey("dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(UpgradeVerdict.isWebSocketKey(" \tAAAAAAAAAAAAAAAAAAAA+/== "))
        for bad in ["", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===", "dGhlIHNhbXBsZSBub25jZ-==",
                    "dGhlIHNhbXBsZSBub25jZQ=A", "dGhlIHNhbXBs ZSBub25jZQ==", "é" + String(repeating: "A", count: 21) + "=="] {
            #expect(!UpgradeVerdict.isWebSocketKey(bad), "\(bad)")
        }
    }

    @Test("the default connection ID is a random version-4 UUID in lower case")
    func connectionIDs() throws {
        let ids = (0..<1000).map { _ in Server.randomConnectionID() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(50) {
            let uuid = try #require(UUID(uuidString: id), "\(id)")
            #expect(uuid.uuidString.lowercased() == id)
            #expect(uuid.uuid.6 >> 4 == 4, "version 4: \(id)")
            #expect(uuid.uuid.8 >> 6 == 0b10, "variant 10: \(id)")
        }
    }

    @Test("upgrade headers past maxRequestHeaderBytes get 431, in headers or in X-Websocket-Header query parameters")
    func headerBytes() async throws {
        try await withServer(events, configure: { $0.transport.maxRequestHeaderBytes = 2048 }) { running in
            let port = running.port
            let big = String(repeating: "b", count: 3000)
            let (inHeader, _) = try await rawTCPSession(port, upgradeRequest(port, replacing: ["X-Big": big]))
            #expect(statusCode(of: inHeader) == 431, "got \(inHeader)")
            let (inQuery, _) = try await rawTCPSession(port, upgradeRequest(port, path: "/?X-Websocket-Header-Big=\(big)"))
            #expect(statusCode(of: inQuery) == 431, "got \(inQuery)")
            #expect(running.server.statistics.refusedConnections == 2)
            let socket = try await RawWebSocket.connect(to: running.url, headers: [("X-Small", String(repeating: "s", count: 1000))])
            await socket.abort()
        }
    }

    @Test("a request NIO cannot parse (a 100 KB header) gets 400 and the connection is closed")
    func unparsable() async throws {
        try await withServer(events) { running in
            let huge = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: \(String(repeating: "h", count: 100_000))\r\n\r\n"
            let (text, closed) = try await rawTCPSession(running.port, huge)
            #expect(statusCode(of: text) == 400, "got \(text.prefix(100))")
            #expect(closed, "before: the socket stayed open after the 400")
        }
    }

    @Test("past maxConnections, TCP connections that never upgrade count too: one more gets 503, and a closed one frees its slot")
    func connectionSlots() async throws {
        try await withServer(events, configure: { $0.transport.maxConnections = 2 }) { running in
            let idle = try await (0..<2).asyncMap { _ in
                try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: running.port).get()
            }
            // Accepted connections are set up on several event loops, in no set order: the
            // two must hold their slots before the third comes.
            try await running.server.waitForConnectionSlots("both idle connections accepted") { $0 == 2 }
            let (refused, closed) = try await rawTCPSession(running.port, upgradeRequest(running.port))
            #expect(statusCode(of: refused) == 503, "got \(refused)")
            #expect(closed)
            #expect(running.server.statistics.refusedConnections == 1)
            try await idle[0].close()
            try await running.server.waitForConnectionSlots("a slot freed") { $0 == 1 }
            let (socket, _) = try await handshake(running.url)
            await socket.abort()
            try await idle[1].close()
        }
    }

    @Test("the connection limit stays below the open-file limit")
    func limitBelowOpenFiles() throws {
        let files = try #require(ProcessLimits.openFiles)
        #expect(ProcessLimits.connectionLimit(configured: nil) == files - ProcessLimits.reservedDescriptors)
        #expect(ProcessLimits.connectionLimit(configured: 10) == 10)
        #expect(ProcessLimits.connectionLimit(configured: .max) == files - ProcessLimits.reservedDescriptors)
    }

    @Test("asks the server code makes are bounded per connection and per server")
    func pendingAsks() async throws {
        let holder = Mutex<NSConn?>(nil)
        let log = Log()
        var events = Events()
        events.on("hello") { ns, _ in
            holder.withLock { $0 = ns }
            log.append("hello")
        }
        try await withServer(["default": events], configure: {
            $0.maxPendingAsks = 2
            $0.maxPendingServerAsks = 2
        }) { running in
            let (socket, id) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;hello;0;0;")
            try await log.wait(for: "hello")
            let ns = try #require(holder.withLock { $0 })
            // Two asks wait on the connection (the client never answers)…
            let waiting = (0..<2).map { _ in Task { try await ns.ask("q", timeout: .seconds(30)) } }
            for _ in 0..<2 { _ = try await socket.nextText() }
            // …a third is refused at once.
            await #expect(throws: NeffosError.limitExceeded) { _ = try await ns.ask("q", timeout: .seconds(30)) }
            // The same for the server's asks.
            let serverWaiting = (0..<2).map { _ in
                Task { try await running.server.ask(Message(namespace: "default", event: "s"), to: id, timeout: .seconds(30)) }
            }
            for _ in 0..<2 { _ = try await socket.nextText() }
            await #expect(throws: NeffosError.limitExceeded) {
                _ = try await running.server.ask(Message(namespace: "default", event: "s"), to: id, timeout: .seconds(30))
            }
            #expect(running.server.statistics.limitsExceeded == 2)
            (waiting + serverWaiting).forEach { $0.cancel() }
            await socket.abort()
        }
    }

    @Test("out of file descriptors, the listener backs off instead of spinning, and accepts again once some are free")
    func acceptBackoff() async throws {
        let (server, port) = try await startBenchServer(["--log-level", "debug"])
        defer { server.terminate(signal: SIGKILL) }
        // Lower its open-file limit after it started (so its connection limit, computed at
        // start, is far above): accepts now fail with EMFILE.
        let (status, output) = try await ChildProcess.run("/usr/bin/prlimit", ["--pid", "\(server.pid)", "--nofile=64:64"])
        try #require(status == 0, "prlimit: \(output)")
        let clients = try await (0..<80).asyncMap { _ in
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        }
        _ = try await server.waitForOutput(containing: "accept failed")
        // Before: the accept loop spun, a full core. Now it pauses (500 ms) between tries: the
        // window is three pauses, bounded by the server's own "accepting again" lines.
        _ = try await server.waitForOutput(containing: "accepting again")
        let before = try cpuSeconds(of: server.pid)
        let start = ContinuousClock.now
        _ = try await server.waitForOutput(containing: "accepting again", count: 4)
        let spent = try cpuSeconds(of: server.pid) - before
        let window = ContinuousClock.now - start
        #expect(spent < 0.5, "the server spent \(spent) s of CPU in \(window) (three pauses) while out of descriptors")
        for client in clients { try? await client.close() }
        // Descriptors free again: a new client is served.
        let (socket, _) = try await handshake("ws://127.0.0.1:\(port)/")
        await socket.abort()
    }
}

/// Starts the bench server on a free port; returns it and its port. It runs through a link of
/// another name: the bench tool's test counts the processes named neffos-bench-server, and
/// may run at the same time.
func startBenchServer(_ arguments: [String] = []) async throws -> (ChildProcess, Int) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-bench-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let executable = directory.appendingPathComponent("test-bench-server").path
    try FileManager.default.createSymbolicLink(atPath: executable, withDestinationPath: try ChildProcess.sibling("neffos-bench-server"))
    let server = try ChildProcess.start(executable, ["--port", "0"] + arguments)
    do {
        let line = try await server.waitForOutput(containing: "listening on")
        let words = line.split(separator: " ")
        let port = try #require(words.firstIndex(of: "on").flatMap { Int(words[$0 + 1]) })
        return (server, port)
    } catch {
        server.terminate(signal: SIGKILL)
        throw error
    }
}

/// The CPU time (user + system) a process has used, in seconds.
func cpuSeconds(of pid: Int32) throws -> Double {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
    let ticks = Double(fields[11])! + Double(fields[12])!  // utime and stime: fields 14 and 15
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

extension Sequence {
    /// `transform` applied to each element in turn.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
