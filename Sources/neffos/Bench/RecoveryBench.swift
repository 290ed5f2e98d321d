import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import Neffos
import NeffosNIO
import Synchronization

extension Bench {
    struct Recovery: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "History and recovery: how long a client takes to catch up after missing N messages, and whether clients dropped again and again while broadcasts flow get every message once, in order.",
            discussion: """
                Starts neffos-bench-server --history on (every room of `bench` keeps 20,000 messages). \
                Latency: --rounds times for each N of --missed, a client notes its room's position at \
                a join, N messages are broadcast to the room, then a new connection joins asking to \
                recover from that position; the time from dialling to the N-th recovered message is \
                the recovery time (dial, handshake, namespace, join, N messages). Churn: --clients \
                Swift clients in one room, a publisher sending --rate numbered broadcasts a second for \
                --duration seconds, and each client asking the server to drop it every --drop-every \
                milliseconds on average; each then reconnects and recovers. Every client's sequence \
                must be 1…N with no gap and no repeat; the result counts gaps, repeats, and incomplete \
                recoveries. With --history jetstream: a nats-server -js and two bench servers on it \
                keeping the history in JetStream; a recovery joins the node the burst was not sent \
                on (another node), after the burst is kept (a member in the room received it all), \
                and the churn's clients are spread over both nodes.
                """)
        @Option(help: "Missed messages per recovery, comma-separated.") var missed = "100,10000"
        @Option(help: "Recoveries measured per size.") var rounds = 20
        @Option(help: "Clients dropped and recovering during the churn (0: skip it).") var clients = 20
        @Option(help: "Numbered broadcasts a second during the churn.") var rate = 2000
        @Option(help: "Mean milliseconds between two drops of one client.") var dropEvery = 500
        @Option(help: "Seconds of churn.") var duration = 10
        @Option(help: "Where the history is kept: on (each server's memory) or jetstream (2 nodes on a nats-server -js).") var history = "on"
        @OptionGroup var generator: GeneratorOptions

        private var sizes: [Int] { missed.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func validate() throws {
            guard !sizes.isEmpty, sizes.allSatisfy({ (1...20_000).contains($0) }) else { throw ValidationError("--missed takes sizes 1…20000, comma-separated") }
            guard (1...1000).contains(rounds) else { throw ValidationError("--rounds must be 1…1000") }
            guard clients >= 0, rate > 0, dropEvery > 0, (1...600).contains(duration) else { throw ValidationError("--clients ≥ 0, --rate and --drop-every > 0, --duration 1…600") }
            guard ["on", "jetstream"].contains(history) else { throw ValidationError("--history is on or jetstream") }
        }

        func run() async throws {
            _ = BenchProcesses.raiseFileLimit()
            installSignalHandlers()
            startWatchdog(seconds: 120 + duration * 3 + rounds * sizes.count * 2)
            var results: [BenchResult] = []
            do {
                var urls: [String] = []
                if history == "jetstream" {
                    let nats = try await BenchProcesses.startNATS(jetStream: true)
                    for _ in 0..<2 {
                        urls.append(try await BenchProcesses.startServer(raw: false, exchange: nats.url, arguments: ["--history", "jetstream"]).url)
                    }
                } else {
                    urls.append(try await BenchProcesses.startServer(raw: false, arguments: ["--history", "on"]).url)
                }
                for size in sizes { results.append(try await latency(urls.map { try WebSocketURL($0) }, missed: size)) }
                if clients > 0 { results.append(try await churn(urls)) }
                await BenchProcesses.stopAll()
            } catch {
                await BenchProcesses.stopAll()
                throw error
            }
            report(results, json: generator.json)
        }

        /// Recovery time for `missed` messages, `rounds` times: the burst sent on the first of
        /// `urls`, the recovery on the last.
        private func latency(_ urls: [WebSocketURL], missed: Int) async throws -> BenchResult {
            let (url, recoveryURL) = (urls[0], urls[urls.count - 1])
            let runner = BenchRunner(threads: generator.threads, progress: false, positions: true)
            // The control client asks for the bursts from inside the room; the ticks it gets
            // say when a burst is kept (with JetStream, a message is delivered once appended).
            let ticks = Watched(0)
            var events = Events()
            events.on("tick") { _, _ in ticks.update { $0 += 1 } }
            let control = try await Client.dial(url.text, namespaces: ["bench": events])
            let room = "recover-\(missed)"
            _ = try await control.connect("bench").joinRoom(room)
            var times = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
            for round in 0..<rounds {
                // The room's position now, from a join's reply.
                let (marker, _) = try await runner.connect(1) { _ in (url, [room], .receiver) }
                guard let position = try await marker[0].joinedAt() else { throw ToolError("the server did not give a position: is --history on?") }
                marker[0].close()
                _ = try await control.conn.ask(Message(namespace: "bench", room: room, event: "burst", body: "\(missed)"), timeout: .seconds(60))
                let kept = (round + 1) * missed
                _ = try await ticks.wait(
                    timeout: .seconds(120), orThrow: { ToolError("the burst was not delivered in 120 s (\(ticks.read { $0 }) of \(kept))") },
                    until: { $0 >= kept ? .success(true) : nil })
                let (recovered, setup) = try await runner.connect(1, recoverFrom: { _ in position }) { _ in (recoveryURL, [room], .receiver) }
                _ = times.record(setup.max)
                recovered[0].close()
                if generator.progress { FileHandle.standardError.write(Data("  [recovery \(missed)] round \(round + 1)/\(rounds): \(String(format: "%.2f", Double(setup.max) / 1e6)) ms\n".utf8)) }
            }
            await control.close()
            await runner.shutdown()
            var result = BenchResult(
                scenario: "recovery", server: "neffos", clients: 1, seconds: 0, operations: rounds,
                perSecond: 0, p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0, errors: 0, drops: 0)
            result.latency(times)
            result.perSecond = result.p50Milliseconds > 0 ? Double(missed) / (result.p50Milliseconds / 1000) : 0
            result.notes["missed"] = missed.formatted
            result.notes["measures"] = "dial + handshake + namespace + join + the missed messages; perSecond = missed / p50"
            result.notes["history"] = history == "jetstream" ? "JetStream, recovered on another node" : "memory"
            return result
        }

        /// Clients dropped again and again while numbered broadcasts flow: client *i* on
        /// `urls[i % urls.count]`, the publisher on the first.
        private func churn(_ urls: [String]) async throws -> BenchResult {
            let url = urls[0]
            let room = "churn"
            let received = (0..<clients).map { _ in Locked<[Int]>([]) }
            let outcomes = Mutex<(complete: Int, incomplete: Int)>((0, 0))
            var members: [(Client, NSConn)] = []
            for index in 0..<clients {
                var events = Events()
                let log = received[index]
                events.on("tick") { _, message in
                    if let n = Int(message.bodyString) { log.withLock { $0.append(n) } }
                }
                var configuration = Client.Configuration()
                configuration.logger.logLevel = .critical
                configuration.reconnect = ReconnectPolicy(initialDelay: .milliseconds(5), maxDelay: .milliseconds(50))
                configuration.onRecovery = { recovery in
                    outcomes.withLock { recovery.isComplete ? ($0.complete += 1) : ($0.incomplete += 1) }
                }
                let client = try await Client.dial(urls[index % urls.count], namespaces: ["bench": events], configuration: configuration)
                let ns = try await client.connect("bench")
                _ = try await ns.joinRoom(room)
                members.append((client, ns))
            }
            let publisher = try await Client.dial(url, namespaces: ["bench": Events()])
            let publisherNS = try await publisher.connect("bench")
            _ = try await publisherNS.joinRoom(room)
            let start = ContinuousClock.now
            var published = 0
            var drops = 0
            var nextReport = start + .seconds(1)
            // Paced in 10 ms steps; each step, each client is dropped with the chance that makes
            // its mean interval --drop-every.
            let step = Duration.milliseconds(10)
            let perStep = max(1, rate / 100)
            var random = SystemRandomNumberGenerator()
            while ContinuousClock.now - start < .seconds(duration) {
                let stepStart = ContinuousClock.now
                for _ in 0..<perStep {
                    try publisher.conn.write(Message(namespace: "bench", room: room, event: "count"))
                    published += 1
                }
                for (_, ns) in members where Double.random(in: 0..<1, using: &random) < 10.0 / Double(dropEvery) {
                    if (try? ns.emit("drop")) != nil { drops += 1 }
                }
                if generator.progress && ContinuousClock.now >= nextReport {
                    nextReport += .seconds(1)
                    let done = outcomes.withLock { $0 }
                    FileHandle.standardError.write(Data("  [churn] published \(published.formatted), drops \(drops.formatted), recoveries \(done.complete) complete, \(done.incomplete) incomplete\n".utf8))
                }
                let elapsed = ContinuousClock.now - stepStart
                if elapsed < step { try await Task.sleep(for: step - elapsed) }
            }
            // The server handles the publisher's messages in order: once an `echo` ask after them
            // is answered, every number was broadcast. Then wait until every client has the last.
            _ = try await publisherNS.ask("echo", "", timeout: .seconds(30))
            let deadline = ContinuousClock.now + .seconds(60)
            while received.contains(where: { log in log.withLock { !$0.contains(published) } }) {
                guard ContinuousClock.now < deadline else { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            var gaps = 0
            var repeats = 0
            var exact = 0
            for log in received {
                let numbers = log.withLock { $0 }
                var expected = 1
                var clean = true
                for n in numbers {
                    if n == expected {
                        expected += 1
                    } else if n < expected {
                        repeats += 1
                        clean = false
                    } else {
                        gaps += n - expected
                        expected = n + 1
                        clean = false
                    }
                }
                if expected <= published {
                    gaps += published - expected + 1
                    clean = false
                }
                if clean { exact += 1 }
            }
            for (client, _) in members { await client.close() }
            await publisher.close()
            let done = outcomes.withLock { $0 }
            let seconds = (ContinuousClock.now - start).seconds
            var result = BenchResult(
                scenario: "recovery-churn", server: "neffos", clients: clients, seconds: seconds,
                operations: published * clients, perSecond: Double(published * clients) / seconds,
                p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
                errors: repeats, drops: gaps)
            result.notes["published"] = published.formatted
            result.notes["serverDrops"] = drops.formatted
            result.notes["recoveriesComplete"] = done.complete.formatted
            result.notes["recoveriesIncomplete"] = done.incomplete.formatted
            result.notes["clientsExact"] = "\(exact)/\(clients)"
            result.notes["meaning"] = "drops = messages missing, errors = messages repeated, over all clients"
            result.notes["history"] = history == "jetstream" ? "JetStream, clients over 2 nodes" : "memory"
            return result
        }
    }
}
