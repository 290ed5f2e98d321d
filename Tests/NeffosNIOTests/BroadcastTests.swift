import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

/// Raw clients connected to `default`, with their IDs.
func clients(_ count: Int, _ running: RunningServer, namespace: String = "default") async throws -> [(RawWebSocket, String)] {
    var result: [(RawWebSocket, String)] = []
    for _ in 0..<count {
        let (socket, id) = try await handshake(running.url)
        try await connectNamespace(socket, namespace)
        result.append((socket, id))
    }
    return result
}

func join(_ socket: RawWebSocket, _ room: String, namespace: String = "default") async throws {
    try await socket.send("$j;\(namespace);\(room);_OnRoomJoin;0;0;")
    #expect(try await socket.nextText() == "$j;;;;;;")
}

@Suite("Broadcast")
struct BroadcastTests {
    @Test("a namespace broadcast reaches its connections only", .serialized, arguments: Mount.allCases)
    func namespaceBroadcast(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events(), "other": Events()]) { running in
            let members = try await clients(2, running)
            let outsider = try await clients(1, running, namespace: "other")
            let sent = running.server.broadcast(Message(namespace: "default", event: "news", body: "hi"))
            #expect(sent == 2)
            for (socket, _) in members { #expect(try await socket.nextText() == ";default;;news;0;0;hi") }
            #expect(await outsider[0].0.staysQuiet(for: .milliseconds(50)))
            for (socket, _) in members + outsider { await socket.abort() }
        }
    }

    @Test("a room broadcast reaches the room's members only", .serialized, arguments: Mount.allCases)
    func roomBroadcast(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let all = try await clients(3, running)
            try await join(all[0].0, "r")
            try await join(all[1].0, "r")
            #expect(running.server.members(ofRoom: "r", in: "default").count == 2)
            running.server.broadcast(Message(namespace: "default", room: "r", event: "x", body: "y"))
            #expect(try await all[0].0.nextText() == ";default;r;x;0;0;y")
            #expect(try await all[1].0.nextText() == ";default;r;x;0;0;y")
            #expect(await all[2].0.staysQuiet(for: .milliseconds(50)))
            for (socket, _) in all { await socket.abort() }
        }
    }

    @Test("to an ID, and to all but an excluded sender (conn, namespace conn, room or ID)", .serialized, arguments: Mount.allCases)
    func targetedAndExcluded(on mount: Mount) async throws {
        let handles = Mutex<[String: NSConn]>([:])
        var events = Events()
        events.on(.namespaceConnected) { ns, _ in handles.withLock { $0[ns.conn.id] = ns } }
        try await withServer(on: mount, ["default": events]) { running in
            let all = try await clients(3, running)
            let ids = all.map(\.1)
            var direct = Message(namespace: "default", event: "dm", body: "psst")
            direct.to = ids[1]
            #expect(running.server.broadcast(direct) == 1)
            #expect(try await all[1].0.nextText() == ";default;;dm;0;0;psst")

            let ns0 = try #require(handles.withLock { $0[ids[0]] })
            try await join(all[0].0, "r")
            let room = try #require(ns0.room("r"))
            let exclusions: [any ConnectionIdentifiable] = [ns0.conn, ns0, room, Exclude(ids[0])]
            for exclusion in exclusions {
                #expect(running.server.broadcast(Message(namespace: "default", event: "e", body: "\(type(of: exclusion))"), except: exclusion) == 2)
                for index in [1, 2] {
                    #expect(try await all[index].0.nextText() == ";default;;e;0;0;\(type(of: exclusion))")
                }
            }
            #expect(await all[0].0.staysQuiet(for: .milliseconds(50)))
            #expect(await all[2].0.staysQuiet(for: .milliseconds(10)), "the direct message reached its target only")
            for (socket, _) in all { await socket.abort() }
        }
    }

    @Test("inside handlers: broadcast includes the sender, broadcastOthers leaves it out", .serialized, arguments: Mount.allCases)
    func fromHandlers(on mount: Mount) async throws {
        var events = Events()
        events.on("all") { ns, m in ns.broadcast(m) }
        events.on("others") { ns, m in ns.broadcastOthers(m) }
        try await withServer(on: mount, ["default": events]) { running in
            let all = try await clients(2, running)
            try await all[0].0.send("$7;default;;all;0;0;everyone")
            #expect(try await all[0].0.nextText() == ";default;;all;0;0;everyone", "a broadcast carries no wait token")
            #expect(try await all[1].0.nextText() == ";default;;all;0;0;everyone")
            try await all[0].0.send(";default;;others;0;0;not me")
            #expect(try await all[1].0.nextText() == ";default;;others;0;0;not me")
            #expect(await all[0].0.staysQuiet(for: .milliseconds(50)))
            for (socket, _) in all { await socket.abort() }
        }
    }

    @Test("a client that stops reading never slows the others: its frames are dropped and counted, then it is closed", .serialized, arguments: Mount.allCases)
    func slowClient(on mount: Mount) async throws {
        let log = Log()
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.transport.maxOutboxBytes = 64 * 1024
            config.transport.writeTimeout = .milliseconds(300)
            config.onDisconnect = { conn in log.append("gone:\(conn.id)") }
        }) { running in
            let all = try await clients(2, running)
            let (slow, slowID) = all[0]
            let (fast, _) = all[1]
            try await slow.setReading(false)
            let body = String(repeating: "x", count: 32 * 1024)
            var batches = 0
            // Kernel buffers absorb a few megabytes first; push until the server drops. Each
            // batch is paced on the fast client's reads, so only the stalled one overflows.
            while running.server.statistics.droppedFrames == 0 && batches < 1_000 {
                for index in 0..<20 {
                    running.server.broadcast(Message(namespace: "default", event: "n", body: "\(index)\(body)"))
                }
                for index in 0..<20 {
                    #expect(try await fast.nextText() == ";default;;n;0;0;\(index)\(body)")
                }
                batches += 1
            }
            #expect(running.server.statistics.droppedFrames > 0)
            try await log.wait(for: "gone:\(slowID)", timeout: .seconds(10))
            try await slow.setReading(true)
            #expect(await slow.waitClosed(timeout: .seconds(10)))
            await fast.abort()
        }
    }

    @Test("a reply to the client's own request is never dropped behind a full outbox", .serialized, arguments: Mount.allCases)
    func replyNotDroppedByFullOutbox(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.transport.maxOutboxBytes = 64 * 1024
            config.transport.writeTimeout = .seconds(30)
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await join(socket, "r")
            let sent = try await fillOutbox(of: socket, running, room: "r")
            let body = String(repeating: "x", count: 32 * 1024)
            // The outbox is full: the leave request's reply must still come.
            try await socket.send("$leave;default;r;_OnRoomLeave;0;0;")
            try await log.wait(for: "left:r", timeout: .seconds(10))
            // One more broadcast, queued to the connection's event loop behind the reply: once it
            // is dropped, the reply was written (or dropped) before it.
            let dropped = running.server.statistics.droppedFrames
            running.server.broadcast(Message(namespace: "default", event: "n", body: body))
            try await running.server.waitForStatistics("the marker broadcast to be dropped") { $0.droppedFrames > dropped }
            try await socket.setReading(true)
            var frames = 0
            while true {
                let text = try await socket.nextText(timeout: .seconds(10))
                frames += 1
                if text == "$leave;;;;;;" { break }
                #expect(text.hasPrefix(";default;r;n;"), "unexpected frame \(text.prefix(40))")
            }
            #expect(frames <= sent + 1)
            await socket.abort()
        }
    }

    @Test("a client that keeps asking and never reads is closed once its replies pass twice the outbox bound", .serialized, arguments: Mount.allCases)
    func repliesBounded(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        let big = String(repeating: "y", count: 32 * 1024)
        events.answer("big") { _, _ in Reply(big) }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.transport.maxOutboxBytes = 64 * 1024
            config.onDisconnect = { _ in log.append("gone") }
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.setReading(false)
            var asked = 0
            // Kernel buffers absorb a few megabytes first; then the replies queue in the outbox.
            while asked < 3_000 {
                do {
                    try await socket.send("$\(asked);default;;big;0;0;")
                } catch {
                    break
                }
                asked += 1
                if asked % 32 == 0 { await Task.yield() }
            }
            try await log.wait(for: "gone", timeout: .seconds(10))
            try? await socket.setReading(true)  // The socket may be closed already.
            var replies = 0
            while let frame = try? await socket.next(timeout: .seconds(10)), frame.opcode == .text {
                replies += 1
            }
            #expect(replies < asked, "the server stopped answering a peer that does not read")
            #expect(await socket.waitClosed(timeout: .seconds(10)))
        }
    }

    @Test("pongs count against the outbox: a client that pings and never reads gets none queued past it, and is not read from until it reads", .serialized, arguments: Mount.allCases)
    func pongsBounded(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.transport.maxOutboxBytes = 64 * 1024
            config.transport.writeTimeout = .seconds(30)
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await fillOutbox(of: socket, running)
            let body = String(repeating: "x", count: 32 * 1024)
            // Let the broadcasts still queued to the connection's event loop run (a marker
            // behind them is dropped last), so that only pongs count from here on.
            var settled = running.server.statistics.droppedFrames
            while true {
                running.server.broadcast(Message(namespace: "default", event: "marker", body: body))
                let before = settled
                try await running.server.waitForStatistics("the marker to be dropped") { $0.droppedFrames > before }
                let now = running.server.statistics.droppedFrames
                if now == settled + 1 { break }
                settled = now
            }
            let before = running.server.statistics.droppedFrames
            for _ in 0..<100 { try await socket.send(ByteBuffer(string: "ping"), opcode: .ping) }
            // The first pong that does not fit is dropped, and the server stops reading (what
            // it had read already is still answered, or dropped): a flood costs it nothing more.
            try await running.server.waitForStatistics("a pong to be dropped") { $0.droppedFrames > before }
            // Once the client reads again, so does the server.
            try await socket.send("$e;default;;_OnNamespaceConnect;0;0;")
            try await socket.setReading(true)
            var reply = ""
            while reply != "$e;;;;;;" {
                let frame = try await socket.next(timeout: .seconds(10))
                if frame.opcode == .text { reply = frame.text }
            }
            await socket.abort()
        }
    }

    @Test("with strict ordering, every receiver sees concurrent broadcasts in the same order", .serialized, arguments: Mount.allCases)
    func strictOrdering(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { $0.strictBroadcastOrdering = true }) { running in
            let all = try await clients(4, running)
            let server = running.server
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<4 {
                    group.addTask {
                        for index in 0..<100 {
                            server.broadcast(Message(namespace: "default", event: "o", body: "\(publisher)-\(index)"))
                        }
                    }
                }
            }
            var orders: [[String]] = []
            for (socket, _) in all {
                var order: [String] = []
                for _ in 0..<400 { order.append(try await socket.nextText()) }
                orders.append(order)
            }
            #expect(Set(orders.map { $0.joined(separator: ",") }).count == 1)
            // Each publisher's own order holds too.
            for publisher in 0..<4 {
                let mine = orders[0].filter { $0.contains(";\(publisher)-") }
                #expect(mine == (0..<100).map { ";default;;o;0;0;\(publisher)-\($0)" })
            }
            for (socket, _) in all { await socket.abort() }
        }
    }

    @Test("forEachConnection visits every open connection, synchronously and concurrently", .serialized, arguments: Mount.allCases)
    func forEach(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let all = try await clients(3, running)
            var seen: [String] = []
            running.server.forEachConnection { seen.append($0.id) }
            #expect(Set(seen) == Set(all.map(\.1)))
            let count = Mutex(0)
            await running.server.forEachConnectionConcurrently { conn in
                try? conn.namespace("default")?.emit("hello", "from do")
                count.withLock { $0 += 1 }
            }
            #expect(count.withLock { $0 } == 3)
            for (socket, _) in all { #expect(try await socket.nextText() == ";default;;hello;0;0;from do") }
            #expect(running.server.connectionCount == 3)
            #expect(running.server.connections().count == 3)
            for (socket, _) in all { await socket.abort() }
        }
    }
}
