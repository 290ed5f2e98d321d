import Foundation
import Neffos
import NeffosNIO
import NeffosProcess
import NeffosTesting
import Testing

@Suite("Chat example")
struct ChatExampleTests {
    @Test("NEFFOS_EXCHANGE_URL picks the exchange; the page and the endpoint are served")
    func picksExchangeFromEnvironment() async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling("neffos-chat"), ["--port", "0"], environment: ["NEFFOS_EXCHANGE_URL": "memory://chat-test"])
        defer { chat.terminate(signal: SIGKILL) }
        _ = try await chat.waitForOutput(containing: "exchange memory://chat-test")
        let line = try await chat.waitForOutput(containing: "chat page on http://127.0.0.1:")
        let port = try #require(Int(line.split(separator: ":").last?.split(separator: "/").first ?? ""))
        let page = try await httpRequest(port, "GET", "/")
        #expect(page.hasPrefix("HTTP/1.1 200") && page.contains("neffos-client.js"))
        let script = try await httpRequest(port, "GET", "/neffos-client.js")
        #expect(script.contains("class NeffosClient"))

        let received = Received()
        var events = received.events()
        events.on("chat") { _, message in received.append(message) }
        var configuration = Client.Configuration()
        configuration.headers = [("X-Username", "tester")]
        let client = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: ["default": events], configuration: configuration)
        let ns = try await client.connect("default")
        let room = try await ns.joinRoom("lobby")
        try room.emit("chat", "hello")
        try await received.wait(for: 1, of: "chat")
        let line2 = try #require(received.messages.first { $0.event == "chat" })
        #expect(line2.bodyString.contains("\"from\":\"tester\"") && line2.bodyString.contains("\"text\":\"hello\""))
        let members = try await ns.ask("members", "lobby")
        #expect(members.bodyString == "[\"tester\"]")

        // A page that joins later gets the room's last lines at once, then its own notice.
        let replayed = Received()
        var laterEvents = replayed.events()
        laterEvents.on("chat") { _, message in replayed.append(message) }
        laterEvents.on("system") { _, message in replayed.append(message) }
        let later = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: ["default": laterEvents], configuration: configuration)
        _ = try await later.connect("default").joinRoom("lobby")
        // tester's notice, the line, then its own notice.
        try await replayed.wait("the replay") { $0.filter { $0.event == "chat" || $0.event == "system" }.count >= 3 }
        let seen = replayed.messages.filter { $0.event == "chat" || $0.event == "system" }
        #expect(seen.map(\.event.rawValue) == ["system", "chat", "system"], "\(seen)")
        #expect(seen[1].bodyString.contains("\"text\":\"hello\""))
        #expect(later.position(ofRoom: "lobby", in: "default") != nil)
        await later.close()
        await client.close()

        chat.terminate()
        #expect(await chat.waitForExit() == 0, "SIGTERM shuts it down gracefully")
    }

    @Test("/metrics lists the neffos_ series (Prometheus text); messages, bytes, namespaces, rooms, handler durations and limits move when a client chats")
    func metrics() async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling("neffos-chat"), ["--port", "0"])
        defer { chat.terminate(signal: SIGKILL) }
        let line = try await chat.waitForOutput(containing: "chat page on http://127.0.0.1:")
        let port = try #require(Int(line.split(separator: ":").last?.split(separator: "/").first ?? ""))
        let before = try await LoopbackHTTP.request("GET", port: port, path: "/metrics")
        #expect(before.status == 200)
        #expect(before.body.contains("# TYPE neffos_connections_accepted counter"), "got: \(before.body.prefix(400))")
        #expect(LoopbackHTTP.metric("neffos_messages_in", in: before.body) == 0)

        let received = Received()
        var configuration = quietClientConfiguration()
        configuration.headers = [("X-Username", "counted")]
        let client = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: ["default": received.events()], configuration: configuration)
        let room = try await client.connect("default").joinRoom("lobby")
        try room.emit("chat", "hello")
        try await received.wait(for: 1, of: "chat")
        let after = try await LoopbackHTTP.request("GET", port: port, path: "/metrics")
        #expect((LoopbackHTTP.metric("neffos_messages_in", in: after.body) ?? 0) >= 3, "connect, join and chat: \(after.body)")
        #expect((LoopbackHTTP.metric("neffos_messages_out", in: after.body) ?? 0) >= 1)
        #expect(LoopbackHTTP.metric("neffos_connections_accepted", in: after.body) == 1)
        #expect((LoopbackHTTP.metric("neffos_bytes_in", in: after.body) ?? 0) >= Double(";default;;_OnNamespaceConnect;0;0;".utf8.count))
        #expect((LoopbackHTTP.metric("neffos_bytes_out", in: after.body) ?? 0) > 0)
        #expect(LoopbackHTTP.metric("neffos_namespaces", in: after.body) == 1)
        #expect(LoopbackHTTP.metric("neffos_rooms", in: after.body) == 1)
        #expect((LoopbackHTTP.metric("neffos_handler_duration_seconds_count", in: after.body) ?? 0) >= 1, "the chat handler ran")
        // A limit hit is counted under its name.
        let refused = try await client.connect("default")
        await #expect(throws: NeffosError.limitExceeded) { _ = try await refused.joinRoom(String(repeating: "x", count: 300)) }
        let limits = try await LoopbackHTTP.request("GET", port: port, path: "/metrics")
        #expect(LoopbackHTTP.metric("neffos_limits_exceeded{limit=\"nameLength\"}", in: limits.body) == 1, "\(limits.body)")
        await client.close()
        chat.terminate()
        #expect(await chat.waitForExit() == 0)
    }


    @Test("an unknown exchange scheme stops it at start-up, naming the registered schemes")
    func unknownScheme() async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling("neffos-chat"), ["--port", "0"], environment: ["NEFFOS_EXCHANGE_URL": "redis://localhost:6379"])
        #expect(await chat.waitForExit() == 2)
        #expect(chat.text.contains("no exchange is registered for \"redis://\""))
        #expect(chat.text.contains("memory://"))
    }

    #if Mounts
    @Test("the chat mounted in Hummingbird and in Vapor: page, REST announce, name required, graceful stop", arguments: ["neffos-hummingbird-chat", "neffos-vapor-chat"])
    func mountedChats(executable: String) async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling(executable), ["--port", "0"])
        defer { chat.terminate(signal: SIGKILL) }
        let line = try await chat.waitForOutput(containing: "chat page on http://127.0.0.1:", timeout: .seconds(30))
        let port = try #require(Int(line.split(separator: ":").last?.split(separator: "/").first ?? ""))
        let page = try await httpRequest(port, "GET", "/")
        #expect(page.hasPrefix("HTTP/1.1 200") && page.contains("neffos-client.js"))
        let metrics = try await LoopbackHTTP.request("GET", port: port, path: "/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("# TYPE neffos_connections_accepted counter"), "\(metrics.body.prefix(300))")

        await #expect(throws: NeffosError.dialFailed, "no name: the middleware refuses") {
            _ = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: [:], configuration: quietClientConfiguration())
        }
        let received = Received()
        var configuration = quietClientConfiguration()
        configuration.headers = [("X-Username", "tester")]
        let client = try await Client.dial("ws://127.0.0.1:\(port)/echo", namespaces: ["default": received.events()], configuration: configuration)
        let ns = try await client.connect("default")
        _ = try await ns.joinRoom("lobby")
        let announced = try await LoopbackHTTP.request("POST", port: port, path: "/announce", body: #"{"room":"lobby","text":"deploy at five"}"#)
        #expect(announced.status == 202, "got \(announced.status) \(announced.body)")
        try await received.wait("the announcement") { $0.contains { $0.event == "system" && $0.bodyString == "announcement: deploy at five" } }
        #expect(try await ns.ask("members", "lobby").bodyString == "[\"tester\"]")

        await client.close()
        chat.terminate()
        #expect(await chat.waitForExit() == 0, "SIGTERM shuts it down gracefully")
    }
    #endif
}
