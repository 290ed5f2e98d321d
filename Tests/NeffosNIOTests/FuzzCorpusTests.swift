import Foundation
import NIOCore
import NIOWebSocket
import Neffos
import NeffosProcess
import NeffosTesting
import Testing

/// The committed seeds of each fuzz target (`Tests/Fuzz/Corpus/TARGET`), crash reproducers
/// included, replayed by `neffos-fuzz`: a check that fails again traps, and the status is not 0.
@Suite("Fuzz corpora replay")
struct FuzzCorpusTests {
    /// `Tests/Fuzz/Corpus`, found from this file.
    static let corpora = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Corpus")

    @Test("every seed of the target passes its checks", arguments: ["codec", "envelope", "url", "frames"])
    func replay(_ target: String) async throws {
        let corpus = Self.corpora.appendingPathComponent(target).path
        let seeds = try FileManager.default.contentsOfDirectory(atPath: corpus).filter { !$0.hasPrefix(".") }
        #expect(!seeds.isEmpty, "no seeds in \(corpus)")
        let tool = try ChildProcess.sibling("neffos-fuzz")
        let (status, output) = try await ChildProcess.run(tool, [target, corpus], timeout: .seconds(120))
        #expect(status == 0, "neffos-fuzz \(target) \(corpus) wrote:\n\(output)")
        #expect(output.contains("\(seeds.count) inputs, no failed check"), "it wrote:\n\(output)")
    }
}

/// What the fuzzers found, checked where it matters.
@Suite("Fuzz findings")
struct FuzzFindingsTests {
    @Test("an exchange URL's description hides the whole password, whatever the password, path and query hold")
    func urlDescriptionHidesThePassword() throws {
        for (text, described) in [
            ("nats://u:secret@h:1/@", "nats://u:***@h:1/@"),
            ("nats://u:secret@h?x=a@b:c", "nats://u:***@h?x=a@b:c"),
            ("nats://u:p:q@h", "nats://u:***@h"),
            ("nats://u:p@q@h:4222", "nats://u:***@h:4222"),
            ("nats://u:@h", "nats://u:@h"),
            ("nats://u@h", "nats://u@h"),
        ] {
            let url = try ExchangeURL(text)
            #expect(url.description == described, "\(text)")
        }
    }

    @Test("a frame the server cannot decode after it sent its close frame gets no second close frame")
    func oneCloseFrame() async throws {
        var events = Events()
        events.on("bye") { ns, _ in ns.conn.close(code: .normal, reason: "bye") }
        try await withServer(["default": events], configure: { $0.transport.closeTimeout = .milliseconds(300) }) { running in
            let (socket, _) = try await handshake(running.url)
            try await connectNamespace(socket, "default")
            // The server reads them in order: it closes, then NIO cannot decode a fragmented ping.
            try await socket.send(";default;;bye;0;0;")
            // The server may have ended the socket already (it does not wait for garbage after
            // its close frame): the send then fails, and nothing more can come either.
            try? await socket.send(frame: WebSocketFrame(fin: false, opcode: .ping, maskKey: .random(), data: ByteBuffer(string: "x")))
            #expect(try await socket.nextClose().closeCode == .normal)
            do {
                let frame = try await socket.next(timeout: .seconds(5))
                Issue.record("a frame after the close frame: \(frame)")
            } catch let error as RawWebSocketError {
                #expect(error == .closed, "the server ends the connection at its closing deadline")
            }
        }
    }
}
