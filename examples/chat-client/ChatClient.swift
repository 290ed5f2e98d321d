import Foundation
import Logging
import Neffos
import NeffosNIO

// A command-line client for the chat example (`swift run neffos-chat`): it joins a room of the
// `default` namespace, prints the room's lines and notices, and sends each line typed on
// standard input. `/members` asks the server who is in the room; end of input (Ctrl-D) or
// `/quit` leaves. With `--say TEXT` it sends one line and exits once its own line came back.
//
//   swift run neffos-chat-client [--url ws://127.0.0.1:8080/echo] [--name NAME] [--room lobby] [--say TEXT]

/// A chat line, as the chat server broadcasts it (JSON `{"from":…,"text":…}`).
struct Line: Codable, Sendable {
    var from: String
    var text: String
}

@main
struct ChatClient {
    static let usage = "usage: neffos-chat-client [--url ws://127.0.0.1:8080/echo] [--name NAME] [--room ROOM] [--say TEXT]"

    static func main() async {
        var url = "ws://127.0.0.1:8080/echo"
        var name = "swift-\(Int.random(in: 1000...9999))"
        var room = "lobby"
        var say: String?
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            guard ["--url", "--name", "--room", "--say"].contains(argument), let value = arguments.next() else {
                if argument == "--help" || argument == "-h" {
                    print(usage)
                    exit(0)
                }
                fail(usage, code: 2)
            }
            switch argument {
            case "--url": url = value
            case "--name": name = value
            case "--room": room = value
            default: say = value
            }
        }
        // The server keeps names trimmed and at most 32 characters long.
        name = String(name.trimmingCharacters(in: .whitespaces).prefix(32))
        guard !name.isEmpty, !room.isEmpty else { fail(usage, code: 2) }
        do {
            try await run(url: url, name: name, room: room, say: say)
        } catch {
            fail("\(error)")
        }
    }

    static func run(url: String, name: String, room roomName: String, say: String?) async throws {
        // What the server sends to the room: chat lines (typed JSON bodies) and notices.
        let (echoes, echoSink) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(16))
        var events = Events()
        events.on("chat") { _, message in
            // Not `try`: a throwing handler would send an error frame back to the server.
            guard let line = try? message.decode(Line.self) else {
                print("[\(message.room)] (unreadable line) \(message.bodyString)")
                return
            }
            print("[\(message.room)] \(line.from): \(line.text)")
            if line.from == name { echoSink.yield(line.text) }
        }
        events.on("system") { _, message in
            print("* [\(message.room)] \(message.bodyString)")
        }

        var configuration = Client.Configuration()
        configuration.logger.logLevel = .warning
        configuration.headers = [("X-Username", name)]  // the chat server names us after it
        if say != nil { configuration.reconnect = nil }  // one-shot: fail rather than retry
        let client = try await Client.dial(url, namespaces: ["default": events], configuration: configuration)
        let ns = try await client.connect("default")
        let room = try await ns.joinRoom(roomName)  // rejoined by itself after a reconnection
        print("* connected to \(url) as \(name), in room \(roomName)")

        if let say {
            let watchdog = startWatchdog(.seconds(10))
            try room.emit("chat", say)
            let sent = String(say.prefix(2000))  // the server cuts lines at 2000 characters
            for await text in echoes where text == sent { break }
            watchdog.cancel()
            await client.close()
            print("done: said \"\(sent)\" in \(roomName)")
            return
        }

        // Say when the connection drops and comes back (the client reconnects by itself).
        let states = client.states()
        Task {
            for await state in states {
                switch state {
                case .disconnected, .reconnected, .closed: print("* \(state)")
                case .connecting, .connected: break
                }
            }
        }

        // Standard input is read on a thread of its own: `readLine` blocks.
        let (input, inputSink) = AsyncStream<String>.makeStream()
        Thread.detachNewThread {
            while let line = readLine() { inputSink.yield(line) }
            inputSink.finish()
        }
        for await line in input {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/quit" { break }
            do {
                if text == "/members" {
                    let reply = try await ns.ask("members", roomName, timeout: .seconds(5))
                    let members = try reply.decode([String].self)
                    print("* members of \(roomName): \(members.joined(separator: ", "))")
                } else {
                    try room.emit("chat", text)
                }
            } catch {
                print("* \(error)")  // for example while reconnecting
            }
        }
        await client.close()
        print("done: left \(roomName)")
    }
}

/// Prints `text` to standard error and exits with `code`.
func fail(_ text: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    exit(code)
}

/// Ends the program with an error if it is still running after `limit`.
func startWatchdog(_ limit: Duration) -> Task<Void, Never> {
    Task {
        guard (try? await Task.sleep(for: limit)) != nil else { return }
        fail("timed out after \(limit) without seeing our own line come back")
    }
}
