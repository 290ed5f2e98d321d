import NIOCore
import Neffos
import NeffosProcess
import Testing

@testable import NeffosNATS

@Suite("JetStream client")
struct JetStreamTests {
    @Test("History: JetStream keeps a per-subject chain, reads by subject, survives a nats-server restart (file storage), and a recreated stream has a new identity")
    func chainReadsAndRestart() async throws {
        try await NATSServer.with(name: "js-1", jetStream: true) { server in
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
            #expect(try await client.message(in: stream, at: 3)?.subject == r2, "by sequence, whatever the subject")
            #expect(try await client.message(in: stream, at: 1).map { String(buffer: $0.data) } == "a")
            #expect(try await client.message(in: stream, at: 5) == nil)
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
        }
    }
}

@Suite("JetStream history")
struct JetStreamHistoryTests {
    @Test("History: two nodes appending to one room through JetStream make one chain; reads after a position are complete until trimmed")
    func chainAcrossNodes() async throws {
        try await NATSServer.with(name: "js-history", jetStream: true) { server in
            let nodeA = try await JetStreamHistory(client: try await JetStreamClient.connect(server.url), cluster: "test", maxPerRoom: 50, maxAge: .seconds(60))
            let nodeB = try await JetStreamHistory(client: try await JetStreamClient.connect(server.url), cluster: "test", maxPerRoom: 50, maxAge: .seconds(60))
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
            let none = try await nodeA.read(lobby, after: third, limit: 0)
            #expect(none.entries.isEmpty && !none.isComplete && none.latest == latest, "a read of none says where the room is")
            let binary = try await nodeA.append(ByteBuffer(bytes: [0, 1, 2]), isBinary: true, to: other)
            let kept = try await nodeA.read(other, after: binary.previous, limit: 1)
            #expect(kept.entries.map(\.isBinary) == [true] && kept.isComplete, "a binary message comes back binary")

            // A long read streams past the first steps back, with the same answers.
            for n in 1...40 { _ = try await nodeA.append(ByteBuffer(string: "l\(n)"), to: lobby) }
            let long = try await nodeB.read(lobby, after: latest, limit: 100)
            #expect(long.entries.map { String(buffer: $0.frame) } == (1...40).map { "l\($0)" } && long.isComplete, "40 after the position, complete")
            let longLimited = try await nodeB.read(lobby, after: latest, limit: 25)
            #expect(longLimited.entries.count == 25 && longLimited.entries.last?.sequence == long.entries.last?.sequence && !longLimited.isComplete)

            // Trimmed (50 per room): a position before what is kept is not complete.
            for n in 1...25 { _ = try await nodeA.append(ByteBuffer(string: "t\(n)"), to: lobby) }
            let trimmed = try await nodeB.read(lobby, after: third, limit: 100)
            #expect(trimmed.entries.count == 50 && !trimmed.isComplete)
        }
    }
}

@Suite("JetStream history by URL")
struct JetStreamHistoryURLTests {
    let histories = HistoryStoreRegistry([.memory, .jetStream])

    @Test("History: neffos.history.store.url=nats://… is a JetStream history the server opens when it starts, for its cluster, with its widest rule's bounds")
    func openedAtStart() async throws {
        try await NATSServer.with(name: "js-url", jetStream: true) { nats in
            let reader = try await Server.Configuration.reader(environment: [
                "NEFFOS_HISTORY_STORE_URL": nats.url + "?storage=memory", "NEFFOS_HISTORY_ROOMS": "default/*",
                "NEFFOS_HISTORY_MAX_COUNT": "7", "NEFFOS_CLUSTER_NAME": "urltest",
            ])
            var configuration = try Server.Configuration(config: reader, histories: histories)
            configuration.history.rules.append(HistoryRule(namespace: "other", limits: HistoryLimits(maxCount: 3, maxAge: .seconds(900))))
            let connector = try #require(configuration.history.shared as? JetStreamHistory.Connector)
            #expect(!connector.fileStorage && connector.description == nats.url)
            #expect(configuration.history.widestLimits == HistoryLimits(maxCount: 7, maxAge: .seconds(900)))
            let server = try Server(namespaces: ["default": Events(), "other": Events()], configuration: configuration)
            try await server.start()
            // Kept in the cluster's stream, within the widest bounds: 7 of 9.
            for n in 1...9 { server.broadcast(Message(namespace: "default", room: "lobby", event: "tick", body: "\(n)")) }
            let stream = "NEFFOS_HISTORY_urltest"
            // The appends run in the background, one after another: read (each read a round
            // trip to JetStream) until the ninth is kept, within a deadline.
            var read = try await server.history(ofRoom: "lobby", in: "default", limit: 100)
            let deadline = ContinuousClock.now + .seconds(10)
            while read.entries.last?.message?.bodyString != "9", ContinuousClock.now < deadline {
                read = try await server.history(ofRoom: "lobby", in: "default", limit: 100)
            }
            #expect(read.entries.compactMap { $0.message?.bodyString } == (3...9).map(String.init))
            #expect(read.latest.epoch.hasPrefix(stream + "-") && !read.isComplete, "trimmed to 7: not everything since the start")
            await server.shutdown(timeout: .seconds(2))
        }
    }

    @Test("History: a JetStream history that cannot be opened fails the server's start, saying why; a wrong storage names its key")
    func openFailures() async throws {
        func start(_ url: String) async throws {
            var configuration = Server.Configuration()
            configuration.history.rules = [HistoryRule(namespace: "default")]
            configuration.history.use(try histories.backend(for: url))
            try await Server(namespaces: ["default": Events()], configuration: configuration).start()
        }
        // A nats-server without JetStream: the start fails in seconds, saying what to do.
        let plain = try await NATSServer.start(name: "js-off")
        let port = plain.clientPort
        do {
            try await start(plain.url)
            Issue.record("the start succeeded without JetStream")
        } catch let error as NeffosError {
            #expect(error.description.contains("-js"), "\(error)")
        }
        await plain.stop()
        // No nats-server at all: the start fails (not the first broadcast), naming the server.
        do {
            try await start("nats://127.0.0.1:\(port)?connectTimeout=500")
            Issue.record("the start succeeded without a nats-server")
        } catch let error as NeffosError {
            #expect(error == .dialFailed && error.description.contains("127.0.0.1:\(port)") && error.description.contains("-js"), "\(error)")
        }
        let reader = try await Server.Configuration.reader(environment: ["NEFFOS_HISTORY_STORE_URL": "nats://127.0.0.1:4222?storage=disk"])
        #expect {
            _ = try Server.Configuration(config: reader, histories: histories)
        } throws: { error in
            "\(error)".contains("neffos.history.store.url: storage must be file or memory, got disk")
        }
    }
}
