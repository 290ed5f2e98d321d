import Neffos
import NeffosNIO
import NeffosTesting
import Testing

@Suite("Per-connection bounds")
struct LimitsTests {
    @Test("a client cannot join more rooms than the bound, nor a room with a name past the length bound", .serialized, arguments: Mount.allCases)
    func roomBounds(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { config in
            config.maxRoomsPerConnection = 3
            config.maxNameLength = 8
        }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            for room in ["r1", "r2", "r3"] {
                try await socket.send("$j;default;\(room);_OnRoomJoin;0;0;")
                #expect(try await socket.nextText() == "$j;;;;;;")
            }
            try await socket.send("$4;default;r4;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$4;default;r4;_OnRoomJoin;1;0;limit exceeded")
            try await socket.send("$l;default;r1;_OnRoomLeave;0;0;")
            #expect(try await socket.nextText() == "$l;;;;;;")
            try await socket.send("$5;default;123456789;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$5;default;123456789;_OnRoomJoin;1;0;limit exceeded")
            try await socket.send("$6;default;12345678;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$6;;;;;;", "room for one more after a leave; 8 bytes is allowed")
            #expect(running.server.statistics.limitsExceeded == 2)
            #expect(running.server.members(ofRoom: "r4", in: "default").isEmpty)
            #expect(running.server.rooms(in: "default") == ["12345678", "r2", "r3"])
            await socket.abort()
        }
    }

    @Test("the Swift client receives the refusal as NeffosError.limitExceeded; the server's own joins are not bounded", .serialized, arguments: Mount.allCases)
    func clientSeesLimit(on mount: Mount) async throws {
        let forced = Log()
        var events = Events()
        events.on("force") { ns, _ in
            Task {
                _ = try await ns.joinRoom("forced-by-server")
                forced.append("joined")
            }
        }
        try await withServer(on: mount, ["default": events], configure: { $0.maxRoomsPerConnection = 1 }) { running in
            let client = try await Client.dial(running.url, namespaces: ["default": Events()], configuration: quietClientConfiguration())
            let ns = try await client.connect("default")
            _ = try await ns.joinRoom("one")
            await #expect(throws: NeffosError.limitExceeded) { _ = try await ns.joinRoom("two") }
            try ns.emit("force")
            try await forced.wait(for: "joined")
            #expect(running.server.rooms(in: "default") == ["forced-by-server", "one"])
            await client.close()
        }
    }

    @Test("by default a page from another origin cannot open a WebSocket (403); the same origin and native clients can", .serialized, arguments: Mount.allCases)
    func crossSiteRefused(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            await #expect(throws: NeffosError.dialFailed) {
                _ = try await RawWebSocket.connect(to: running.url, headers: [("Origin", "https://evil.example")])
            }
            let same = try await RawWebSocket.connect(to: running.url, headers: [("Origin", "http://\(running.httpBase)")])
            try await same.send("M")
            #expect(try await same.nextText().hasPrefix("A"))
            await same.abort()
            let native = try await RawWebSocket.connect(to: running.url)
            await native.abort()
        }
    }
}
