import NIOCore
import Neffos
import NeffosProcess
import Testing

@testable import NeffosNATS

@Suite("JetStream client")
struct JetStreamTests {
    @Test("History: JetStream keeps a per-subject chain, reads by subject, survives a nats-server restart (file storage), and a recreated stream has a new identity")
    func chainReadsAndRestart() async throws {
        let server = try await NATSServer.start(name: "js-1", jetStream: true)
        do {
            let client = try await JetStreamClient.connect(server.url)
            let stream = "NEFFOS_TEST_HISTORY"
            let identity = try await client.ensureStream(
                name: stream, subjects: ["neffos.test.hist.>"], maxMessagesPerSubject: 100, maxAge: .seconds(60), fileStorage: true)
            let (r1, r2) = ("neffos.test.hist.default.r1", "neffos.test.hist.default.r2")
            #expect(try await client.publish(ByteBuffer(string: "a"), to: r1, stream: stream, expectingLast: 0) == 1)
            #expect(try await client.publish(ByteBuffer(string: "b"), to: r1, stream: stream, expectingLast: 1) == 2)
            #expect(try await client.publish(ByteBuffer(string: "x"), to: r2, stream: stream, expectingLast: 0) == 3)
            await #expect(throws: JetStreamClient.PublishError.wrongLastSequence, "r1's last is 2, not 1") {
                _ = try await client.publish(ByteBuffer(string: "c"), to: r1, stream: stream, expectingLast: 1)
            }
            #expect(try await client.publish(ByteBuffer(string: "c"), to: r1, stream: stream, expectingLast: 2) == 4)

            let last = try #require(try await client.last(in: stream, subject: r1))
            #expect(last.sequence == 4 && String(buffer: last.data) == "c" && last.subject == r1)
            #expect(try await client.next(in: stream, subject: r1, from: 3)?.sequence == 4, "r2's 3 is skipped")
            #expect(try await client.next(in: stream, subject: r1, from: 1).map { String(buffer: $0.data) } == "a")
            #expect(try await client.next(in: stream, subject: r1, from: 5) == nil)
            #expect(try await client.last(in: stream, subject: "neffos.test.hist.default.none") == nil)

            // File storage: the messages and the stream's identity outlive a restart.
            try await server.restart()
            let again = try await JetStreamClient.connect(server.url)
            let sameIdentity = try await again.ensureStream(
                name: stream, subjects: ["neffos.test.hist.>"], maxMessagesPerSubject: 100, maxAge: .seconds(60), fileStorage: true)
            #expect(sameIdentity == identity)
            #expect(try await again.last(in: stream, subject: r1)?.sequence == 4)

            // A stream made again is another incarnation.
            try await again.deleteStream(stream)
            let recreated = try await again.ensureStream(
                name: stream, subjects: ["neffos.test.hist.>"], maxMessagesPerSubject: 100, maxAge: .seconds(60), fileStorage: true)
            #expect(recreated != identity && recreated.description.hasPrefix("\(stream)-"))
            #expect(try await again.last(in: stream, subject: r1) == nil)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
