import Foundation
import Logging
import NIOCore
import Neffos
import NeffosNIO

// Typed Codable bodies: handlers registered with `on(_:as:)` / `answer(_:as:)` receive the
// decoded body; `emit(_:encoding:)`, `ask(_:encoding:as:)` and `Reply.encoded` encode; a body
// that does not decode is answered with `invalid payload`. Both sides use a BodyCoder of
// their own (JSON with sorted keys) instead of the default `JSONBodyCoder`.
//
//   swift run neffos-example-typed

struct Move: Codable, Sendable, CustomStringConvertible {
    var piece: String
    var from: String
    var to: String
    var description: String { "\(piece) \(from)-\(to)" }
}

struct Verdict: Codable, Sendable {
    var legal: Bool
    var reason: String?
}

/// A `BodyCoder` of your own: JSON with sorted keys, so equal values are equal bytes.
/// Set it in `Server.Configuration.bodyCoder` and `Client.Configuration.bodyCoder`.
struct SortedJSONCoder: BodyCoder {
    func encode<Value: Encodable>(_ value: Value) throws -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return ByteBuffer(bytes: try encoder.encode(value))
    }

    func decode<Value: Decodable>(_ type: Value.Type, from body: ByteBuffer) throws -> Value {
        try JSONDecoder().decode(type, from: Data(body.readableBytesView))
    }
}

@main
struct TypedExample {
    static var serverNamespaces: Namespaces {
        var events = Events()
        // The body is decoded before the closure runs; a bad body never reaches it.
        events.on("move", as: Move.self) { ns, move in
            let body = try ns.conn.bodyCoder.encode(move)
            ns.broadcast(Message(namespace: ns.namespace, event: "moved", body: body))
        }
        events.answer("validate", as: Move.self) { ns, move in
            try Reply.encoded(verdict(for: move), coder: ns.conn.bodyCoder)
        }
        return ["default": events]
    }

    static func verdict(for move: Move) -> Verdict {
        for square in [move.from, move.to] where !isSquare(square) {
            return Verdict(legal: false, reason: "\(square) is not a square")
        }
        return move.from == move.to ? Verdict(legal: false, reason: "a move must leave its square") : Verdict(legal: true)
    }

    static func isSquare(_ text: String) -> Bool {
        guard text.count == 2, let file = text.first, let rank = text.last else { return false }
        return "abcdefgh".contains(file) && "12345678".contains(rank)
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
        configuration.bodyCoder = SortedJSONCoder()
        let server = try Server(namespaces: serverNamespaces, configuration: configuration)
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0, path: "/typed")
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port ?? 0)/typed"
        print("server: listening on \(url)")

        let (moves, sink) = AsyncStream<Move>.makeStream()
        var events = Events()
        events.on("moved", as: Move.self) { _, move in
            print("client: moved \(move) (decoded by the typed handler)")
            sink.yield(move)
        }
        var clientConfiguration = Client.Configuration()
        clientConfiguration.logger.logLevel = .warning
        clientConfiguration.bodyCoder = SortedJSONCoder()
        let client = try await Client.dial(url, namespaces: ["default": events], configuration: clientConfiguration)
        let ns = try await client.connect("default")

        // A typed emit; the server's typed handler broadcasts it back as `moved`.
        let opening = Move(piece: "pawn", from: "e2", to: "e4")
        print("client: emit move \(opening)")
        try ns.emit("move", encoding: opening)
        for await _ in moves { break }  // wait for the handler to have seen it

        // A typed ask: the question is encoded, the reply decoded.
        let knight = try await ns.ask("validate", encoding: Move(piece: "knight", from: "g1", to: "f3"), as: Verdict.self, timeout: .seconds(2))
        print("client: validate knight g1-f3 -> legal: \(knight.legal)")
        guard knight.legal else { fail("g1-f3 should be legal") }

        // The same ask by hand, to see the bytes the custom coder wrote.
        let question = try client.conn.bodyCoder.encode(Move(piece: "king", from: "e1", to: "e9"))
        let raw = try await ns.ask("validate", question, timeout: .seconds(2))
        let king = try raw.decode(Verdict.self, using: client.conn.bodyCoder)
        print("client: validate king e1-e9 -> body \(raw.bodyString) -> legal: \(king.legal), reason: \(king.reason ?? "-")")
        guard raw.bodyString == #"{"legal":false,"reason":"e9 is not a square"}"# else { fail("unexpected body \(raw.bodyString)") }

        // A body that does not decode as a Move: the handler is not called, the ask fails.
        do {
            let reply = try await ns.ask("validate", #"{"piece":42}"#, timeout: .seconds(2))
            fail("a bad body should fail, got \(reply.bodyString)")
        } catch let error as NeffosError where error == .invalidPayload {
            print("client: validate {\"piece\":42} -> threw NeffosError.invalidPayload (\"\(error.text)\")")
        }

        await client.close()
        await listener.stop(timeout: .seconds(2))
        await server.shutdown(timeout: .seconds(2))
        print("done: typed emit, typed asks and a refused body behaved as expected")
    }
}

/// Prints `text` to standard error and exits with `code`.
func fail(_ text: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    exit(code)
}
