import Foundation
import NIOCore
import NIOPosix
import NeffosProcess
import NeffosTesting
import Testing

/// Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`), spoken
/// to over the W3C WebDriver protocol.
final class Browser: Sendable {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    static let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    /// Whether both are installed (scripts/test installs them).
    static var available: Bool { chromium != nil && driver != nil }

    private let driverProcess: ChildProcess
    private let port: Int
    private let session: String
    private let profile: String

    private init(driverProcess: ChildProcess, port: Int, session: String, profile: String) {
        self.driverProcess = driverProcess
        self.port = port
        self.session = session
        self.profile = profile
    }

    /// Starts chromedriver and a headless browser session.
    static func start() async throws -> Browser {
        guard let chromium, let driver else { throw RawWebSocketError(description: "chromium and chromium-driver are not installed") }
        let port = try await freePort()
        let process = try ChildProcess.start(driver, ["--port=\(port)"])
        do {
            _ = try await process.waitForOutput(containing: "started successfully", timeout: .seconds(30))
            let profile = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-chromium-\(UUID().uuidString)").path
            let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
                "browserName": "chrome",
                "goog:chromeOptions": [
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=900,700", "--user-data-dir=\(profile)"],
                ],
            ]]]
            let created = try await call(port: port, "POST", "/session", capabilities)
            guard let session = (created as? [String: Any])?["sessionId"] as? String else {
                throw RawWebSocketError(description: "no WebDriver session: \(created)")
            }
            return Browser(driverProcess: process, port: port, session: session, profile: profile)
        } catch {
            process.terminate(signal: SIGKILL)
            await process.waitForExit()
            throw error
        }
    }

    /// Opens `url`.
    func open(_ url: String) async throws {
        _ = try await command("POST", "/url", ["url": url])
    }

    /// Runs `script` in the page and returns its result.
    @discardableResult
    func run(_ script: String, _ arguments: [Any] = []) async throws -> Any {
        try await command("POST", "/execute/sync", ["script": script, "args": arguments])
    }

    /// Waits, inside the page, until `condition` (a JavaScript expression) is true, up to
    /// `timeout`; returns whether it became true.
    func waitUntil(_ condition: String, timeout: Duration) async throws -> Bool {
        let milliseconds = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        _ = try await command("POST", "/timeouts", ["script": milliseconds + 5000])
        let script = """
            const done = arguments[arguments.length - 1];
            const deadline = Date.now() + \(milliseconds);
            const check = () => {
              if (\(condition)) return done(true);
              if (Date.now() > deadline) return done(false);
              requestAnimationFrame(check);
            };
            check();
            """
        return (try await command("POST", "/execute/async", ["script": script, "args": []]) as? Bool) ?? false
    }

    /// A PNG of the page.
    func screenshot() async throws -> Data {
        guard let text = try await command("GET", "/screenshot") as? String, let data = Data(base64Encoded: text) else {
            throw RawWebSocketError(description: "no screenshot")
        }
        return data
    }

    /// Ends the session and stops chromedriver.
    func quit() async {
        _ = try? await command("DELETE", "")
        driverProcess.terminate()
        await driverProcess.waitForExit(timeout: .seconds(10))
        try? FileManager.default.removeItem(atPath: profile)
    }

    private func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any {
        try await Self.call(port: port, method, "/session/\(session)\(path)", body)
    }

    private static func call(port: Int, _ method: String, _ path: String, _ body: [String: Any]?) async throws -> Any {
        let text = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        let response = try await LoopbackHTTP.request(method, port: port, path: path, body: text ?? (method == "POST" ? "{}" : nil), timeout: .seconds(60))
        let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8))
        let value = (object as? [String: Any])?["value"] ?? NSNull()
        guard response.status == 200 else {
            throw RawWebSocketError(description: "WebDriver \(method) \(path): \(response.status) \(value)")
        }
        return value
    }

    /// A port nobody listens on now (chromedriver cannot pick its own).
    private static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}

/// Browsers are heavy for a 2-core machine: one test at a time, two browsers at most.
@Suite("The chat page in a real browser", .serialized)
struct BrowserTests {
    /// The port of a page URL, `http://127.0.0.1:PORT/`.
    static func port(of page: String) -> Int? {
        page.split(separator: ":").last?.split(separator: "/").first.flatMap { Int($0) }
    }

    @Test(
        "two pages on two nodes of a local cluster join a room; a line sent in one shows in the other",
        .enabled(if: Browser.available, "needs chromium and chromium-driver (scripts/test installs them)"))
    func chatAcrossNodes() async throws {
        let cluster = try await LocalCluster.start(nodes: 2)
        let alice = try await Browser.start()
        let bob = try await Browser.start()
        do {
            try await alice.open(cluster.nodes[0].page + "?name=alice&room=lobby&autojoin")
            try await bob.open(cluster.nodes[1].page + "?name=bob&room=lobby&autojoin")
            let joined = "!document.getElementById('sendButton').disabled"
            #expect(try await alice.waitUntil(joined, timeout: .seconds(20)), "alice's page joined the room")
            #expect(try await bob.waitUntil(joined, timeout: .seconds(20)), "bob's page joined the room")
            // The room's interest crosses the NATS route asynchronously: send until bob sees a
            // line (each wait is bounded; so is the whole).
            let seen = "[...document.querySelectorAll('#log .line.chat')].some(l => l.textContent.includes('hello bob'))"
            var delivered = false
            for attempt in 1...40 where !delivered {
                try await alice.run("""
                    document.getElementById('text').value = arguments[0];
                    document.getElementById('sendButton').click();
                    """, ["hello bob #\(attempt)"])
                delivered = try await bob.waitUntil(seen, timeout: .milliseconds(500))
            }
            #expect(delivered, "bob's page shows alice's line")
            let line = try await bob.run("return [...document.querySelectorAll('#log .line.chat')].map(l => l.textContent).join('\\n')")
            #expect((line as? String)?.contains("alice: hello bob") == true, "got \(line)")
            // The nodes' counters moved: alice's node read her frames and published to the bus,
            // bob's node received from the bus and wrote to bob.
            let (alicePort, bobPort) = (try #require(Self.port(of: cluster.nodes[0].page)), try #require(Self.port(of: cluster.nodes[1].page)))
            let aliceNode = try await LoopbackHTTP.request("GET", port: alicePort, path: "/metrics").body
            let bobNode = try await LoopbackHTTP.request("GET", port: bobPort, path: "/metrics").body
            #expect((LoopbackHTTP.metric("neffos_messages_in", in: aliceNode) ?? 0) >= 3, "connect, join and a chat line: \(aliceNode)")
            #expect((LoopbackHTTP.metric("neffos_exchange_published_messages", in: aliceNode) ?? 0) >= 1)
            #expect((LoopbackHTTP.metric("neffos_exchange_received_messages", in: bobNode) ?? 0) >= 1)
            #expect((LoopbackHTTP.metric("neffos_messages_out", in: bobNode) ?? 0) >= 1)
            #expect(LoopbackHTTP.metric("neffos_exchange_up", in: bobNode) == 1)
            #expect(LoopbackHTTP.metric("neffos_rooms", in: bobNode) == 1)

            // Presence across nodes: each page lists both users (the members ask is answered
            // by every node), and when bob's page goes away, alice's list drops him.
            let listsBoth = "(t => t.includes('alice') && t.includes('bob'))(document.getElementById('members').textContent)"
            #expect(try await alice.waitUntil(listsBoth, timeout: .seconds(10)), "alice's page lists alice and bob")
            #expect(try await bob.waitUntil(listsBoth, timeout: .seconds(10)), "bob's page lists alice and bob")
            let png = try await bob.screenshot()
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG")
            let file = URL(fileURLWithPath: try ChildProcess.sibling("neffos")).deletingLastPathComponent()
                .appendingPathComponent("browser-test-chat.png")
            try png.write(to: file)
            print("browser test: screenshot at \(file.path) (\(png.count) bytes)")
            await bob.quit()  // the browser goes away, and its socket with it
            let bobGone = "(t => t.includes('alice') && !t.includes('bob'))(document.getElementById('members').textContent)"
            let gone = try await alice.waitUntil(bobGone, timeout: .seconds(15))
            let aliceSees = try await alice.run("return document.getElementById('members').textContent + ' | ' + [...document.querySelectorAll('#log .line')].map(l => l.textContent).slice(-4).join(' / ')")
            #expect(gone, "alice's page no longer lists bob: \(aliceSees)")
        } catch {
            await alice.quit()
            await bob.quit()
            _ = await cluster.stop()
            throw error
        }
        await alice.quit()
        await bob.quit()
        #expect(await cluster.stop() == 0)
    }

    @Test(
        "the chat mounted in Hummingbird and in Vapor: two pages chat; POST /announce reaches them; a page without a name is refused by the middleware",
        .enabled(if: Browser.available, "needs chromium and chromium-driver (scripts/test installs them)"),
        arguments: ["neffos-hummingbird-chat", "neffos-vapor-chat"])
    func mountedChat(executable: String) async throws {
        let chat = try ChildProcess.start(try ChildProcess.sibling(executable), ["--port", "0"])
        var browsers: [Browser] = []
        do {
            let line = try await chat.waitForOutput(containing: "chat page on", timeout: .seconds(60))
            let page = try #require(line.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init))
            let port = try #require(Int(page.split(separator: ":").last?.split(separator: "/").first ?? ""))
            let alice = try await Browser.start()
            browsers.append(alice)
            let bob = try await Browser.start()
            browsers.append(bob)
            try await alice.open(page + "?name=alice&room=lobby&autojoin")
            try await bob.open(page + "?name=bob&room=lobby&autojoin")
            let joined = "!document.getElementById('sendButton').disabled"
            #expect(try await alice.waitUntil(joined, timeout: .seconds(20)), "alice's page joined the room")
            #expect(try await bob.waitUntil(joined, timeout: .seconds(20)), "bob's page joined the room")
            try await alice.run("""
                document.getElementById('text').value = arguments[0];
                document.getElementById('sendButton').click();
                """, ["hello bob"])
            let seen = "[...document.querySelectorAll('#log .line.chat')].some(l => l.textContent.includes('alice: hello bob'))"
            #expect(try await bob.waitUntil(seen, timeout: .seconds(10)), "bob's page shows alice's line")

            let announced = try await LoopbackHTTP.request("POST", port: port, path: "/announce", body: #"{"room":"lobby","text":"deploy at five"}"#)
            #expect(announced.status == 202, "got \(announced.status) \(announced.body)")
            let announcement = "[...document.querySelectorAll('#log .line')].some(l => l.textContent.includes('announcement: deploy at five'))"
            #expect(try await alice.waitUntil(announcement, timeout: .seconds(10)), "alice's page shows the announcement")
            #expect(try await bob.waitUntil(announcement, timeout: .seconds(10)), "bob's page shows the announcement")

            // A page that gives no name (alice's browser, on a fresh page).
            let nameless = alice
            try await nameless.open(page + "?room=lobby")
            try await nameless.run("document.getElementById('name').value = ''; document.getElementById('joinButton').click();")
            #expect(try await nameless.waitUntil("document.querySelector('#log .line.error') !== null", timeout: .seconds(10)),
                    "a page without a name is refused (the middleware's 401)")
            #expect(try await nameless.run("return document.getElementById('sendButton').disabled") as? Bool == true)
        } catch {
            for browser in browsers { await browser.quit() }
            chat.terminate(signal: SIGKILL)
            await chat.waitForExit()
            throw error
        }
        for browser in browsers { await browser.quit() }
        chat.terminate()
        #expect(await chat.waitForExit(timeout: .seconds(10)) == 0, "the app shut down gracefully on SIGTERM")
    }
}
