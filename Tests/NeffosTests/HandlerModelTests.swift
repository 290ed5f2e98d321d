import Foundation
import NIOCore
import Synchronization
import Testing

@testable import Neffos

struct ChatLine: Codable, Equatable, Sendable {
    var from: String
    var text: String
}

/// A coder that writes `from|text`, to show the coder is pluggable.
struct PipeCoder: BodyCoder {
    struct Unsupported: Error {}
    func encode<Value: Encodable>(_ value: Value) throws -> ByteBuffer {
        guard let line = value as? ChatLine else { throw Unsupported() }
        return ByteBuffer(string: "\(line.from)|\(line.text)")
    }
    func decode<Value: Decodable>(_ type: Value.Type, from body: ByteBuffer) throws -> Value {
        let parts = String(buffer: body).split(separator: "|", maxSplits: 1).map(String.init)
        guard parts.count == 2, let value = ChatLine(from: parts[0], text: parts[1]) as? Value else {
            throw Unsupported()
        }
        return value
    }
}

enum ChatError: Error, CustomStringConvertible {
    case muted
    var description: String { "you are muted" }
}

@Suite("Handler model")
struct HandlerModelTests {
    @Test("`on` and `answer` pick a synchronous handler for a closure without await, an asynchronous one otherwise")
    func overloadsPickTheRightKind() {
        var events = Events()
        events.on("void") { _, _ in }
        events.answer("reply") { _, message in Reply("pong:" + message.bodyString) }
        events.answer("literal") { _, _ in "pong" }
        events.on("async") { _, _ in await Task.yield() }
        events.answer("asyncReply") { _, _ in
            await Task.yield()
            return "later"
        }
        events.answer("typed", as: ChatLine.self) { _, line in Reply(line.text) }
        events.on("typedAsync", as: ChatLine.self) { _, _ in await Task.yield() }
        events.on("throws") { _, _ in throw ChatError.muted }
        events.on("multi") { _, message in
            let text = message.bodyString
            _ = text.count
        }
        #expect(events["void"]?.isSynchronous == true)
        #expect(events["reply"]?.isSynchronous == true)
        #expect(events["literal"]?.isSynchronous == true)
        #expect(events["async"]?.isSynchronous == false)
        #expect(events["asyncReply"]?.isSynchronous == false)
        #expect(events["typed"]?.isSynchronous == true)
        #expect(events["typedAsync"]?.isSynchronous == false)
        #expect(events["throws"]?.isSynchronous == true)
        #expect(events["multi"]?.isSynchronous == true)
        #expect(Set(events.eventNames.map(\.rawValue)).count == 9)
    }

    @Test("an event without its own handler falls back to the any-event handler")
    func anyEventFallback() {
        var events = Events()
        events.answer("chat") { _, _ in "chat" }
        #expect(events.handler(for: "other") == nil)
        events.answer(.anyEvent) { _, _ in "any" }
        #expect(events.handler(for: "chat") != nil)
        #expect(events.handler(for: "other") != nil)
        #expect(events.handler(for: .namespaceConnect) != nil)
    }

    @Test("a dictionary literal declares handlers")
    func dictionaryLiteral() {
        let events: Events = [
            "ping": EventHandler(sync: { _, _ in "pong" }),
            "plain": EventHandler { _, _ in nil },
            .namespaceConnected: EventHandler { _, _ in
                await Task.yield()
                return nil
            },
        ]
        #expect(events["ping"]?.isSynchronous == true)
        #expect(events["plain"]?.isSynchronous == true, "a closure without await is synchronous")
        #expect(events[.namespaceConnected]?.isSynchronous == false)
    }

    @Test("system event names are neffos's")
    func systemEventNames() {
        #expect(EventName.namespaceConnect.rawValue == "_OnNamespaceConnect")
        #expect(EventName.namespaceConnected.rawValue == "_OnNamespaceConnected")
        #expect(EventName.namespaceDisconnect.rawValue == "_OnNamespaceDisconnect")
        #expect(EventName.roomJoin.rawValue == "_OnRoomJoin")
        #expect(EventName.roomJoined.rawValue == "_OnRoomJoined")
        #expect(EventName.roomLeave.rawValue == "_OnRoomLeave")
        #expect(EventName.roomLeft.rawValue == "_OnRoomLeft")
        #expect(EventName.anyEvent.rawValue == "_OnAnyEvent")
        #expect(EventName.nativeMessage.rawValue == "_OnNativeMessage")
    }

    @Test("native-only mode is the empty namespace with only a native-message handler")
    func nativeOnlyDetection() {
        var native = Events()
        native.on(.nativeMessage) { _, _ in }
        #expect(Namespaces(native).isNativeOnly)
        #expect(Namespaces(native).acceptsNativeMessages)
        var mixed = native
        mixed.on("chat") { _, _ in }
        #expect(!Namespaces(mixed).isNativeOnly)
        #expect(Namespaces(mixed).acceptsNativeMessages)
        let two: Namespaces = ["": native, "default": Events()]
        #expect(!two.isNativeOnly)
        #expect(!Namespaces(["default": Events()]).acceptsNativeMessages)
    }

    @Test("replies come from literals, interpolation, bytes and encodable values")
    func replyHelpers() throws {
        let literal: Reply = "pong"
        #expect(String(buffer: literal.body) == "pong")
        let count = 3
        let interpolated: Reply = "n=\(count)"
        #expect(String(buffer: interpolated.body) == "n=3")
        let bytes = Reply.bytes([1, 2, 3])
        #expect(bytes.isBinary)
        #expect(Array(bytes.body.readableBytesView) == [1, 2, 3])
        let encoded = try Reply.encoded(ChatLine(from: "a", text: "b"))
        #expect(try JSONDecoder().decode(ChatLine.self, from: Data(encoded.body.readableBytesView)) == ChatLine(from: "a", text: "b"))
    }

    @Test("typed bodies round-trip through JSON by default and through a custom coder")
    func typedBodies() throws {
        let line = ChatLine(from: "alice", text: "hi; there")
        let json = try Message(namespace: "default", event: "chat", encoding: line)
        #expect(try json.decode(ChatLine.self) == line)
        let piped = try Message(namespace: "default", event: "chat", encoding: line, coder: PipeCoder())
        #expect(piped.bodyString == "alice|hi; there")
        #expect(try piped.decode(ChatLine.self, using: PipeCoder()) == line)
    }

    @Test("a body that does not decode is an invalid payload carrying the cause")
    func undecodableBody() {
        let message = Message(event: "chat", body: "{not json")
        do {
            _ = try message.decode(ChatLine.self)
            Issue.record("decoding should fail")
        } catch {
            #expect(error == .invalidPayload)
            #expect(error.underlying != nil)
        }
    }

    @Test("known errors resolve built-in, registered and dynamic texts; others become remote errors")
    func knownErrors() {
        var known = KnownErrors()
        known.register(ChatError.muted)
        known.register { text in text.hasPrefix("quota:") ? RemoteError("QUOTA " + text) : nil }
        #expect(known.resolve("bad namespace") as? NeffosError == .badNamespace)
        #expect(known.resolve("bad room") as? NeffosError == .badRoom)
        #expect(known.resolve("write closed") as? NeffosError == .writeClosed)
        #expect(known.resolve("invalid payload") as? NeffosError == .invalidPayload)
        #expect(known.resolve("you are muted") as? ChatError == .muted)
        #expect((known.resolve("quota: 5") as? RemoteError)?.text == "QUOTA quota: 5")
        #expect((known.resolve("something else") as? RemoteError)?.text == "something else")
        #expect(KnownErrors.builtIn.resolve("you are muted") is RemoteError)
    }

    @Test("a received error frame carries the resolved error")
    func errorFrameResolution() throws {
        var known = KnownErrors()
        known.register(ChatError.muted)
        let message = try MessageCodec.decode(ByteBuffer(string: "$1;default;;chat;1;0;you are muted"), knownErrors: known)
        #expect(message.error as? ChatError == .muted)
        let encoded = try MessageCodec.encode(Message(namespace: "default", event: "chat").replying(error: ChatError.muted))
        #expect(String(buffer: encoded) == ";default;;chat;1;0;you are muted")
    }

    @Test("error descriptions say what to do, wire texts stay exact")
    func errorTexts() {
        let error = NeffosError.badNamespace.with(detail: "\"chat\"")
        #expect(NeffosError.wireText(of: error) == "bad namespace")
        #expect(error.description.contains("declare the namespace"))
        #expect(error == .badNamespace)
        #expect(error != .badRoom)
        #expect(NeffosError.wireText(of: ChatError.muted) == "you are muted")
    }

    @Test("wait tokens are unique under concurrency; client tokens start with $, server tokens are digits")
    func waitTokensUnique() async {
        let tokens = WaitTokens()
        let all = await withTaskGroup(of: [String].self) { group in
            for worker in 0..<8 {
                group.addTask {
                    (0..<10_000).map { _ in worker % 2 == 0 ? tokens.clientToken() : tokens.serverToken() }
                }
            }
            var all: [String] = []
            for await batch in group { all += batch }
            return all
        }
        #expect(all.count == 80_000)
        let numbers = all.map { UInt64($0.hasPrefix("$") ? String($0.dropFirst()) : $0)! }
        #expect(Set(numbers).count == 80_000)
        #expect(all.filter { $0.hasPrefix("$") }.count == 40_000)
        #expect(all.allSatisfy { $0.hasPrefix("$") || $0.allSatisfy(\.isNumber) })
    }

    @Test("server tokens look like Unix nanoseconds and increase")
    func serverTokensIncrease() {
        let tokens = WaitTokens()
        let first = tokens.next()
        let second = tokens.next()
        #expect(second > first)
        #expect(first > 1_700_000_000_000_000_000)
        #expect(WaitTokens.isClientToken("$1") && WaitTokens.isClientToken("#1"))
        #expect(!WaitTokens.isClientToken("1") && !WaitTokens.isClientToken(""))
    }

    @Test("declaring a namespace whose name cannot travel is an error")
    func unrepresentableNamespace() {
        #expect(throws: NeffosError.unrepresentableName) {
            try Server(namespaces: ["@%!semicolon@%!": Events()])
        }
    }

    @Test("the connection store increments and decrements atomically")
    func connStore() async {
        let store = ConnStore()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask { for _ in 0..<1000 { store.increment("n") } }
            }
        }
        #expect(store.get("n", as: Int.self) == 4000)
        #expect(store.decrement("n") == 3999)
        store["name"] = "alice"
        #expect(store.get("name", as: String.self) == "alice")
        #expect(store.increment("name") == 1)
    }
}
