import Foundation
import Logging
import Neffos
import NeffosNIO

// Server push from a timer: a task of the server broadcasts a `tick` carrying the time to the
// `default` namespace every 200 ms with `Server.broadcast`; a client prints the ticks.
//
//   swift run neffos-example-push [--ticks 5] [--port 0]

@main
struct PushExample {
    static func main() async {
        var ticks = 5
        var port = 0
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--ticks": ticks = arguments.next().flatMap { Int($0) } ?? 0
            case "--port": port = arguments.next().flatMap { Int($0) } ?? -1
            default: fail("usage: neffos-example-push [--ticks N] [--port P]", code: 2)
            }
        }
        guard ticks > 0, (0...65535).contains(port) else {
            fail("usage: neffos-example-push [--ticks N (at least 1)] [--port P (0 picks a free one)]", code: 2)
        }
        let watchdog = startWatchdog(.seconds(10) + .milliseconds(200 * ticks))
        do {
            try await run(ticks: ticks, port: port)
        } catch {
            fail("\(error)")
        }
        watchdog.cancel()
    }

    static func run(ticks: Int, port: Int) async throws {
        // The server declares the namespace; it needs no handler: nothing is asked of it.
        var configuration = Server.Configuration()
        configuration.logger.logLevel = .warning
        let server = try Server(namespaces: ["default": Events()], configuration: configuration)
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: port, path: "/push")
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port ?? port)/push"
        print("server: listening on \(url)")

        // The push: a task of the server, not a reply to anything. `broadcast` queues the frame
        // (encoded once) to every connection of the namespace, never waiting for a slow one,
        // and returns how many it reached.
        let pusher = Task {
            var sequence = 0
            while (try? await Task.sleep(for: .milliseconds(200))) != nil {
                sequence += 1
                let time = Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(Date.now)
                server.broadcast(Message(namespace: "default", event: "tick", body: "#\(sequence) at \(time)"))
            }
        }

        // The client: its `tick` handler runs on the event loop; it hands each tick to this task.
        let (received, sink) = AsyncStream<String>.makeStream()
        var events = Events()
        events.on("tick") { _, message in
            let tick = message.bodyString
            sink.yield(tick)
        }
        var clientConfiguration = Client.Configuration()
        clientConfiguration.logger.logLevel = .warning
        let client = try await Client.dial(url, namespaces: ["default": events], configuration: clientConfiguration)
        try await client.connect("default")
        print("client: connected as \(client.id), waiting for \(ticks) ticks")

        var count = 0
        for await tick in received {
            count += 1
            print("client: tick \(tick)")
            if count == ticks { break }
        }

        pusher.cancel()
        await client.close()
        await listener.stop(timeout: .seconds(2))
        await server.shutdown(timeout: .seconds(2))
        print("done: received \(count) ticks")
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
        fail("timed out after \(limit)")
    }
}
