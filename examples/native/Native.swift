import Foundation
import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting

// Native WebSocket messages: a server that declares only the empty namespace "" with only a
// `_OnNativeMessage` handler runs in native-only mode: no neffos handshake, no neffos framing;
// every WebSocket message goes to that handler, and a `Message.native` is written as its body
// alone. Plain WebSocket clients (here `RawWebSocket` from NeffosTesting) talk to it as is.
//
//   swift run neffos-example-native

@main
struct NativeExample {
    /// Echoes each message to its sender and broadcasts it to every other connection.
    static var namespaces: Namespaces {
        var events = Events()
        events.on(.nativeMessage) { ns, message in
            let text = message.bodyString  // the whole WebSocket message
            try ns.conn.write(.native(ByteBuffer(string: "echo: \(text)")))
            ns.broadcastOthers(.native(ByteBuffer(string: "\(ns.conn.id): \(text)")))
        }
        return Namespaces(events)  // the "" namespace alone: native-only mode
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
        // Name connections after the client's `X-Name` header, so the broadcast says who spoke.
        configuration.idGenerator = { request in request.header("X-Name") ?? UUID().uuidString.lowercased() }
        let server = try Server(namespaces: namespaces, configuration: configuration)
        guard server.namespaces.isNativeOnly else { fail("the namespaces should select native-only mode") }
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0)
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port ?? 0)/"
        print("server: native-only, listening on \(url)")

        // ann is alone: her message is only echoed.
        let ann = try await RawWebSocket.connect(to: url, headers: [("X-Name", "ann")])
        try await send(ann, "ann", "hi, anyone here?")
        try await expect(ann, "ann", "echo: hi, anyone here?")

        // ben joins; text that looks like neffos framing is just text here.
        let ben = try await RawWebSocket.connect(to: url, headers: [("X-Name", "ben")])
        try await send(ben, "ben", "hello;this;is;not;neffos")
        try await expect(ben, "ben", "echo: hello;this;is;not;neffos")
        try await expect(ann, "ann", "ben: hello;this;is;not;neffos")

        // "M" opens the handshake of a neffos connection; in native-only mode it is a message.
        try await send(ann, "ann", "M")
        try await expect(ann, "ann", "echo: M")
        try await expect(ben, "ben", "ann: M")

        // ben leaves with a close frame; ann's next message is only echoed.
        try await ben.sendClose()
        guard await ben.waitClosed() else { fail("the server did not close ben's connection") }
        print("ben: closed")
        try await send(ann, "ann", "bye")
        try await expect(ann, "ann", "echo: bye")

        try await ann.sendClose()
        _ = await ann.waitClosed()
        await listener.stop(timeout: .seconds(2))
        await server.shutdown(timeout: .seconds(2))
        print("done: 4 raw messages echoed and broadcast without neffos framing")
    }

    /// Sends one text frame.
    static func send(_ socket: RawWebSocket, _ who: String, _ text: String) async throws {
        print("\(who) -> \(text)")
        try await socket.send(text)
    }

    /// Reads the next text frame and checks it is `wanted`.
    static func expect(_ socket: RawWebSocket, _ who: String, _ wanted: String) async throws {
        let text = try await socket.nextText(timeout: .seconds(5))
        print("\(who) <- \(text)")
        guard text == wanted else { fail("\(who) expected \"\(wanted)\", received \"\(text)\"") }
    }
}

/// Prints `text` to standard error and exits with `code`.
func fail(_ text: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    exit(code)
}
