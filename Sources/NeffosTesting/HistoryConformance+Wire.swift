import NIOCore
import Neffos
import NeffosNIO

/// The checks on the wire: raw frames, as neffos.js, neffos Go and our extension see them.
extension HistoryConformance {
    /// A raw socket on `url`, through the handshake and connected to `default`; with
    /// `recovery`, it asks for the extension (`X-Neffos-Recovery: 1`).
    private func socket(_ url: String, recovery: Bool) async throws -> RawWebSocket {
        let socket = try await RawWebSocket.connect(to: url, headers: recovery ? [(name: "X-Neffos-Recovery", value: "1")] : [])
        try await socket.send("M")
        let accepted = try await socket.nextText()
        try expect(accepted.hasPrefix("A"), "the handshake: A<id>, got \(accepted)")
        try await socket.send("$c;default;;_OnNamespaceConnect;0;0;")
        let connected = try await socket.nextText()
        try expect(connected == "$c;;;;;;", "the namespace connect: $c;;;;;;, got \(connected)")
        return socket
    }

    /// Reads `count` frames, their text.
    private func texts(_ socket: RawWebSocket, _ count: Int) async throws -> [String] {
        var texts: [String] = []
        for _ in 0..<count { texts.append(try await socket.nextText(timeout: .seconds(15))) }
        return texts
    }

    /// The position a positioned frame (`~<epoch>:<offset>;…`) carries.
    private func position(of frame: String) throws -> String {
        let head = frame.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        try expect(head.hasPrefix("~") && head.contains(":"), "a positioned frame, got \(frame)")
        return String(head.dropFirst())
    }

    func frames() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"))
        let url = cluster.url(of: 0)
        // neffos.js and neffos Go clients send no header: a recovery body is ignored, the
        // reply and the messages are the protocol's.
        let plain = try await socket(url, recovery: false)
        try await plain.send("$j;default;lobby;_OnRoomJoin;0;0;~ignored:1")
        let plainReply = try await plain.nextText()
        try expect(plainReply == "$j;;;;;;", "a plain join's reply: $j;;;;;;, got \(plainReply)")
        let extended = try await socket(url, recovery: true)
        try await extended.send("$j;default;lobby;_OnRoomJoin;0;0;")
        let reply = try await extended.nextText()
        try expect(reply.hasPrefix("$j;default;lobby;_OnRoomJoin;0;0;~- 0 "), "an extension join's reply: not asked, 0 sent, got \(reply)")
        try await cluster.nodes.servers[0].flushExchange()

        cluster.broadcast(1...2)
        let plainFrames = try await texts(plain, 2)
        try expect(plainFrames == [";default;lobby;tick;0;0;1", ";default;lobby;tick;0;0;2"], "the protocol's frames: \(plainFrames)")
        let positioned = try await texts(extended, 2)
        let (first, second) = (try position(of: positioned[0]), try position(of: positioned[1]))
        try expect(positioned == ["~\(first);default;lobby;tick;0;0;1", "~\(second);default;lobby;tick;0;0;2"], "positioned frames: \(positioned)")

        // Recovering from the first position: the reply (recovered, 1 sent, the latest), then
        // the second message.
        let again = try await socket(url, recovery: true)
        try await again.send("$r;default;lobby;_OnRoomJoin;0;0;~\(first)")
        let recovered = try await texts(again, 2)
        try expect(recovered == ["$r;default;lobby;_OnRoomJoin;0;0;~1 1 \(second)", "~\(second);default;lobby;tick;0;0;2"], "a recovery from the first: \(recovered)")
        // A body that is not a position asks for nothing.
        try await again.send("$x;default;other;_OnRoomJoin;0;0;~not a position")
        let other = try await again.nextText()
        try expect(other.hasPrefix("$x;default;other;_OnRoomJoin;0;0;~- 0 "), "no recovery asked: \(other)")
        for socket in [plain, extended, again] { await socket.abort() }
        await cluster.stop()
    }

    func otherEpoch() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default"))
        cluster.broadcast(1...4)
        try await cluster.waitKept(4)
        let socket = try await socket(cluster.url(of: 0), recovery: true)
        // A position of another incarnation (a restarted server, a stream made again).
        try await socket.send("$r;default;lobby;_OnRoomJoin;0;0;~gone-1:2")
        let frames = try await texts(socket, 5)
        try expect(frames[0].hasPrefix("$r;default;lobby;_OnRoomJoin;0;0;~0 4 "), "not recovered, the 4 kept: \(frames)")
        try expect(frames.dropFirst().map { $0.split(separator: ";").last.map(String.init) ?? "" } == ["1", "2", "3", "4"], "what is kept, in order: \(frames)")
        await socket.abort()
        await cluster.stop()
    }

    func replay() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default", rooms: "lob*", replayOnJoin: 2))
        cluster.broadcast(1...3)
        try await cluster.waitKept(3)
        let plain = try await socket(cluster.url(of: 0), recovery: false)
        try await plain.send("$j;default;lobby;_OnRoomJoin;0;0;")
        let plainFrames = try await texts(plain, 3)
        try expect(plainFrames == ["$j;;;;;;", ";default;lobby;tick;0;0;2", ";default;lobby;tick;0;0;3"], "the newest 2 after the reply: \(plainFrames)")
        let extended = try await socket(cluster.url(of: 0), recovery: true)
        try await extended.send("$j;default;lobby;_OnRoomJoin;0;0;")
        let frames = try await texts(extended, 3)
        try expect(frames[0].hasPrefix("$j;default;lobby;_OnRoomJoin;0;0;~- 2 "), "not asked, 2 sent: \(frames)")
        try expect(try frames.dropFirst().map { try position(of: $0) }.count == 2 && frames.last?.hasSuffix(";tick;0;0;3") == true, "positioned: \(frames)")
        // A room the rule does not cover: nothing kept, nothing sent.
        try await plain.send("$k;default;other;_OnRoomJoin;0;0;")
        let other = try await plain.nextText()
        try expect(other == "$k;;;;;;", "only the reply: \(other)")
        let read = try await cluster.nodes.servers[0].history(ofRoom: "other", in: "default")
        try expect(read.entries.isEmpty, "nothing kept for a room without a rule")
        for socket in [plain, extended] { await socket.abort() }
        await cluster.stop()
    }

    func serverRead() async throws {
        let cluster = try await cluster(HistoryRule(namespace: "default", limits: HistoryLimits(maxCount: 5)))
        cluster.broadcast(1...8)
        try await cluster.waitKept(8)
        let server = cluster.nodes.servers[0]
        let read = try await server.history(ofRoom: "lobby", in: "default")
        let bodies = read.entries.compactMap { $0.message?.bodyString }
        try expect(bodies == ["4", "5", "6", "7", "8"] && !read.isComplete, "the kept 5, not all since the start: \(bodies)")
        try expect(read.latest == read.entries.last?.position, "the latest is the last kept: \(read.latest)")
        let after = try await server.history(ofRoom: "lobby", in: "default", after: read.entries[2].position, limit: 10)
        try expect(after.entries.compactMap { $0.message?.bodyString } == ["7", "8"] && after.isComplete, "after the third: 7, 8, complete")
        let limited = try await server.history(ofRoom: "lobby", in: "default", after: read.entries[0].position, limit: 2)
        try expect(limited.entries.compactMap { $0.message?.bodyString } == ["7", "8"] && !limited.isComplete, "limited: the newest 2, not complete")
        await cluster.stop()
    }
}
