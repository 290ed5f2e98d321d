import Foundation
import Logging
import Neffos
import NeffosNIO
import Synchronization

// Rooms with member listing: three clients join rooms, a room broadcast reaches the room's
// members only, the server lists `rooms(in:)` and `members(ofRoom:in:)`, a client leaves a
// room, and the listing changes.
//
//   swift run neffos-example-rooms

/// One client: its name, its connection and its presence in the `default` namespace.
struct Participant: Sendable {
    let name: String
    let client: Client
    let ns: NSConn

    /// Dials, connects to `default` and joins `rooms`; what it receives goes to `inbox`.
    static func join(_ name: String, _ rooms: [String], url: String, inbox: Inbox) async throws -> Participant {
        var events = Events()
        events.on("said") { _, message in inbox.add("\(name) got [\(message.room)] \(message.bodyString)") }
        var configuration = Client.Configuration()
        configuration.logger.logLevel = .warning
        configuration.headers = [("X-Name", name)]  // the server reads its members' names from it
        let client = try await Client.dial(url, namespaces: ["default": events], configuration: configuration)
        let ns = try await client.connect("default")
        for room in rooms {
            try await ns.joinRoom(room)  // asks the server, which may refuse in its _OnRoomJoin
            print("\(name): joined \(room)")
        }
        return Participant(name: name, client: client, ns: ns)
    }

    /// Emits `say` to a joined room (a message tagged with the room).
    func say(_ text: String, in room: String) throws {
        guard let joined = ns.room(room) else { throw NeffosError.badRoom.with(detail: "\(name) is not in \(room)") }
        print("\(name): says \"\(text)\" in \(room)")
        try joined.emit("say", text)
    }
}

@main
struct RoomsExample {
    /// A member's name, as its client sent it.
    static func name(of conn: Conn) -> String { conn.request.header("X-Name") ?? conn.id }

    /// The server's handler: a `say` to a room is broadcast to that room's members only.
    static var namespaces: Namespaces {
        var events = Events()
        events.on("say") { ns, message in
            guard !message.room.isEmpty, ns.isJoined(message.room) else { throw NeffosError.badRoom }
            ns.broadcast(Message(namespace: ns.namespace, room: message.room, event: "said",
                                 body: "\(name(of: ns.conn)): \(message.bodyString)"))
        }
        return ["default": events]
    }

    static func main() async {
        do {
            try await run()
        } catch {
            fail("unexpected error: \(error)")
        }
    }

    static func run() async throws {
        var configuration = Server.Configuration()
        configuration.logger.logLevel = .warning
        let server = try Server(namespaces: namespaces, configuration: configuration)
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0, path: "/rooms")
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port ?? 0)/rooms"
        print("server: listening on \(url)")

        let inbox = Inbox()
        let alice = try await Participant.join("alice", ["red"], url: url, inbox: inbox)
        let bob = try await Participant.join("bob", ["red", "blue"], url: url, inbox: inbox)
        let carol = try await Participant.join("carol", ["blue"], url: url, inbox: inbox)
        check(server, ["red": ["alice", "bob"], "blue": ["bob", "carol"]])

        // Each connection receives in order: had carol been sent the red message, it would
        // arrive before the blue one, and `expect` (which wants exactly these lines) would fail.
        try alice.say("hi, red", in: "red")
        await expect(inbox, ["alice got [red] alice: hi, red", "bob got [red] alice: hi, red"])
        try carol.say("hi, blue", in: "blue")
        await expect(inbox, ["bob got [blue] carol: hi, blue", "carol got [blue] carol: hi, blue"])

        try await bob.ns.leaveRoom("red")  // done once the server has removed bob from red
        print("bob: left red")
        check(server, ["red": ["alice"], "blue": ["bob", "carol"]])

        try alice.say("anyone left?", in: "red")
        await expect(inbox, ["alice got [red] alice: anyone left?"])
        try carol.say("bob, still here?", in: "blue")
        await expect(inbox, ["bob got [blue] carol: bob, still here?", "carol got [blue] carol: bob, still here?"])

        for participant in [alice, bob, carol] { await participant.client.close() }
        await listener.stop(timeout: .seconds(2))
        await server.shutdown(timeout: .seconds(2))
        print("done: room broadcasts reached members only; the listings matched")
    }

    /// Prints the server's rooms and members, and checks them against `expected`.
    static func check(_ server: Server, _ expected: [String: [String]]) {
        var rooms: [String: [String]] = [:]
        for room in server.rooms(in: "default") {
            rooms[room] = server.members(ofRoom: room, in: "default").map { name(of: $0.conn) }.sorted()
            print("server: room \(room): \(rooms[room, default: []].joined(separator: ", "))")
        }
        guard rooms == expected else { fail("expected the rooms \(expected), the server lists \(rooms)") }
    }

    /// Waits for exactly the `expected` deliveries and prints them.
    static func expect(_ inbox: Inbox, _ expected: Set<String>) async {
        let lines = await inbox.take(expecting: expected)
        for line in lines { print(line) }
        guard lines.count == expected.count, Set(lines) == expected else {
            fail("expected exactly \(expected.sorted()), received \(lines)")
        }
    }
}

/// What the clients received, in arrival order.
final class Inbox: Sendable {
    private let lines = Mutex<[String]>([])

    func add(_ line: String) { lines.withLock { $0.append(line) } }

    /// Waits (at most 5 s) until every line of `expected` arrived, then takes all lines received.
    func take(expecting expected: Set<String>) async -> [String] {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, !expected.isSubset(of: lines.withLock { Set($0) }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return lines.withLock { received in
            defer { received.removeAll() }
            return received
        }
    }
}

/// Prints `text` to standard error and exits with `code`.
func fail(_ text: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    exit(code)
}
