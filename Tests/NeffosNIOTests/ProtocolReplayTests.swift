import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Testing

@Suite("Protocol replay")
struct ProtocolReplayTests {
    @Test("the exchange of PROTOCOL.md §3 replays frame by frame, byte for byte", .serialized, arguments: Mount.allCases)
    func replaySection3(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("chat") { _, message in log.append("chat:\(message.room):\(message.bodyString)") }
        events.answer("ping") { _, message in Reply("pong:" + message.bodyString) }
        events.on("fail") { _, _ in throw TextError("something went wrong") }
        var escaped = Events()
        escaped.on("ev") { ns, message in log.append("ev:\(ns.namespace):\(message.bodyString)") }
        let id = "0f6d9e1c-3b7a-4d4e-9a49-2f3b1c5e8a10"

        try await withServer(on: mount, ["default": events, "a;b": escaped], configure: { $0.idGenerator = { _ in id } }) { running in
            let socket = try await RawWebSocket.connect(to: running.url)
            try await socket.send("M")
            #expect(try await socket.nextText() == "A\(id)")

            try await socket.send("$1;default;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$1;;;;;;")

            try await socket.send(";default;;chat;0;0;hello;world")
            try await log.wait(for: "chat::hello;world")

            try await socket.send("$2;default;;ping;0;0;p1")
            #expect(try await socket.nextText() == "$2;default;;ping;0;0;pong:p1")

            try await socket.send("$3;default;;fail;0;0;x")
            #expect(try await socket.nextText() == "$3;default;;fail;1;0;something went wrong")

            try await socket.send("$4;unknown;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$4;unknown;;_OnNamespaceConnect;1;0;bad namespace")

            try await socket.send("$5;default;room1;_OnRoomJoin;0;0;")
            #expect(try await socket.nextText() == "$5;;;;;;")

            try await socket.send(";default;room1;chat;0;0;in room")
            try await log.wait(for: "chat:room1:in room")

            async let answer = running.server.ask(Message(namespace: "default", event: "question", body: "sure?"), to: id)
            let question = try await socket.nextText()
            let token = String(question.prefix { $0 != ";" })
            #expect(!token.isEmpty && token.allSatisfy(\.isNumber), "server tokens are plain digits: \(question)")
            #expect(question == "\(token);default;;question;0;0;sure?")
            try await socket.send("\(token);default;;question;0;0;yes")
            #expect(try await answer.bodyString == "yes")

            try await socket.send("$6;a@%!semicolon@%!b;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$6;;;;;;")
            try await socket.send(";a@%!semicolon@%!b;;ev;0;0;x")
            try await log.wait(for: "ev:a;b:x")

            #expect(await socket.staysQuiet(for: .milliseconds(100)), "nothing else was sent")
        }
    }
}
