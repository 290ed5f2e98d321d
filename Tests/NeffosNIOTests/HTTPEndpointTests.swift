import NIOHTTP1
import Neffos
import NeffosNIO
import NeffosTesting
import Synchronization
import Testing

@Suite("HTTP endpoint")
struct HTTPEndpointTests {
    let events: Namespaces = ["default": Events()]

    @Test("HEAD on the WebSocket path answers 302 Found without upgrading")
    func headAnswers302() async throws {
        try await withServer(events, path: "/echo") { running in
            let response = try await httpRequest(running.port, "HEAD", "/echo")
            #expect(response.hasPrefix("HTTP/1.1 302 Found"))
        }
    }

    @Test("other methods answer 405 with Allow: GET", arguments: ["POST", "PUT", "DELETE", "PATCH"])
    func otherMethods405(method: String) async throws {
        try await withServer(events, path: "/echo") { running in
            let response = try await httpRequest(running.port, method, "/echo", headers: ["Content-Length: 0"])
            #expect(response.hasPrefix("HTTP/1.1 405 Method Not Allowed"))
            #expect(response.lowercased().contains("allow: get"))
        }
    }

    @Test("a WebSocket upgrade with POST is not upgraded")
    func postUpgradeRefused() async throws {
        try await withServer(events, path: "/echo") { running in
            let response = try await httpRequest(running.port, "POST", "/echo", headers: [
                "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13", "Content-Length: 0",
            ])
            #expect(response.hasPrefix("HTTP/1.1 405"))
        }
    }

    @Test("GET without an upgrade answers 400; other paths 404; the responder serves pages")
    func plainGets() async throws {
        let responder: HTTPPageResponder = { head in
            head.path == "/" ? .text("<h1>chat</h1>", contentType: "text/html") : nil
        }
        try await withServer(events, path: "/echo", responder: responder) { running in
            #expect(try await httpRequest(running.port, "GET", "/echo").hasPrefix("HTTP/1.1 400"))
            #expect(try await httpRequest(running.port, "GET", "/nothing").hasPrefix("HTTP/1.1 404"))
            let page = try await httpRequest(running.port, "GET", "/")
            #expect(page.hasPrefix("HTTP/1.1 200 OK"))
            #expect(page.contains("<h1>chat</h1>"))
            let socket = try await RawWebSocket.connect(to: running.url)
            await socket.abort()
        }
    }

    @Test("a refused origin gets 403 and the upgrade-error hook is told")
    func originCheck() async throws {
        let refused = Mutex(0)
        try await withServer(events, configure: { config in
            config.transport.checkOrigin = { $0 == "http://good.example" }
            config.onUpgradeError = { _ in refused.withLock { $0 += 1 } }
        }) { running in
            await #expect(throws: NeffosError.dialFailed) {
                _ = try await RawWebSocket.connect(to: running.url, headers: [("Origin", "http://evil.example")])
            }
            let good = try await RawWebSocket.connect(to: running.url, headers: [("Origin", "http://good.example")])
            await good.abort()
            #expect(refused.withLock { $0 } == 1)
        }
    }

    @Test("connections beyond the maximum are refused with 503")
    func maxConnections() async throws {
        let log = Log()
        try await withServer(events, configure: { config in
            config.transport.maxConnections = 2
            config.onDisconnect = { conn in log.append("gone:\(conn.id)") }
        }) { running in
            let (first, firstID) = try await handshake(running.url)
            let (second, _) = try await handshake(running.url)
            do {
                _ = try await RawWebSocket.connect(to: running.url)
                Issue.record("the third connection should be refused")
            } catch let error as NeffosError {
                #expect(error == .dialFailed)
                #expect(error.detail?.contains("503") == true)
            }
            await first.abort()
            // Room again once a connection is gone: its hook ran, and its socket gave its slot
            // back (the socket may close a moment after the hook).
            try await log.wait(for: "gone:\(firstID)")
            try await running.server.waitForConnectionSlots("the first socket's slot back") { $0 < 2 }
            let (third, _) = try await handshake(running.url)
            await third.abort()
            await second.abort()
        }
    }
}
