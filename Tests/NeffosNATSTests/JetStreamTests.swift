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

@Suite("JetStream history")
struct JetStreamHistoryTests {
    @Test("History: two nodes appending to one room through JetStream make one chain; reads after a position are complete until trimmed")
    func chainAcrossNodes() async throws {
        let server = try await NATSServer.start(name: "js-history", jetStream: true)
        do {
            let nodeA = try await JetStreamHistory(client: try await JetStreamClient.connect(server.url), cluster: "test", maxPerRoom: 20, maxAge: .seconds(60))
            let nodeB = try await JetStreamHistory(client: try await JetStreamClient.connect(server.url), cluster: "test", maxPerRoom: 20, maxAge: .seconds(60))
            #expect(nodeA.epoch == nodeB.epoch && nodeA.epoch.hasPrefix("NEFFOS_HISTORY_test-"))
            let lobby = nodeA.subject("default", "lobby")
            let other = nodeA.subject("default", "other")
            // Both nodes append to the lobby at once (with another room in between): each
            // message names the lobby's previous one, whoever kept it.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (node, name) in [(nodeA, "a"), (nodeB, "b")] {
                    group.addTask {
                        for n in 1...5 {
                            _ = try await node.append(ByteBuffer(string: "\(name)\(n)"), to: lobby)
                            _ = try await node.append(ByteBuffer(string: "x"), to: other)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = try await nodeA.read(lobby, after: 0, limit: 100)
            #expect(all.entries.count == 10 && all.isComplete)
            #expect(all.entries.first?.previous == 0)
            for (earlier, later) in zip(all.entries, all.entries.dropFirst()) {
                #expect(later.previous == earlier.sequence, "a chain without a hole: \(later.previous) after \(earlier.sequence)")
            }
            let bodies = all.entries.map { String(buffer: $0.frame) }
            #expect(bodies.filter { $0.hasPrefix("a") } == (1...5).map { "a\($0)" } && bodies.filter { $0.hasPrefix("b") } == (1...5).map { "b\($0)" })

            // After a position: the rest, complete; through a bound: up to it.
            let third = all.entries[2].sequence
            let rest = try await nodeB.read(lobby, after: third, limit: 100)
            #expect(rest.entries.map(\.sequence) == all.entries.dropFirst(3).map(\.sequence) && rest.isComplete)
            let upTo = try await nodeB.read(lobby, after: third, through: all.entries[5].sequence, limit: 100)
            #expect(upTo.entries.count == 3 && upTo.isComplete)
            let limited = try await nodeB.read(lobby, after: 0, limit: 4)
            #expect(limited.entries.map(\.sequence) == all.entries.suffix(4).map(\.sequence) && !limited.isComplete, "the newest, not complete")
            let latest = try #require(all.entries.last?.sequence)
            #expect(try await nodeA.read(lobby, after: latest, limit: 10).isComplete, "nothing missed")

            // Trimmed (20 per room): a position before what is kept is not complete.
            for n in 1...25 { _ = try await nodeA.append(ByteBuffer(string: "t\(n)"), to: lobby) }
            let trimmed = try await nodeB.read(lobby, after: third, limit: 100)
            #expect(trimmed.entries.count == 20 && !trimmed.isComplete)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
