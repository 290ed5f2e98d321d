import Foundation
import Logging
import Neffos
import NeffosNATS
import NeffosNIO
import Synchronization

// Scale-out over NATS: three server nodes in one process, each with its own NATS connection,
// one client per node. A room broadcast made on node A reaches the clients of nodes B and C,
// and a server ask from node A is answered by the client connected to node C.
//
//   nats-server -a 127.0.0.1 -p 4222 &
//   swift run neffos-example-scale-out [--nats nats://127.0.0.1:4222]
//
// The URL comes from --nats, else NEFFOS_EXCHANGE_URL, else nats://127.0.0.1:4222.

/// What one client received, in arrival order.
final class Inbox: Sendable {
    private let lines = Mutex<[String]>([])
    func add(_ line: String) { lines.withLock { $0.append(line) } }
    func contains(_ prefix: String) -> Bool { lines.withLock { lines in lines.contains { $0.hasPrefix(prefix) } } }
}

@main
struct ScaleOutExample {
    static let nodes = ["node-a", "node-b", "node-c"]

    /// The same handlers on every node: a `chat` to a room is broadcast to the room, on every node.
    static var namespaces: Namespaces {
        var events = Events()
        events.on("chat") { ns, message in
            guard !message.room.isEmpty, ns.isJoined(message.room) else { throw NeffosError.badRoom }
            let node = ns.server?.nodeName ?? "?"
            ns.broadcast(Message(namespace: ns.namespace, room: message.room, event: "chat",
                                 body: "\(message.bodyString) (relayed by \(node))"))
        }
        return ["default": events]
    }

    static func main() async {
        var flag: String?
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--nats": flag = arguments.next()
            default: fail("usage: neffos-example-scale-out [--nats nats://host:port]", code: 2)
            }
        }
        let watchdog = startWatchdog(.seconds(30))
        do {
            let url = flag ?? ProcessInfo.processInfo.environment["NEFFOS_EXCHANGE_URL"] ?? "nats://127.0.0.1:4222"
            try await run(natsURL: url)
        } catch {
            fail("unexpected error: \(error)")
        }
        watchdog.cancel()
    }

    static func run(natsURL: String) async throws {
        let exchange: NATSExchange
        do {
            exchange = try NATSExchange(url: natsURL)  // one value; each node connects with it
        } catch {
            fail("\(error)", code: 2)
        }
        // One server and listener per node; each node opens its own connection to NATS.
        var servers: [Server] = []
        var listeners: [WebSocketListener] = []
        for node in nodes {
            var configuration = Server.Configuration()
            configuration.logger.logLevel = .warning
            configuration.nodeName = node
            configuration.exchange = exchange
            do {
                let server = try Server(namespaces: namespaces, configuration: configuration)
                let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0)
                try await listener.start()  // connects the exchange first: fails without NATS
                servers.append(server)
                listeners.append(listener)
                print("\(node): listening on ws://127.0.0.1:\(listener.port ?? 0)/, exchange \(natsURL)")
            } catch {
                fail("""
                    \(node) cannot join the cluster at \(natsURL): \(error)
                    start a NATS server first:
                        apt-get install nats-server libnats-dev
                        nats-server -a 127.0.0.1 -p 4222 &
                    """, code: 2)
            }
        }

        // One client per node; each joins the room `lobby` and answers the server's `where` ask.
        var clients: [Client] = []
        var inboxes: [Inbox] = []
        var lobbies: [Room] = []
        for (index, node) in nodes.enumerated() {
            let inbox = Inbox()
            let name = "client-\(node.suffix(1))"
            var events = Events()
            events.on("chat") { _, message in
                print("\(name) <- [\(message.room)] \(message.bodyString)")
                inbox.add("chat \(message.bodyString)")
            }
            events.on("probe") { _, message in inbox.add("probe \(message.bodyString)") }
            events.answer("where") { _, _ in "\(name), connected to \(node)" }
            var configuration = Client.Configuration()
            configuration.logger.logLevel = .warning
            let client = try await Client.dial("ws://127.0.0.1:\(listeners[index].port ?? 0)/", namespaces: ["default": events], configuration: configuration)
            let lobby = try await client.connect("default").joinRoom("lobby")
            lobbies.append(lobby)
            clients.append(client)
            inboxes.append(inbox)
            print("\(name): connected to \(node), joined lobby")
        }

        // Interest crosses NATS asynchronously: probe until nodes B and C deliver (bounded).
        let (onB, onC) = (inboxes[1], inboxes[2])
        let probes = await probe(from: servers[0], room: "lobby", until: [onB, onC])
        print("node-a: lobby reachable on node-b and node-c after \(probes) probe(s)")

        print("client-a -> [lobby] hello from client-a")
        try lobbies[0].emit("chat", "hello from client-a")
        guard await eventually({ onB.contains("chat hello from client-a") && onC.contains("chat hello from client-a") }) else {
            fail("the room broadcast did not reach node-b and node-c")
        }

        // A server ask from node A to the client of node C, by its ID.
        let idC = clients[2].id
        _ = await probe(from: servers[0], to: idC, until: [onC])
        let reply = try await servers[0].ask(Message(namespace: "default", event: "where", body: "?"), to: idC, timeout: .seconds(5))
        print("node-a: ask where -> \"\(reply.bodyString)\"")
        guard reply.bodyString == "client-c, connected to node-c" else { fail("unexpected reply \(reply.bodyString)") }

        for client in clients { await client.close() }
        for listener in listeners { await listener.stop(timeout: .seconds(2)) }
        for server in servers { await server.shutdown(timeout: .seconds(2)) }
        print("done: a room broadcast from node-a reached node-b and node-c; node-c answered node-a's ask")
    }

    /// Broadcasts `probe` messages from `server` (to a room or an ID) until every inbox got one;
    /// returns how many were sent. Fails after 15 s.
    static func probe(from server: Server, room: String = "", to id: String = "", until inboxes: [Inbox]) async -> Int {
        let tag = "\(room)/\(id)"
        let deadline = ContinuousClock.now + .seconds(15)
        var attempt = 0
        while !inboxes.allSatisfy({ $0.contains("probe \(tag)") }) {
            guard ContinuousClock.now < deadline else { fail("node-a never reached \(tag) across NATS within 15 s") }
            attempt += 1
            var message = Message(namespace: "default", room: room, event: "probe", body: "\(tag) #\(attempt)")
            message.to = id
            server.broadcast(message)
            _ = await eventually(within: .milliseconds(min(500, 20 * attempt))) { inboxes.allSatisfy { $0.contains("probe \(tag)") } }
        }
        return attempt
    }

    /// Waits until `condition` holds, checking every 10 ms; returns false after `timeout`.
    static func eventually(within timeout: Duration = .seconds(5), _ condition: @Sendable () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
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
