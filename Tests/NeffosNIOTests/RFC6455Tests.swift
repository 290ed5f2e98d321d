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

    @Test("a text message that is not UTF-8 closes the sender with 1007 and reaches nobody")
    func invalidUTF8() async throws {
        try await withServer(["default": relay()]) { running in
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

    @Test("valid UTF-8 beyond ASCII passes, in any position")
    func validUTF8() async throws {
        try await withServer(["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            for body in ["日本語", "ascii then é", "12345678é", "emoji 🎉 at the end 🎉"] {
                try await socket.send("$1;default;;echo;0;0;\(body)")
                #expect(try await socket.nextText() == "$1;default;;echo;0;0;\(body)")
            }
            await socket.abort()
        }
    }

    @Test("an unmasked client frame fails the connection with 1002")
    func unmasked() async throws {
        try await withServer(["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            try await socket.send(frame: WebSocketFrame(fin: true, opcode: .text, maskKey: nil, data: ByteBuffer(string: "$1;default;;echo;0;0;x")))
            let close = try await socket.nextClose()
            #expect(close.closeCode == .protocolError)
            #expect(close.closeReason == "unmasked client frame")
        }
    }

    @Test("reserved bits without a negotiated extension fail the connection with 1002")
    func reservedBits() async throws {
        try await withServer(["default": relay()]) { running in
            let (socket, _) = try await clients(1, running)[0]
            try await socket.send(frame: WebSocketFrame(fin: true, rsv1: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: "$1;default;;echo;0;0;x")))
            let close = try await socket.nextClose()
            #expect(close.closeCode == .protocolError)
        }
    }

    @Test("close codes: valid ones are echoed, reserved or unknown ones and a 1-byte payload get 1002, a non-UTF-8 reason 1007")
    func closeCodes() async throws {
        try await withServer(["default": relay()]) { running in
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
        }
    }
}
