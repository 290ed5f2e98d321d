import NIOCore
import Neffos
import NeffosTesting
import Testing

@Suite("Typed bodies with the configured coder")
struct BodyCoderTests {
    struct Point: Codable, Equatable {
        var x: Int
        var y: Int
    }

    /// A coder that is not JSON: `x,y`.
    struct CSVCoder: BodyCoder {
        struct Bad: Error {}
        func encode<Value: Encodable>(_ value: Value) throws -> ByteBuffer {
            guard let point = value as? Point else { throw Bad() }
            return ByteBuffer(string: "\(point.x),\(point.y)")
        }
        func decode<Value: Decodable>(_ type: Value.Type, from body: ByteBuffer) throws -> Value {
            let parts = String(buffer: body).split(separator: ",").compactMap { Int($0) }
            guard parts.count == 2, let point = Point(x: parts[0], y: parts[1]) as? Value else { throw Bad() }
            return point
        }
    }

    @Test("inside handlers, Message.decode, Reply.encoded and Message(encoding:) use the server's coder")
    func handlersUseTheConfiguredCoder() async throws {
        var events = Events()
        events.answer("mirror") { _, message in
            let point = try message.decode(Point.self)
            return try Reply.encoded(Point(x: point.y, y: point.x))
        }
        events.answer("mirror later") { _, message in
            await Task.yield()
            let point = try message.decode(Point.self)
            return try Reply.encoded(Point(x: point.y, y: point.x))
        }
        events.on("shout") { ns, message in
            ns.broadcast(try Message(namespace: ns.namespace, event: "heard", encoding: try message.decode(Point.self)))
        }
        var configuration = Server.Configuration()
        configuration.bodyCoder = CSVCoder()
        let server = try Server(namespaces: ["default": events], configuration: configuration)
        let client = try await MemoryConnection.open(to: server)
        await client.send("M")
        _ = try await client.next()
        await client.send("$c;default;;_OnNamespaceConnect;0;0;")
        _ = try await client.next()
        await client.send("$1;default;;mirror;0;0;1,2")
        #expect(try await client.next() == "$1;default;;mirror;0;0;2,1")
        await client.send("$2;default;;mirror later;0;0;3,4")
        #expect(try await client.next() == "$2;default;;mirror later;0;0;4,3")
        await client.send(";default;;shout;0;0;5,6")
        #expect(try await client.next() == ";default;;heard;0;0;5,6")
        await client.disconnect()
    }

    @Test("outside handlers the default is JSON")
    func outsideHandlers() throws {
        let reply = try Reply.encoded(Point(x: 1, y: 2))
        #expect(try JSONBodyCoder().decode(Point.self, from: reply.body) == Point(x: 1, y: 2))
    }
}
