import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

@Suite("Namespaces and rooms")
struct NamespaceRoomTests {
    @Test("connecting twice is answered twice and fires connected once", .serialized, arguments: Mount.allCases)
    func idempotentConnect(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceConnected) { _, _ in log.append("connected") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default", wait: "$1")
            try await connectNamespace(socket, "default", wait: "$2")
            try await log.wait(for: "connected")
            #expect(await socket.staysQuiet(for: .milliseconds(50)))
            #expect(log.entries == ["connected"])
            #expect(running.server.connections(namespace: "default").count == 1)
            await socket.abort()
        }
    }

    @Test("a client disconnects a namespace; events for it are then dropped; repeating is harmless", .serialized, arguments: Mount.allCases)
    func clientDisconnect(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on(.namespaceDisconnect) { _, m in log.append("disconnect:forced=\(m.isForced)") }
        events.on("chat") { _, m in log.append("chat:\(m.bodyString)") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send("$d;default;;_OnNamespaceDisconnect;0;0;")
            #expect(try await socket.nextText() == "$d;;;;;;")
            try await log.wait(for: "disconnect:forced=false")
            try await socket.send(";default;;chat;0;0;dropped")
            try await socket.send("$e;default;;_OnNamespaceDisconnect;0;0;")
            #expect(try await socket.nextText() == "$e;;;;;;")
            try await connectNamespace(socket, "default", wait: "$f")
            try await socket.send(";default;;chat;0;0;kept")
            try await log.wait(for: "chat:kept")
            #expect(!log.entries.contains("chat:dropped"))
            await socket.abort()
        }
    }

    @Test("the before-events refuse: connect, join and leave get the handler's error", .serialized, arguments: Mount.allCases)
    func refusals(on mount: Mount) async throws {
        var guarded = Events()
        guarded.on(.namespaceConnect) { _, _ in throw TextError("members only") }
        var rooms = Events()
        rooms.on(.roomJoin) { _, m in if m.room == "vip" { throw TextError("not on the list") } }
        rooms.on(.roomLeave) { _, m in if m.room == "jail" { throw NeffosError.badRoom } }
        var anyRefuses = Events()
        anyRefuses.on(.anyEvent) { _, m in if m.event == .namespaceConnect { throw TextError("any says no") } }
        try await withServer(on: mount, ["guarded": guarded, "rooms": rooms, "any": anyRefuses]) { running in
            let (socket, _) = try await handshake(running.url)
            try await socket.send("$1;guarded;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$1;guarded;;_OnNamespaceConnect;1;0;members only")
            try await socket.send("$2;any;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$2;any;;_OnNamespaceConnect;1;0;any says no")
            try await connectNamespace(socket, "rooms", wait: "$3")
            try await socket.send("$4;rooms;vip;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$4;rooms;vip;_OnRoomJoin;1;0;not on the list")
            try await socket.send("$5;rooms;jail;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$5;;;;;;")
            try await socket.send("$6;rooms;jail;_OnRoomLeave;0;0;")
            #expect(try await socket.nextText() == "$6;rooms;jail;_OnRoomLeave;1;0;bad room")
            try await socket.send("$7;rooms;never;_OnRoomLeave;0;0;")
            #expect(try await socket.nextText() == "$7;;;;;;", "leaving a room not joined is acknowledged")
            #expect(running.server.members(ofRoom: "jail", in: "rooms").count == 1)
            #expect(running.server.members(ofRoom: "vip", in: "rooms").isEmpty)
            await socket.abort()
        }
    }

    @Test("the server forces a join, lists members, leaves all, and disconnects the client", .serialized, arguments: Mount.allCases)
    func serverInitiated(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("go") { ns, _ in
            try await ns.joinRoom("a")
            try await ns.joinRoom("b")
            log.append("rooms:\(ns.rooms.map(\.name))")
            try await ns.leaveAll()
            log.append("after:\(ns.rooms.map(\.name))")
            try await ns.disconnect()
            log.append("disconnected")
        }
        events.on(.roomLeft) { _, m in log.append("left:\(m.room)") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;go;0;0;")
            for (room, event) in [("a", "_OnRoomJoin"), ("b", "_OnRoomJoin"), ("a", "_OnRoomLeave"), ("b", "_OnRoomLeave"), ("", "_OnNamespaceDisconnect")] {
                let ask = try await socket.nextText()
                let token = String(ask.prefix { $0 != ";" })
                #expect(ask == "\(token);default;\(room);\(event);0;0;")
                if room == "b" && event == "_OnRoomJoin" {
                    // Both joined rooms are visible to the server before the leaves start.
                    try await socket.send("\(token);;;;;;")
                    try await log.wait(for: "rooms:[\"a\", \"b\"]")
                    #expect(running.server.members(ofRoom: "a", in: "default").count == 1)
                    #expect(running.server.rooms(in: "default") == ["a", "b"])
                    continue
                }
                try await socket.send("\(token);;;;;;")
            }
            try await log.wait(for: "disconnected")
            #expect(log.entries.contains("left:a") && log.entries.contains("left:b"))
            #expect(log.entries.contains("after:[]"))
            #expect(running.server.rooms(in: "default").isEmpty)
            #expect(running.server.connections(namespace: "default").isEmpty)
            await socket.abort()
        }
    }

    @Test("events for a namespace not connected are dropped; asks for one get bad namespace", .serialized, arguments: Mount.allCases)
    func unconnectedNamespace(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("chat") { _, m in log.append(m.bodyString) }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await socket.send(";default;;chat;0;0;early")
            try await socket.send("$1;default;;chat;0;0;ask")
            #expect(try await socket.nextText() == "$1;default;;chat;1;0;bad namespace")
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;chat;0;0;late")
            try await log.wait(for: "late")
            #expect(log.entries == ["late"])
            await socket.abort()
        }
    }

    @Test("unknown events go to the any-event handler, or are ignored", .serialized, arguments: Mount.allCases)
    func anyEvent(on mount: Mount) async throws {
        let log = Log()
        var withAny = Events()
        withAny.answer(.anyEvent) { _, m in "any:\(m.event)" }
        try await withServer(on: mount, ["any": withAny, "plain": Events()]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "any", wait: "$1")
            try await connectNamespace(socket, "plain", wait: "$2")
            try await socket.send("$3;any;;whatever;0;0;x")
            #expect(try await socket.nextText() == "$3;any;;whatever;0;0;any:whatever")
            try await socket.send("$4;plain;;whatever;0;0;x")
            #expect(await socket.staysQuiet(for: .milliseconds(100)), "no handler, no answer")
            log.append("done")
            await socket.abort()
        }
    }

    @Test("native messages reach the empty namespace's handler next to neffos namespaces", .serialized, arguments: Mount.allCases)
    func nativeMixed(on mount: Mount) async throws {
        let log = Log()
        var native = Events()
        native.on(.nativeMessage) { ns, m in
            log.append("native:\(m.bodyString):\(m.isNative)")
            try ns.conn.write(.native(ByteBuffer(string: "raw back")))
        }
        try await withServer(on: mount, ["": native, "default": Events()]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "")
            try await socket.send("just text")
            try await log.wait(for: "native:just text:true")
            #expect(try await socket.nextText() == "raw back")
            await socket.abort()
        }
    }

    @Test("binary frames carry the neffos layout both ways", .serialized, arguments: Mount.allCases)
    func binaryFrames(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("blob") { ns, m in
            log.append("blob:\(m.isBinary):\(m.bodyBytes)")
            try ns.emitBinary("blob", [0, 1, 255])
        }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            var frame = ByteBuffer(string: ";default;;blob;0;0;")
            frame.writeBytes([9, 0x3B, 200])
            try await socket.send(frame, opcode: .binary)
            try await log.wait(for: "blob:true:[9, 59, 200]")
            let reply = try await socket.next()
            #expect(reply.opcode == .binary)
            var expected = ByteBuffer(string: ";default;;blob;0;0;")
            expected.writeBytes([0, 1, 255])
            #expect(reply.data == expected)
            await socket.abort()
        }
    }

    @Test("the connection store keeps values across events", .serialized, arguments: Mount.allCases)
    func store(on mount: Mount) async throws {
        var events = Events()
        events.answer("count") { ns, _ in Reply("\(ns.conn.store.increment("n"))") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            for n in 1...3 {
                try await socket.send("$\(n);default;;count;0;0;")
                #expect(try await socket.nextText() == "$\(n);default;;count;0;0;\(n)")
            }
            await socket.abort()
        }
    }
}
