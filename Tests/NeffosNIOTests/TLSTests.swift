import Foundation
import Logging
import Neffos
import NeffosNIO
import Testing

/// `wss://`: the listener serves TLS from PEM files, the Swift client checks the server's
/// chain and name, and each failure is the ``TLSFailure`` its documentation names.
@Suite("TLS (wss://)")
struct TLSTests {
    /// Serves the echo namespace over `wss://` with `tls` on a free port; runs `body` with the
    /// port and the listener.
    func withTLSServer(_ tls: ServerTLS?, _ body: (Int, WebSocketListener) async throws -> Void) async throws {
        var events = Events()
        events.answer("echo") { _, message in Reply(message.body) }
        var configuration = Server.Configuration()
        configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let server = try Server(namespaces: ["default": events], configuration: configuration)
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0, path: "/", tls: tls)
        try await listener.start()
        do {
            try await body(try #require(listener.port), listener)
        } catch {
            await listener.stop(timeout: .seconds(5))
            await server.shutdown(timeout: .seconds(5))
            throw error
        }
        await listener.stop(timeout: .seconds(5))
        await server.shutdown(timeout: .seconds(5))
    }

    /// Dials `url` expecting a TLS failure; returns it.
    func failedDial(_ url: String, tls: ClientTLS) async throws -> TLSFailure? {
        var configuration = Client.Configuration()
        configuration.handshakeTimeout = .seconds(10)
        do {
            let client = try await Client.dial(url, namespaces: ["default": Events()], configuration: configuration, tls: tls)
            await client.close()
            Issue.record("the dial to \(url) succeeded")
            return nil
        } catch let error as NeffosError {
            #expect(error == .dialFailed)
            return error.underlying as? TLSFailure
        }
    }

    @Test("a client trusting the test CA talks to a wss:// server, by IP address and by host name")
    func roundTrip() async throws {
        let ca = try TestCA()
        defer { ca.remove() }
        let files = try ca.issue("server")
        try await withTLSServer(try ServerTLS(certificateChain: files.chain, privateKey: files.key)) { port, _ in
            for host in ["127.0.0.1", "localhost"] {
                let client = try await Client.dial(
                    "wss://\(host):\(port)/", namespaces: ["default": Events()],
                    tls: try .trusting(certificateAuthorities: ca.caFile.path))
                let ns = try await client.connect("default")
                let reply = try await ns.ask("echo", "over TLS \(host)")
                #expect(reply.bodyString == "over TLS \(host)")
                await client.close()
            }
        }
    }

    @Test("each certificate failure is its documented TLSFailure: untrusted issuer, expired, not yet valid, wrong host")
    func certificateFailures() async throws {
        let ca = try TestCA()
        defer { ca.remove() }
        let trustCA = try ClientTLS.trusting(certificateAuthorities: ca.caFile.path)
        // Untrusted: the system's roots do not hold our CA, and another CA is not ours.
        let good = try ca.issue("good")
        let other = try TestCA(name: "another CA")
        defer { other.remove() }
        try await withTLSServer(try ServerTLS(certificateChain: good.chain, privateKey: good.key)) { port, _ in
            let url = "wss://127.0.0.1:\(port)/"
            let system = try await failedDial(url, tls: .systemTrust)
            #expect(system == .untrustedIssuer, "\(String(describing: system))")
            let wrongCA = try await failedDial(url, tls: try .trusting(certificateAuthorities: other.caFile.path))
            #expect(wrongCA == .untrustedIssuer, "\(String(describing: wrongCA))")
            #expect(wrongCA?.description.contains("neffos test CA") == true, "\(String(describing: wrongCA))")
        }
        let expired = try ca.issue("expired", validity: Date() - 7200...Date() - 3600)
        try await withTLSServer(try ServerTLS(certificateChain: expired.chain, privateKey: expired.key)) { port, _ in
            let failure = try await failedDial("wss://127.0.0.1:\(port)/", tls: trustCA)
            #expect(failure == .expired, "\(String(describing: failure))")
        }
        let early = try ca.issue("early", validity: Date() + 3600...Date() + 7200)
        try await withTLSServer(try ServerTLS(certificateChain: early.chain, privateKey: early.key)) { port, _ in
            let failure = try await failedDial("wss://127.0.0.1:\(port)/", tls: trustCA)
            #expect(failure == .notYetValid, "\(String(describing: failure))")
        }
        let elsewhere = try ca.issue("elsewhere", names: ["chat.example.com", "10.0.0.1"])
        try await withTLSServer(try ServerTLS(certificateChain: elsewhere.chain, privateKey: elsewhere.key)) { port, _ in
            for host in ["127.0.0.1", "localhost"] {
                let failure = try await failedDial("wss://\(host):\(port)/", tls: trustCA)
                #expect(failure == .wrongHost, "\(String(describing: failure))")
                #expect(failure?.description.contains("chat.example.com") == true)
            }
            // Hostname checking off, the same chain passes.
            var lenient = trustCA
            lenient.verifiesHostname = false
            let client = try await Client.dial("wss://127.0.0.1:\(port)/", namespaces: ["default": Events()], tls: lenient)
            await client.close()
        }
    }

    @Test("a wss:// client at a plain ws:// server fails its handshake; a ws:// client at a wss:// server is not served")
    func schemeMismatch() async throws {
        let ca = try TestCA()
        defer { ca.remove() }
        try await withTLSServer(nil) { port, _ in
            let failure = try await failedDial("wss://127.0.0.1:\(port)/", tls: try .trusting(certificateAuthorities: ca.caFile.path))
            #expect(failure == .handshakeFailed, "\(String(describing: failure))")
        }
        let files = try ca.issue("server")
        try await withTLSServer(try ServerTLS(certificateChain: files.chain, privateKey: files.key)) { port, listener in
            await #expect(throws: NeffosError.dialFailed) {
                _ = try await Client.dial("ws://127.0.0.1:\(port)/", namespaces: ["default": Events()])
            }
            #expect(listener.server.connectionCount == 0)
            // A client that does not trust the chain: its failed handshake is counted as refused.
            _ = try await failedDial("wss://127.0.0.1:\(port)/", tls: .systemTrust)
            try await listener.server.waitForStatistics("a refused TLS handshake") { $0.refusedConnections >= 1 }
        }
    }

    @Test("bad files: no file, no certificate, no key, a key of another certificate; each names the path")
    func fileFailures() async throws {
        let ca = try TestCA()
        defer { ca.remove() }
        let a = try ca.issue("a")
        let b = try ca.issue("b")
        let missing = ca.folder.appendingPathComponent("missing.pem").path
        #expect(throws: TLSFailure.fileNotFound) { _ = try ServerTLS(certificateChain: missing, privateKey: a.key) }
        do {
            _ = try ServerTLS(certificateChain: a.chain, privateKey: missing)
        } catch {
            #expect(error == .fileNotFound && error.detail == missing)
        }
        #expect(throws: TLSFailure.unreadableCertificate) { _ = try ServerTLS(certificateChain: a.key, privateKey: a.key) }
        #expect(throws: TLSFailure.unreadableKey) { _ = try ServerTLS(certificateChain: a.chain, privateKey: a.chain) }
        #expect(throws: TLSFailure.keyMismatch) { _ = try ServerTLS(certificateChain: a.chain, privateKey: b.key) }
        #expect(throws: TLSFailure.fileNotFound) { _ = try ClientTLS.trusting(certificateAuthorities: missing) }
        #expect(throws: TLSFailure.unreadableCertificate) { _ = try ClientTLS.trusting(pem: "not a certificate") }
    }

    @Test("reload: a new chain and key take effect for new connections, open ones keep theirs; a bad reload keeps the old chain")
    func reload() async throws {
        let first = try TestCA(name: "first CA")
        let second = try TestCA(name: "second CA")
        defer { first.remove(); second.remove() }
        let old = try first.issue("server")
        let new = try second.issue("server")
        // The listener's files: copied, so that "renewing" them is overwriting them.
        let chain = first.folder.appendingPathComponent("live.pem").path
        let key = first.folder.appendingPathComponent("live.key").path
        try FileManager.default.copyItem(atPath: old.chain, toPath: chain)
        try FileManager.default.copyItem(atPath: old.key, toPath: key)
        let tls = try ServerTLS(certificateChain: chain, privateKey: key)
        let trustFirst = try ClientTLS.trusting(certificateAuthorities: first.caFile.path)
        let trustSecond = try ClientTLS.trusting(certificateAuthorities: second.caFile.path)
        try await withTLSServer(tls) { port, _ in
            let url = "wss://127.0.0.1:\(port)/"
            let before = try await Client.dial(url, namespaces: ["default": Events()], tls: trustFirst)
            let beforeNS = try await before.connect("default")
            // Renewed files: a bad key first (the old chain stays), then the real pair.
            try Data(contentsOf: URL(fileURLWithPath: new.chain)).write(to: URL(fileURLWithPath: chain))
            #expect(throws: TLSFailure.keyMismatch) { try tls.reload() }
            let stillOld = try await Client.dial(url, namespaces: ["default": Events()], tls: trustFirst)
            await stillOld.close()
            try Data(contentsOf: URL(fileURLWithPath: new.key)).write(to: URL(fileURLWithPath: key))
            try tls.reload()
            let after = try await Client.dial(url, namespaces: ["default": Events()], tls: trustSecond)
            await after.close()
            let refused = try await failedDial(url, tls: trustFirst)
            #expect(refused == .untrustedIssuer)
            // The connection opened before the reload goes on.
            #expect(try await beforeNS.ask("echo", "still here").bodyString == "still here")
            await before.close()
        }
    }
}
