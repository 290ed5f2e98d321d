import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

@Suite("Ask and reply")
struct AskTests {
    @Test("an asynchronous handler answers an ask; a synchronous one too", .serialized, arguments: Mount.allCases)
    func handlersAnswer(on mount: Mount) async throws {
        var events = Events()
        events.answer("slow") { _, m in
            await Task.yield()
            return "slow:\(m.bodyString)"
        }
        events.answer("fast") { _, m in "fast:\(m.bodyString)" }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send("$1;default;;slow;0;0;a")
            try await socket.send("$2;default;;fast;0;0;b")
            // In arrival order, although the first handler is asynchronous.
            #expect(try await socket.nextText() == "$1;default;;slow;0;0;slow:a")
            #expect(try await socket.nextText() == "$2;default;;fast;0;0;fast:b")
            await socket.abort()
        }
    }

    @Test("a failing handler sends an error frame, for asks and for plain emits", .serialized, arguments: Mount.allCases)
    func errorReplies(on mount: Mount) async throws {
        var events = Events()
        events.on("fail") { _, _ in throw TextError("nope") }
        events.on("room") { _, _ in throw NeffosError.badRoom.with(detail: "details stay local") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;fail;0;0;x")
            #expect(try await socket.nextText() == ";default;;fail;1;0;nope")
            try await socket.send("$1;default;;room;0;0;x")
            #expect(try await socket.nextText() == "$1;default;;room;1;0;bad room")
            await socket.abort()
        }
    }

    @Test("the server asks one connection by ID; a second reply is ignored", .serialized, arguments: Mount.allCases)
    func serverAskToID(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let (a, idA) = try await handshake(running.url)
            let (b, _) = try await handshake(running.url)
            try await connectNamespace(a, "default")
            try await connectNamespace(b, "default")
            async let answer = running.server.ask(Message(namespace: "default", event: "q", body: "?"), to: idA, timeout: .seconds(5))
            let question = try await a.nextText()
            #expect(await b.staysQuiet(for: .milliseconds(50)), "only the addressed connection is asked")
            let token = String(question.prefix { $0 != ";" })
            try await a.send("\(token);default;;q;0;0;first")
            try await a.send("\(token);default;;q;0;0;again")
            #expect(try await answer.bodyString == "first")
            // The duplicate is dropped, not dispatched as an event, and the connection still works.
            #expect(await a.staysQuiet(for: .milliseconds(50)))
            await a.abort()
            await b.abort()
        }
    }

    @Test("a server ask to everyone is won by the first reply", .serialized, arguments: Mount.allCases)
    func serverAskFirstResponder(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let (a, _) = try await handshake(running.url)
            let (b, _) = try await handshake(running.url)
            try await connectNamespace(a, "default")
            try await connectNamespace(b, "default")
            async let answer = running.server.ask(Message(namespace: "default", event: "who", body: ""), timeout: .seconds(5))
            let qa = try await a.nextText()
            let qb = try await b.nextText()
            #expect(qa == qb)
            let token = String(qa.prefix { $0 != ";" })
            try await b.send("\(token);default;;who;0;0;b")
            #expect(try await answer.bodyString == "b")
            try await a.send("\(token);default;;who;0;0;a")
            #expect(await a.staysQuiet(for: .milliseconds(50)))
            await a.abort()
            await b.abort()
        }
    }

    @Test("an unanswered server ask ends at its deadline; an error reply is thrown", .serialized, arguments: Mount.allCases)
    func serverAskTimeoutAndError(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()], configure: { $0.askTimeout = .milliseconds(150) }) { running in
            let (socket, id) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            await #expect(throws: NeffosError.timeout) {
                _ = try await running.server.ask(Message(namespace: "default", event: "q"), to: id)
            }
            _ = try await socket.nextText()
            #expect(running.server.statistics.asksTimedOut == 1)
            async let failing = running.server.ask(Message(namespace: "default", event: "q"), to: id, timeout: .seconds(5))
            let question = try await socket.nextText()
            let token = String(question.prefix { $0 != ";" })
            try await socket.send("\(token);default;;q;1;0;refused")
            do {
                _ = try await failing
                Issue.record("the error reply should throw")
            } catch let error as RemoteError {
                #expect(error.text == "refused")
            }
            await #expect(throws: NeffosError.timeout) {
                _ = try await running.server.ask(Message(namespace: "nobody", event: "q"))
            }
            await socket.abort()
        }
    }

    @Test("a handler may ask its own connection and get the reply while it waits", .serialized, arguments: Mount.allCases)
    func askFromInsideHandler(on mount: Mount) async throws {
        var events = Events()
        events.answer("order") { ns, m in
            let confirmation = try await ns.ask("confirm", "sure about \(m.bodyString)?", timeout: .seconds(5))
            return "ordered:\(confirmation.bodyString)"
        }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send("$1;default;;order;0;0;pizza")
            let ask = try await socket.nextText()
            let token = String(ask.prefix { $0 != ";" })
            #expect(ask == "\(token);default;;confirm;0;0;sure about pizza?")
            try await socket.send("\(token);default;;confirm;0;0;yes")
            #expect(try await socket.nextText() == "$1;default;;order;0;0;ordered:yes")
            await socket.abort()
        }
    }

    @Test("a connection ask times out, leaves no waiter, and its late reply is dropped", .serialized, arguments: Mount.allCases)
    func connAskTimeoutAndLateReply(on mount: Mount) async throws {
        let log = Log()
        let conn = Mutex<Conn?>(nil)
        var events = Events()
        events.on(.namespaceConnected) { ns, _ in conn.withLock { $0 = ns.conn } }
        events.on("start") { ns, _ in
            do {
                _ = try await ns.ask("confirm", timeout: .milliseconds(100))
            } catch {
                log.append("ask:\(error as? NeffosError == .timeout ? "timeout" : "\(error)")")
            }
        }
        events.on("confirm") { _, _ in log.append("confirm dispatched as an event") }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;start;0;0;")
            let ask = try await socket.nextText()
            try await log.wait(for: "ask:timeout")
            #expect(conn.withLock { $0?.pendingAskCount } == 0)
            let token = String(ask.prefix { $0 != ";" })
            try await socket.send("\(token);default;;confirm;0;0;too late")
            try await socket.send("$p;default;;_OnNamespaceConnect;0;0;")
            #expect(try await socket.nextText() == "$p;;;;;;", "the connection still answers")
            #expect(!log.entries.contains("confirm dispatched as an event"))
            await socket.abort()
        }
    }

    @Test("asks pending when the connection closes fail at once with write closed", .serialized, arguments: Mount.allCases)
    func asksFailOnClose(on mount: Mount) async throws {
        let log = Log()
        var events = Events()
        events.on("start") { ns, _ in
            do {
                _ = try await ns.ask("confirm", timeout: .seconds(30))
            } catch let error as NeffosError where error == .writeClosed {
                log.append("closed")
            }
        }
        try await withServer(on: mount, ["default": events]) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            try await socket.send(";default;;start;0;0;")
            _ = try await socket.nextText()
            await socket.abort()
            try await log.wait(for: "closed", timeout: .seconds(5))
        }
    }

    @Test("a server ask is answered only by a connection it went to; another's reply with its token is dropped", .serialized, arguments: Mount.allCases)
    func askAnsweredOnlyByReceivers(on mount: Mount) async throws {
        try await withServer(on: mount, ["default": Events()]) { running in
            let (asked, askedID) = try await handshake(running.url)
            let (intruder, _) = try await handshake(running.url)
            try await connectNamespace(asked, "default")
            try await connectNamespace(intruder, "default")
            async let answer = running.server.ask(Message(namespace: "default", event: "q", body: "?"), to: askedID, timeout: .seconds(5))
            let question = try await asked.nextText()
            let token = String(question.prefix { $0 != ";" })
            // The intruder guesses the token and answers first.
            try await intruder.send("\(token);default;;q;0;0;forged")
            try await intruder.send("$e;default;;_OnNamespaceConnect;0;0;")
            #expect(try await intruder.nextText() == "$e;;;;;;", "the forged reply was read (and dropped) before this")
            try await asked.send("\(token);default;;q;0;0;genuine")
            #expect(try await answer.bodyString == "genuine")
            await asked.abort()
            await intruder.abort()
        }
    }

    @Test("a client's request with a numeric token is dispatched even after the server has asked; a late reply is still dropped", .serialized, arguments: Mount.allCases)
    func numericClientTokens(on mount: Mount) async throws {
        var events = Events()
        events.answer("echo") { _, m in Reply(m.body) }
        try await withServer(on: mount, ["default": events], configure: { $0.askTimeout = .milliseconds(100) }) { running in
            let (socket, id) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            // The server asks once (and the client lets it time out)…
            await #expect(throws: NeffosError.timeout) {
                _ = try await running.server.ask(Message(namespace: "default", event: "q"), to: id)
            }
            let question = try await socket.nextText()
            let token = String(question.prefix { $0 != ";" })
            // …its late reply is dropped, not dispatched as an event…
            try await socket.send("\(token);default;;echo;0;0;late")
            // …while a request with a small numeric token (as some clients send) is answered.
            try await socket.send("5;default;;echo;0;0;x")
            #expect(try await socket.nextText() == "5;default;;echo;0;0;x")
            await socket.abort()
        }
    }
}
