import Foundation
import Logging
import NIOCore
import Neffos
import NeffosNIO
import NeffosTesting
import ServiceLifecycle
import Testing

/// What the mounts add to the shared suites (which run against every ``Mount``): the
/// application's middleware decides upgrades, identities come from it, plain routes live next
/// to neffos, and graceful shutdown goes through the application's `ServiceGroup`.
@Suite("Mounts: Hummingbird and Vapor")
struct MountTests {
    static let events: Namespaces = {
        var events = Events()
        events.answer("whoami") { ns, _ in Reply(ns.conn.id) }
        events.on("say") { ns, message in ns.broadcast(Message(namespace: ns.namespace, event: "said", body: message.body)) }
        return ["default": events]
    }()

    #if Mounts
    static let mounted: [Mount] = [.hummingbird, .vapor]
    #else
    static let mounted: [Mount] = []
    #endif

    /// A raw upgrade request (what a browser sends), plus `extra` header lines.
    static func upgradeRequest(_ port: Int, path: String = "/echo", extra: [String] = []) async throws -> String {
        let lines = [
            "GET \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
        ] + extra
        // The answer's head is enough: a refusal may keep the connection alive, an upgrade does.
        return try await rawTCPSession(port, lines.joined(separator: "\r\n") + "\r\n\r\n", until: { $0.contains("\r\n\r\n") }).text
    }

    @Test("the application's middleware refuses an upgrade with its own answer (401), counted", .serialized, arguments: mounted)
    func middlewareRefuses(on mount: Mount) async throws {
        try await withServer(on: mount, Self.events, path: "/echo") { running in
            let refused = try await Self.upgradeRequest(running.port, extra: ["X-Refuse: yes"])
            #expect(refused.hasPrefix("HTTP/1.1 401"), "got: \(refused.prefix(80))")
            if mount.rawValue == "hummingbird" {
                // The mount ran the router itself; in Vapor the middleware answers before the
                // neffos route, so the app counts what it refuses.
                #expect(running.server.statistics.refusedConnections == 1)
            }
            #expect(running.server.connectionCount == 0)
            let accepted = try await Self.upgradeRequest(running.port)
            #expect(accepted.hasPrefix("HTTP/1.1 101"), "got: \(accepted.prefix(80))")
        }
    }

    @Test("the identity middleware established reaches the ID generator and the connection", .serialized, arguments: mounted)
    func identityFromMiddleware(on mount: Mount) async throws {
        let identities = Log()
        try await withServer(on: mount, Self.events, path: "/echo", configure: { configuration in
            configuration.idGenerator = { request in request.identity(as: String.self).map { "user-\($0)" } ?? "anonymous" }
            configuration.onConnect = { conn in identities.append(conn.request.identity(as: String.self) ?? "-") }
        }) { running in
            let (alice, aliceID) = try await handshake(running.url, headers: [("X-User", "alice")])
            #expect(aliceID == "user-alice")
            let (anonymous, anonymousID) = try await handshake(running.url)
            #expect(anonymousID == "anonymous")
            try await identities.wait(for: "-")
            #expect(identities.entries.sorted() == ["-", "alice"])
            try await alice.sendClose()
            try await anonymous.sendClose()
        }
    }

    @Test("the application's routes answer next to neffos; a plain GET on the neffos path is 400", .serialized, arguments: mounted)
    func routesNextToNeffos(on mount: Mount) async throws {
        try await withServer(on: mount, Self.events, path: "/echo") { running in
            let hello = try await httpRequest(running.port, "GET", "/hello")
            #expect(hello.hasPrefix("HTTP/1.1 200") && hello.contains("hello from \(mount)"), "got: \(hello.prefix(120))")
            let plain = try await httpRequest(running.port, "GET", "/echo")
            #expect(plain.hasPrefix("HTTP/1.1 400"), "got: \(plain.prefix(80))")
            let probe = try await httpRequest(running.port, "HEAD", "/echo")
            #expect(probe.hasPrefix("HTTP/1.1 302"), "neffos.js probes with HEAD; got: \(probe.prefix(80))")
        }
    }

    @Test("graceful shutdown closes each connection once with 1001 and runs its hooks", .serialized, arguments: Mount.allCases)
    func gracefulShutdown(on mount: Mount) async throws {
        let log = Log()
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.onDisconnect = { _ in log.append("gone") }
        let server = try Server(namespaces: Self.events, configuration: configuration)
        let running = try await mount.start(server, path: "/echo")
        let (socket, _) = try await handshake(running.url)
        try await connectNamespace(socket, "default")
        await running.stop()
        let close = try await socket.nextClose()
        #expect(close.closeCode == .goingAway)
        #expect(await socket.waitClosed(), "the socket closes after the closing handshake")
        #expect(log.entries == ["gone"], "the disconnect hook ran, once, before stop returned")
        await #expect(throws: NeffosError.dialFailed) { _ = try await RawWebSocket.connect(to: running.url, timeout: .seconds(1)) }
    }

    @Test("the Swift client talks to every mount: ask, broadcast, reply", .serialized, arguments: Mount.allCases)
    func swiftClient(on mount: Mount) async throws {
        try await withServer(on: mount, Self.events, path: "/echo") { running in
            let heard = Log()
            var events = Events()
            events.on("said") { _, message in heard.append(message.bodyString) }
            var configuration = Client.Configuration()
            configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
            let client = try await Client.dial(running.url, namespaces: ["default": events], configuration: configuration)
            let ns = try await client.connect("default")
            #expect(try await ns.ask("whoami", timeout: .seconds(5)).bodyString == client.id)
            try ns.emit("say", "hello over \(mount)")
            try await heard.wait(for: "hello over \(mount)")
            await client.close()
        }
    }

    @Test("one server behind a listener, a Hummingbird app and a Vapor app: broadcasts reach all, one shutdown closes all",
          .enabled(if: Mount.allCases.count == 3, "the mounts come with the Mounts trait"))
    func oneServerManyTransports() async throws {
        let log = Log()
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        configuration.onDisconnect = { _ in log.append("gone") }
        let server = try Server(namespaces: Self.events, configuration: configuration)
        var running: [RunningServer] = []
        for mount in Mount.allCases { running.append(try await mount.start(server, path: "/echo")) }
        #expect(running.count == Mount.allCases.count)
        var sockets: [RawWebSocket] = []
        for transport in running {
            let (socket, _) = try await handshake(transport.url)
            try await connectNamespace(socket, "default")
            sockets.append(socket)
        }
        #expect(server.connectionCount == running.count)
        try await sockets[0].send(";default;;say;0;0;to all")
        for socket in sockets {
            let text = try await socket.nextText()
            #expect(text.contains("said") && text.hasSuffix("to all"), "got: \(text)")
        }
        // The server goes first: every connection, whichever transport brought it, gets one 1001.
        await server.shutdown(timeout: .seconds(5))
        for socket in sockets {
            #expect(try await socket.nextClose().closeCode == .goingAway)
            #expect(await socket.waitClosed())
        }
        #expect(log.entries.count == running.count)
        for transport in running { await transport.stop() }
    }
}
