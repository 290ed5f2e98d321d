import NIOCore
import NIOWebSocket
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

/// A neighbour connection that must keep working while another misbehaves.
func assertNeighbourWorks(_ neighbour: RawWebSocket, token: String) async throws {
    try await neighbour.send("\(token);default;;echo;0;0;still here")
    #expect(try await neighbour.nextText() == "\(token);default;;echo;0;0;still here")
}

@Suite("Bad input", .heavyLoad)
struct BadInputTests {
    var events: Namespaces {
        var events = Events()
        events.answer("echo") { _, m in Reply(m.body) }
        return ["default": events]
    }

    @Test("malformed frames are dropped and counted; the connection and its neighbours go on", .serialized, arguments: Mount.allCases)
    func malformedFrames(on mount: Mount) async throws {
        try await withServer(on: mount, events) { running in
            let (bad, _) = try await handshake(running.url)
            let (neighbour, _) = try await handshake(running.url)
            try await connectNamespace(bad, "default")
            try await connectNamespace(neighbour, "default")
            for garbage in [";default;;chat;0;0", "hello", "", ";;", "M", "A1234", "Hrefused"] {
                try await bad.send(garbage)
            }
            // (A text frame that is not UTF-8 is no longer dropped but fails the connection with
            // 1007, as RFC 6455 requires: RFC6455Tests.invalidUTF8.)
            try await bad.send(ByteBuffer(bytes: [0, 1, 2, 255]), opcode: .binary)
            try await bad.send("$1;default;;echo;0;0;after")
            #expect(try await bad.nextText() == "$1;default;;echo;0;0;after", "nothing was answered before")
            #expect(running.server.statistics.invalidFrames >= 7)
            try await assertNeighbourWorks(neighbour, token: "$n")
            await bad.abort()
            await neighbour.abort()
        }
    }

    @Test("random frames never crash the server", .serialized, arguments: Mount.allCases)
    func fuzz(on mount: Mount) async throws {
        try await withServer(on: mount, events) { running in
            let (fuzzer, _) = try await handshake(running.url)
            let (neighbour, _) = try await handshake(running.url)
            try await connectNamespace(neighbour, "default")
            var rng = SplitMix64(seed: 7)
            let pieces = [";", "default", "_OnNamespaceConnect", "_OnRoomJoin", "_OnRoomLeave", "_OnNamespaceDisconnect",
                          "$", "1", "0", "@%!semicolon@%!", "echo", "\u{FFFF}", "日本", "", "room"]
            for _ in 0..<500 {
                var text = ""
                for _ in 0..<Int.random(in: 0...12, using: &rng) { text += pieces.randomElement(using: &rng)! }
                if Bool.random(using: &rng) {
                    try await fuzzer.send(text)
                } else {
                    var bytes = ByteBuffer(string: text)
                    bytes.writeBytes((0..<Int.random(in: 0...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                    try await fuzzer.send(bytes, opcode: .binary)
                }
            }
            try await assertNeighbourWorks(neighbour, token: "$z")
            await fuzzer.abort()
            await neighbour.abort()
        }
    }

    @Test("an oversized frame closes that connection with 1009, others go on", .serialized, arguments: Mount.allCases)
    func oversizedFrame(on mount: Mount) async throws {
        try await withServer(on: mount, events, configure: { config in
            config.transport.maxFrameSize = 1024
            config.transport.maxMessageSize = 4096
        }) { running in
            let (big, _) = try await handshake(running.url)
            let (neighbour, _) = try await handshake(running.url)
            try await connectNamespace(big, "default")
            try await connectNamespace(neighbour, "default")
            try await big.send(";default;;echo;0;0;" + String(repeating: "x", count: 2000))
            let close = try await big.nextClose()
            #expect(close.closeCode == .messageTooBig)
            try await assertNeighbourWorks(neighbour, token: "$n")
            await neighbour.abort()
        }
    }

    @Test("an oversized message sent in fragments closes with 1009", .serialized, arguments: Mount.allCases)
    func oversizedMessage(on mount: Mount) async throws {
        try await withServer(on: mount, events, configure: { config in
            config.transport.maxFrameSize = 1024
            config.transport.maxMessageSize = 2048
        }) { running in
            let (big, _) = try await handshake(running.url)
            try await connectNamespace(big, "default")
            try await big.send(ByteBuffer(string: ";default;;echo;0;0;"), opcode: .text, fin: false)
            // Past 2048 bytes the server closes; fragments sent after that may find the socket
            // closed, which is not what this test is about.
            for _ in 0..<4 {
                try? await big.send(ByteBuffer(string: String(repeating: "y", count: 1000)), opcode: .continuation, fin: false)
            }
            try? await big.send(ByteBuffer(string: "end"), opcode: .continuation, fin: true)
            let close = try await big.nextClose()
            #expect(close.closeCode == .messageTooBig)
        }
    }

    @Test("a message in fragments within the limits is reassembled", .serialized, arguments: Mount.allCases)
    func fragmentedMessage(on mount: Mount) async throws {
        try await withServer(on: mount, events) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(ByteBuffer(string: "$f;default;;ec"), opcode: .text, fin: false)
            try await socket.send(ByteBuffer(string: "ho;0;0;in "), opcode: .continuation, fin: false)
            try await socket.send(ByteBuffer(string: "pieces"), opcode: .continuation, fin: true)
            #expect(try await socket.nextText() == "$f;default;;echo;0;0;in pieces")
            await socket.abort()
        }
    }

    @Test("a flood of events behind a slow handler is throttled, not buffered without bound", .serialized, arguments: Mount.allCases)
    func backpressure(on mount: Mount) async throws {
        let gate = Gate()
        let flooderConn = Mutex<Conn?>(nil)
        var events = Events()
        events.on(.namespaceConnected) { ns, _ in flooderConn.withLock { if $0 == nil { $0 = ns.conn } } }
        events.on("slow") { _, _ in await gate.wait() }
        events.answer("echo") { _, m in Reply(m.body) }
        try await withServer(on: mount, ["default": events], configure: { $0.maxQueuedEvents = 8 }) { running in
            let (flooder, _) = try await handshake(running.url)
            let (neighbour, _) = try await handshake(running.url)
            try await connectNamespace(flooder, "default")
            try await connectNamespace(neighbour, "default")
            let padding = String(repeating: "p", count: 4000)
            for _ in 0..<500 { try await flooder.send(";default;;slow;0;0;\(padding)") }
            try await flooder.send("$last;default;;echo;0;0;done")
            try await assertNeighbourWorks(neighbour, token: "$n")
            // Reading stopped at the limit; what NIO had already read in that burst (at most
            // 16 reads of 64 KiB, so 16 × 16 frames of 4 KB) is queued too, the rest waits in
            // the socket.
            try await running.server.waitForStatistics("the flooder's reading paused") { $0.readPauses >= 1 }
            let queued = try #require(flooderConn.withLock { $0 }).queuedEventCount
            #expect(queued >= 8 && queued <= 8 + 16 * 16 + 1, "queued: \(queued)")
            gate.open()
            #expect(try await flooder.nextText(timeout: .seconds(10)) == "$last;default;;echo;0;0;done", "every queued event was handled, in order")
            await flooder.abort()
            await neighbour.abort()
        }
    }

    @Test("queued events are bounded in bytes too: large messages behind a slow handler stop the reading early", .serialized, arguments: Mount.allCases)
    func byteBackpressure(on mount: Mount) async throws {
        let gate = Gate()
        let flooderConn = Mutex<Conn?>(nil)
        var events = Events()
        events.on(.namespaceConnected) { ns, _ in flooderConn.withLock { if $0 == nil { $0 = ns.conn } } }
        events.on("slow") { _, _ in await gate.wait() }
        events.answer("echo") { _, m in Reply(m.body) }
        try await withServer(on: mount, ["default": events], configure: { config in
            config.maxQueuedEvents = 4096
            config.maxQueuedBytes = 64 * 1024
        }) { running in
            let (flooder, _) = try await handshake(running.url)
            try await connectNamespace(flooder, "default")
            let padding = String(repeating: "p", count: 16_000)
            // 1,500 × 16 KB = 24 MB: far under the count bound, far over the byte bound and more
            // than the kernel's socket buffers hold.
            let sending = Task { for _ in 0..<1_500 { try await flooder.send(";default;;slow;0;0;\(padding)") } }
            // The server stops reading once 4 × 16 KB are queued (not at the count bound).
            try await running.server.waitForStatistics("reading paused at the byte bound", timeout: .seconds(20)) { $0.readPauses >= 1 }
            try await running.server.waitForStatistics("the flooder's reading paused") { $0.readPauses >= 1 }
            let queued = try #require(flooderConn.withLock { $0 }).queuedEventCount
            // What NIO had already read in that burst (at most 16 reads of 64 KiB, so about 64
            // messages of 16 KB) is queued too; the rest waits in the socket and the sender.
            #expect(queued >= 4 && queued <= 69, "queued: \(queued)")
            gate.open()
            try await sending.value
            try await flooder.send("$last;default;;echo;0;0;done")
            #expect(try await flooder.nextText(timeout: .seconds(20)) == "$last;default;;echo;0;0;done", "every queued event was handled, in order")
            await flooder.abort()
        }
    }
}
