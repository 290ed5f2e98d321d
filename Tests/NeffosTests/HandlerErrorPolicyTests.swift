import Neffos
import NeffosTesting
import Testing

@Suite("Handler errors on the wire")
struct HandlerErrorPolicyTests {
    struct DatabaseError: Error, CustomStringConvertible {
        var description: String { "connection to db.internal:5432 refused (password for admin)" }
    }

    struct Muted: Error, CustomStringConvertible {
        var description: String { "you are muted" }
    }

    private func server(_ policy: HandlerErrorPolicy) throws -> Server {
        var events = Events()
        events.answer("db") { _, _ in throw DatabaseError() }
        events.answer("muted") { _, _ in throw Muted() }
        events.answer("room") { _, _ in throw NeffosError.badRoom }
        var configuration = Server.Configuration()
        configuration.handlerErrors = policy
        configuration.knownErrors.register(Muted())
        return try Server(namespaces: ["default": events], configuration: configuration)
    }

    private func answers(_ server: Server) async throws -> [String] {
        let client = try await MemoryConnection.open(to: server)
        await client.send("M")
        _ = try await client.next()
        await client.send("$c;default;;_OnNamespaceConnect;0;0;")
        _ = try await client.next()
        var answers: [String] = []
        for (index, event) in ["db", "muted", "room"].enumerated() {
            await client.send("$\(index);default;;\(event);0;0;")
            answers.append(try await client.next())
        }
        await client.disconnect()
        return answers
    }

    @Test("by default the error's own text goes to the client, as neffos does")
    func describe() async throws {
        #expect(try await answers(server(.describe)) == [
            "$0;default;;db;1;0;connection to db.internal:5432 refused (password for admin)",
            "$1;default;;muted;1;0;you are muted",
            "$2;default;;room;1;0;bad room",
        ])
    }

    @Test("generic: internal errors stay on the server; known and neffos errors still cross the wire")
    func generic() async throws {
        #expect(try await answers(server(.generic("try again later"))) == [
            "$0;default;;db;1;0;try again later",
            "$1;default;;muted;1;0;you are muted",
            "$2;default;;room;1;0;bad room",
        ])
    }

    @Test("generic applies to the on-connect hook's refusal too")
    func refusal() async throws {
        var configuration = Server.Configuration()
        configuration.handlerErrors = .generic()
        configuration.onConnect = { _ in throw DatabaseError() }
        let server = try Server(namespaces: ["default": Events()], configuration: configuration)
        let client = try await MemoryConnection.open(to: server)
        await client.send("M")
        #expect(try await client.next() == "Hinternal error")
    }
}
