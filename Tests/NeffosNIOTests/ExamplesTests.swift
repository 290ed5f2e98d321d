import Foundation
import NeffosProcess
import NeffosTesting
import Testing


@Suite("Examples")
struct ExamplesTests {
    @Test(
        "each self-contained example runs to its done: line and exits 0",
        arguments: [
            ("neffos-example-push", "done: received 3 ticks", ["--ticks", "3"]),
            ("neffos-example-ask", "done: 5 asks behaved as expected", []),
            ("neffos-example-rooms", "done: room broadcasts reached members only", []),
            ("neffos-example-native", "done: 4 raw messages echoed and broadcast", []),
            ("neffos-example-typed", "done: typed emit, typed asks and a refused body behaved as expected", []),
        ])
    func runs(_ example: (name: String, done: String, arguments: [String])) async throws {
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling(example.name), example.arguments)
        #expect(status == 0, "\(example.name) exited \(status); it wrote:\n\(output)")
        #expect(output.contains(example.done), "\(example.name) wrote:\n\(output)")
    }

    @Test("the Swift chat client says a line in a room of the chat server and sees it come back")
    func chatClient() async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling("neffos-chat"), ["--port", "0"], environment: ["NEFFOS_EXCHANGE_URL": "memory://"])
        defer { chat.terminate(signal: SIGKILL) }
        let line = try await chat.waitForOutput(containing: "chat page on http://127.0.0.1:")
        let port = try #require(line.split(separator: ":").last?.split(separator: "/").first.flatMap { Int($0) })
        let (status, output) = try await ChildProcess.run(
            try ChildProcess.sibling("neffos-chat-client"), ["--url", "ws://127.0.0.1:\(port)/echo", "--name", "zoe", "--room", "lobby", "--say", "hi there"])
        #expect(status == 0, "it wrote:\n\(output)")
        #expect(output.contains("zoe: hi there"))
        #expect(output.contains("done: said \"hi there\" in lobby"))
        chat.terminate()
        #expect(await chat.waitForExit() == 0)
    }

    @Test("an example given a bad option exits 2 with its usage")
    func badOption() async throws {
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling("neffos-example-push"), ["--nonsense"])
        #expect(status == 2)
        #expect(output.contains("usage: neffos-example-push"))
    }
}
