import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

@Suite("Handshake and lifecycle")
struct HandshakeTests {
    @Test("M is answered with A and a UUIDv4 by default", .serialized, arguments: Mount.allCases)
    func defaultIDs(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let (socket, id) = try await handshake(running.url)
            let parts = id.split(separator: "-")
            #expect(parts.map(\.count) == [8, 4, 4, 4, 12], "\(id)")
            #expect(parts[2].first == "4", "version 4: \(id)")
            #expect(id == id.lowercased())
            await socket.abort()
        }
    }

    @Test("a custom ID generator sees the request", .serialized, arguments: Mount.allCases)
    func customIDs(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.idGenerator = { request in "user-" + (request.header("X-Username") ?? "anon") }
        }) { running in
            let (socket, id) = try await handshake(running.url + "?X-Websocket-Header-X-Username=alice")
            #expect(id == "user-alice")
            await socket.abort()
        }
    }

    @Test("the request's remote address is the peer's host:port, on every transport", .serialized, arguments: Mount.allCases)
    func remoteAddress(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.idGenerator = { request in request.remoteAddress ?? "none" }
        }) { running in
            let (socket, id) = try await handshake(running.url)
            let parts = id.split(separator: ":")
            #expect(parts.count == 2 && parts.first == "127.0.0.1" && UInt16(parts.last ?? "") != nil, "\(id)")
            await socket.abort()
        }
    }

    /// Sets a flag when freed: kept in a connection's store, it goes when the connection does.
    final class FreedProbe: Sendable {
        let freed: OnceFlag
        init(_ freed: OnceFlag) { self.freed = freed }
        deinit { freed.set() }
    }

    @Test("a closed connection is freed, with its handler: nothing keeps it alive", .serialized, arguments: Mount.allCases)
    func freedAfterClose(on mount: Mount) async throws {
        let freed = OnceFlag()
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.onConnect = { conn in conn.store["probe"] = FreedProbe(freed) }
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            await socket.abort()
            #expect(await freed.wait(timeout: .seconds(10)), "the connection was not freed after it closed")
        }
    }

    @Test("X-Websocket-Header-* query parameters become request headers", .serialized, arguments: Mount.allCases)
    func urlHeaders(on mount: Mount) async throws {
        let seen = Mutex<[String]>([])
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.onConnect = { conn in
                seen.withLock { $0 = [conn.request.header("X-Username") ?? "-", conn.request.header("x-token") ?? "-", conn.request.header("Plain") ?? "-"] }
            }
        }) { running in
            let (socket, _) = try await handshake(running.url + "?x-websocket-header-x-username=b%C3%B6b&X-Websocket-Header-X-Token=a+b&Plain=no")
            #expect(seen.withLock { $0 } == ["böb", "a b", "-"])
            await socket.abort()
        }
    }

    @Test("X-Websocket-Reconnect sets the reconnect tries, as a header or through the URL", .serialized, arguments: Mount.allCases)
    func reconnectHeader(on mount: Mount) async throws {
        let tries = Mutex<[Int]>([])
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.onConnect = { conn in tries.withLock { $0.append(conn.wasReconnected ? conn.reconnectTries : 0) } }
        }) { running in
            let (a, _) = try await handshake(running.url, headers: [("X-Websocket-Reconnect", "3")])
            let (b, _) = try await handshake(running.url + "?X-Websocket-Header-X-Websocket-Reconnect=2")
            let (c, _) = try await handshake(running.url)
            #expect(tries.withLock { $0 } == [3, 2, 0])
            for socket in [a, b, c] { await socket.abort() }
        }
    }

    @Test("a refusing on-connect hook sends H<error> then closes with 1008 and its text", .serialized, arguments: Mount.allCases)
    func refusal(on mount: Mount) async throws {
        let log = Log()
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.onConnect = { _ in throw TextError("banned; go away") }
            config.onDisconnect = { _ in log.append("disconnect") }
        }) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("M")
            #expect(try await socket.nextText() == "Hbanned; go away")
            let close = try await socket.nextClose()
            #expect(close.closeCode == .policyViolation)
            #expect(close.closeReason == "banned; go away")
            #expect(await socket.waitClosed())
            #expect(running.server.connectionCount == 0)
            #expect(log.entries.isEmpty, "on-disconnect does not fire for a refused connection")
        }
    }

    @Test("with fire-always, on-disconnect fires for refused connections too", .serialized, arguments: Mount.allCases)
    func fireAlways(on mount: Mount) async throws {
        let log = Log()
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.onConnect = { _ in throw TextError("no") }
            config.onDisconnect = { _ in log.append("disconnect") }
            config.fireDisconnectAlways = true
        }) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("M")
            #expect(try await socket.nextText() == "Hno")
            try await log.wait(for: "disconnect")
        }
    }

    @Test("frames sent before the handshake completes are handled after it, in order", .serialized, arguments: Mount.allCases)
    func preHandshakeQueue(on mount: Mount) async throws {
        let log = Log()
        let gate = Gate()
        var events = Events()
        events.on("chat") { _, message in log.append(message.bodyString) }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.onConnect = { _ in await gate.wait() }
        }) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("$1;default;;_OnNamespaceConnect;0;0;")
            try await socket.send(";default;;chat;0;0;one")
            try await socket.send("M")
            try await socket.send(";default;;chat;0;0;two")
            #expect(await socket.staysQuiet(for: .milliseconds(50)), "no answer before on-connect returns")
            gate.open()
            #expect(try await socket.nextText().hasPrefix("A"))
            #expect(try await socket.nextText() == "$1;;;;;;")
            try await log.wait(for: "two")
            #expect(log.entries == ["one", "two"])
            await socket.abort()
        }
    }

    @Test("a client that never sends M is closed after the handshake timeout", .serialized, arguments: Mount.allCases)
    func handshakeTimeout(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { $0.handshakeTimeout = .milliseconds(200) }) { running in
            let silent = try await RawWebSocket.connect(to: running.url)
            let close = try await silent.nextClose(timeout: .seconds(5))
            #expect(close.closeCode == .policyViolation)
            #expect(await silent.waitClosed())
        }
    }

    @Test("on-connect may force the client into a namespace; A comes first, then the ask", .serialized, arguments: Mount.allCases)
    func forcedNamespace(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceConnected) { ns, _ in
            log.append("connected:\(ns.namespace)")
            try ns.emit("welcome", "hi")
        }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.onConnect = { conn in try await conn.connect("default", timeout: .seconds(5)) }
        }) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("M")
            #expect(try await socket.nextText().hasPrefix("A"))
            let ask = try await socket.nextText()
            let token = String(ask.prefix { $0 != ";" })
            #expect(ask == "\(token);default;;_OnNamespaceConnect;0;0;")
            #expect(token.allSatisfy { $0.isNumber })
            try await socket.send("\(token);;;;;;")
            #expect(try await socket.nextText() == ";default;;welcome;0;0;hi")
            try await log.wait(for: "connected:default")
            await socket.abort()
        }
    }

    @Test("on close, the server fires room-left, namespace-disconnect (forced), then on-disconnect", .serialized, arguments: Mount.allCases)
    func closeEvents(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.roomLeave) { _, m in log.append("leave:\(m.room):forced=\(m.isForced)") }
        events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
        events.on(.namespaceDisconnect) { _, m in log.append("disconnect:\(m.namespace):forced=\(m.isForced)") }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.onDisconnect = { _ in log.append("gone") }
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send("$2;default;r1;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$2;;;;;;")
            try await socket.sendClose()
            try await log.wait(for: "gone")
            #expect(log.entries == ["leave:r1:forced=true", "left:r1", "disconnect:default:forced=true", "gone"])
            #expect(running.server.connectionCount == 0)
            #expect(running.server.connections(namespace: "default").isEmpty)
            #expect(running.server.members(ofRoom: "r1", in: "default").isEmpty)
        }
    }

    @Test("native-only mode: no handshake, raw messages both ways", .serialized, arguments: Mount.allCases)
    func nativeOnly(on mount: Mount) async throws {
        var events = Events()
        events.on(.nativeMessage) { ns, message in
            ns.broadcast(.native(ByteBuffer(string: "echo:" + message.bodyString)))
        }
        try await withServer(on: mount, Namespaces(events)) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("hello;there")
            #expect(try await socket.nextText() == "echo:hello;there")
            try await socket.send("M")
            #expect(try await socket.nextText() == "echo:M", "M is just a message in native-only mode")
            await socket.abort()
        }
    }
}

/// A gate tasks wait on until a test opens it.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { s -> Bool in
                if !s.open { s.waiters.append(continuation) }
                return s.open
            }
            if open { continuation.resume() }
        }
    }
    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
