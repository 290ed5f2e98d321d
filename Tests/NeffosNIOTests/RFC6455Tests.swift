import NIOCore
import NIOWebSocket
import Neffos
import NeffosTesting
import Testing

@Suite("RFC 6455, strictly")
struct RFC6455Tests {
    private func relay() -> Events {
        var events = Events()
        events.on("say") { ns, message in ns.broadcastOthers(message) }
        events.answer("echo") { _, message in Reply(message.body) }
        return events
    }

    @Test("a text message that is not UTF-8 closes the sender with 1007 and reaches nobody", .serialized, arguments: Mount.allCases)
    func invalidUTF8(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            let all = try await clients(2, running)
            let (sender, listener) = (all[0].0, all[1].0)
            var frame = ByteBuffer(string: ";default;;say;0;0;")
            frame.writeBytes([0xC3, 0x28, 0xFF])
            try await sender.send(frame, opcode: .text)
            let close = try await sender.nextClose()
            #expect(close.closeCode == .invalidData)
            #expect(await listener.staysQuiet(for: .milliseconds(200)))
            await listener.abort()
        }
    }

    @Test("text that stops being UTF-8 in a fragment fails the connection with 1007 at once, before the message ends", .serialized, arguments: Mount.allCases)
    func invalidUTF8FailsFast(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            // Autobahn 6.4.1 and 6.4.2: F4 90 is past U+10FFFF, whatever follows.
            for (first, second) in [([0xCE, 0xBA], [0xF4, 0x90, 0x80, 0x80]), ([0xCE, 0xBA, 0xF4], [0x90])] as [([UInt8], [UInt8])] {
                let socket = try await RawWebSocket.connect(to: running.url)
                try await socket.send(ByteBuffer(bytes: first), opcode: .text, fin: false)
                try await socket.send(ByteBuffer(bytes: second), opcode: .continuation, fin: false)
                // The message never ends: a close now can only come from the fragment.
                let close = try await socket.nextClose()
                #expect(close.closeCode == .invalidData, "\(first) then \(second)")
                await socket.abort()
            }
            // A character split over fragments is fine.
            var start = ByteBuffer(string: "$1;default;;echo;0;0;")
            start.writeBytes([0xCE, 0xBA, 0xE1])
            try await socket.send(start, opcode: .text, fin: false)
            try await socket.send(ByteBuffer(bytes: [0xBD]), opcode: .continuation, fin: false)
            try await socket.send(ByteBuffer(bytes: [0xB9, 0xF0, 0x9F, 0x8E]), opcode: .continuation, fin: false)
            try await socket.send(ByteBuffer(bytes: [0x89]), opcode: .continuation, fin: true)
            #expect(try await socket.nextText() == "$1;default;;echo;0;0;κό🎉")
            // A message that ends inside a character is not.
            var truncated = ByteBuffer(string: ";default;;echo;0;0;")
            truncated.writeBytes([0xE1, 0xBD])
            try await socket.send(truncated, opcode: .text)
            #expect(try await socket.nextClose().closeCode == .invalidData)
            await socket.abort()
        }
    }

    @Test("a connection failed for a protocol error ends at once; the server does not wait for the peer's close", .serialized, arguments: Mount.allCases)
    func failureEndsAtOnce(on mount: Mount) async throws {
        // A closing handshake deadline far beyond the wait below: only the failure can end it.
        try await withServer(on: mount, ["default": relay()], configure: { $0.transport.closeTimeout = .seconds(60) }) { running in
            let (socket, _) = try await clients(1, running)[0]
            try await socket.send(frame: WebSocketFrame(fin: true, opcode: .text, maskKey: nil, data: ByteBuffer(string: "x")))
            #expect(try await socket.nextClose().closeCode == .protocolError)
            // Before: the server read no more frames and closed only at its deadline.
            #expect(await socket.waitClosed(timeout: .seconds(10)), "the server ended the connection at once")
        }
    }

    @Test("valid UTF-8 beyond ASCII passes, in any position", .serialized, arguments: Mount.allCases)
    func validUTF8(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            for body in ["日本語", "ascii then é", "12345678é", "emoji 🎉 at the end 🎉"] {
                try await socket.send("$1;default;;echo;0;0;\(body)")
                #expect(try await socket.nextText() == "$1;default;;echo;0;0;\(body)")
            }
            await socket.abort()
        }
    }

    @Test("an unmasked client frame fails the connection with 1002", .serialized, arguments: Mount.allCases)
    func unmasked(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            try await socket.send(frame: WebSocketFrame(fin: true, opcode: .text, maskKey: nil, data: ByteBuffer(string: "$1;default;;echo;0;0;x")))
            let close = try await socket.nextClose()
            #expect(close.closeCode == .protocolError)
            #expect(close.closeReason == "unmasked client frame")
            try await running.server.waitForStatistics("the violation counted") { $0.protocolViolations == 1 }
        }
    }

    @Test("reserved bits without a negotiated extension fail the connection with 1002", .serialized, arguments: Mount.allCases)
    func reservedBits(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            try await socket.send(frame: WebSocketFrame(fin: true, rsv1: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: "$1;default;;echo;0;0;x")))
            let close = try await socket.nextClose()
            #expect(close.closeCode == .protocolError)
        }
    }

    @Test("close codes: valid ones are echoed, reserved or unknown ones and a 1-byte payload get 1002, a non-UTF-8 reason 1007", .serialized, arguments: Mount.allCases)
    func closeCodes(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": relay()]) { running in
            var payloads: [(ByteBuffer, CloseCode?)] = []
            for code: UInt16 in [1000, 1001, 3000, 4999] {
                var data = ByteBuffer()
                data.writeInteger(code)
                payloads.append((data, CloseCode(rawValue: code)))
            }
            for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
                var data = ByteBuffer()
                data.writeInteger(code)
                payloads.append((data, .protocolError))
            }
            payloads.append((ByteBuffer(bytes: [0x03]), .protocolError))
            var badReason = ByteBuffer()
            badReason.writeInteger(UInt16(1000))
            badReason.writeBytes([0xFF, 0xFE])
            payloads.append((badReason, .invalidData))
            for (payload, expected) in payloads {
                let socket = try await RawWebSocket.connect(to: running.url)
                try await socket.send(payload, opcode: .connectionClose)
                let close = try await socket.nextClose()
                #expect(close.closeCode == expected, "close payload \(Array(payload.readableBytesView))")
                await socket.abort()
            }
            let violations = payloads.filter { $0.1 == .protocolError || $0.1 == .invalidData }.count
            #expect(running.server.statistics.protocolViolations == violations)
        }
    }
}
