import Foundation
import Neffos
import NeffosNIO
import NeffosProcess
import NeffosTesting
import Testing

/// A running `neffos cluster`, started by a test.
struct LocalCluster {
    let tool: ChildProcess
    /// Each node's page and WebSocket URL, and its PID.
    let nodes: [(page: String, socket: String, pid: Int32)]
    /// The NATS servers' PIDs.
    let natsPIDs: [Int32]

    /// Runs `neffos cluster --nodes N --port 0` and waits until it reports ready.
    static func start(nodes: Int) async throws -> LocalCluster {
        let tool = try ChildProcess.start(try ChildProcess.sibling("neffos"), ["cluster", "--nodes", "\(nodes)", "--port", "0"])
        do {
            _ = try await tool.waitForOutput(containing: "cluster ready", timeout: .seconds(60))
        } catch {
            tool.terminate(signal: SIGKILL)
            throw error
        }
        let lines = tool.text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let nodeLines = lines.filter { $0.first?.hasPrefix("node-") == true }
        let natsLines = lines.filter { $0.first?.hasPrefix("nats-") == true }
        return LocalCluster(
            tool: tool,
            nodes: nodeLines.map { words in (words[1], words[2], Int32(words.last?.dropLast() ?? "") ?? 0) },
            natsPIDs: natsLines.compactMap { Int32($0.last ?? "") })
    }

    /// Stops the cluster as Ctrl-C would (SIGINT) and returns the tool's exit status.
    func stop() async -> Int32 {
        tool.terminate(signal: SIGINT)
        return await tool.waitForExit(timeout: .seconds(30))
    }
}

/// Whether process `pid` still exists.
func isAlive(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0
}

@Suite("neffos cluster")
struct ClusterToolTests {
    @Test("with --stop-with-parent (the plugin's), the end of its input stops every process, as Ctrl-C does")
    func stopsWhenInputEnds() async throws {
        // ChildProcess gives /dev/null as input: it ends at once, as the plugin's pipe does when
        // SwiftPM ends the plugin.
        let tool = try ChildProcess.start(try ChildProcess.sibling("neffos"), ["cluster", "--nodes", "1", "--port", "0", "--stop-with-parent"])
        #expect(await tool.waitForExit(timeout: .seconds(60)) == 0)
        #expect(tool.text.contains("cluster stopped"), "output: \(tool.text)")
        let pids = tool.text.split(separator: "\n").compactMap { line -> Int32? in
            guard line.hasPrefix("nats-") || line.hasPrefix("node-") else { return nil }
            return Int32(line.split(separator: " ").last?.filter(\.isNumber) ?? "")
        }
        for pid in pids { #expect(!isAlive(pid), "process \(pid) outlived the cluster") }
    }

    @Test("brings up 3 NATS servers and 3 chat nodes; a room message crosses nodes; Ctrl-C stops every process")
    func clusterUpAndDown() async throws {
        let cluster = try await LocalCluster.start(nodes: 3)
        #expect(cluster.nodes.count == 3)
        #expect(cluster.natsPIDs.count == 3)
        #expect(cluster.nodes.allSatisfy { $0.pid > 0 })
        let onThird = Received()
        var events = onThird.events()
        events.on("chat") { _, message in onThird.append(message) }
        let bob = try await Client.dial(cluster.nodes[2].socket, namespaces: ["default": events])
        _ = try await bob.connect("default").joinRoom("lobby")
        let alice = try await Client.dial(cluster.nodes[0].socket, namespaces: ["default": Events()])
        let lobby = try await alice.connect("default").joinRoom("lobby")
        // Interest crosses the NATS routes asynchronously: send until one arrives (bounded).
        let deadline = ContinuousClock.now + .seconds(15)
        while !onThird.messages.contains(where: { $0.event == "chat" }) {
            guard ContinuousClock.now < deadline else { throw RawWebSocketError.timedOut("a chat line from node 1 to node 3") }
            try lobby.emit("chat", "hello across the cluster")
            try? await onThird.wait(for: 1, of: "chat", timeout: .milliseconds(200))
        }
        await alice.close()
        await bob.close()
        #expect(await cluster.stop() == 0)
        #expect(cluster.tool.text.contains("cluster stopped"))
        for pid in cluster.nodes.map(\.pid) + cluster.natsPIDs {
            #expect(!isAlive(pid), "process \(pid) outlived the cluster")
        }
    }

    @Test("without nats-server, the cluster command says how to install it")
    func missingNATSServer() async throws {
        let (status, output) = try await ChildProcess.run(
            try ChildProcess.sibling("neffos"), ["cluster", "--nodes", "1", "--port", "0"],
            environment: [NATSServer.executableVariable: "/nonexistent/nats-server"], timeout: .seconds(30))
        #expect(status != 0)
        #expect(output.contains("apt-get install nats-server"), "it wrote: \(output)")
    }
}

@Suite("Scale-out example")
struct ScaleOutExampleTests {
    @Test("three nodes over NATS: a room broadcast crosses nodes and a server ask is answered across them")
    func scaleOut() async throws {
        let nats = try await NATSServer.start()
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling("neffos-example-scale-out"), ["--nats", nats.url])
        await nats.stop()
        #expect(status == 0, "it wrote:\n\(output)")
        #expect(output.contains("done: a room broadcast from node-a reached node-b and node-c; node-c answered node-a's ask"))
    }

    @Test("without a NATS server, the scale-out example says how to start one and exits 2")
    func scaleOutWithoutNATS() async throws {
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling("neffos-example-scale-out"), ["--nats", "nats://127.0.0.1:1"])
        #expect(status == 2, "it wrote:\n\(output)")
        #expect(output.contains("nats-server -a 127.0.0.1 -p 4222"))
    }
}

@Suite("neffos bench presence", .heavyLoad)
struct PresenceBenchTests {
    @Test("Presence: the bench scenario runs on 3 nodes over NATS and reports one bus publish and one event per node per change")
    func presenceScenario() async throws {
        let arguments = [
            "bench", "presence", "--clients", "30", "--rooms", "3", "--churners", "6", "--queriers", "2",
            "--duration", "1", "--fanout-clients", "20", "--json", "--no-progress",
        ]
        let mark = UUID().uuidString
        let (status, output) = try await ChildProcess.run(
            try ChildProcess.sibling("neffos"), arguments, environment: ["NEFFOS_TEST_MARK": mark], timeout: .seconds(240))
        #expect(status == 0, "it wrote:\n\(output)")
        let start = try #require(output.firstIndex(of: "["), "no JSON in:\n\(output)")
        let end = try #require(output.lastIndex(of: "]"))
        let results = try #require(try JSONSerialization.jsonObject(with: Data(output[start...end].utf8)) as? [[String: Any]])
        #expect(results.map { $0["scenario"] as? String } == ["presence-churn", "presence-query", "presence-query", "fanout", "fanout"])
        for result in results {
            #expect(result["errors"] as? Int == 0, "\(result)")
            #expect((result["operations"] as? Int ?? 0) > 0, "\(result)")
        }
        let notes = try #require(results.first?["notes"] as? [String: String])
        // Every node follows every room (10 members per room over 3 nodes): a join or leave is
        // one publish, delivered to the two other nodes, and reported once on each of the three.
        #expect(notes["eventsPerChange"] == "3.00", "\(notes)")
        let publishes = try #require(notes["busPublishesPerChange"].flatMap(Double.init))
        #expect(abs(publishes - 1) < 0.1, "\(notes)")
        #expect(results.suffix(2).map { ($0["notes"] as? [String: String])?["presence"] } == ["on", "off"])
        #expect(ChildProcess.running(withEnvironment: "NEFFOS_TEST_MARK", mark).isEmpty, "no bench server or nats-server outlives its run")
    }
}

@Suite("neffos bench history on a cluster", .heavyLoad)
struct HistoryBenchTests {
    /// Runs the tool with `arguments` (JSON out) and returns its results; nothing may outlive it.
    private func bench(_ arguments: [String]) async throws -> [[String: Any]] {
        let mark = UUID().uuidString
        let (status, output) = try await ChildProcess.run(
            try ChildProcess.sibling("neffos"), arguments + ["--json", "--no-progress"], environment: ["NEFFOS_TEST_MARK": mark], timeout: .seconds(240))
        #expect(status == 0, "it wrote:\n\(output)")
        #expect(ChildProcess.running(withEnvironment: "NEFFOS_TEST_MARK", mark).isEmpty, "no bench server or nats-server outlives its run")
        let start = try #require(output.firstIndex(of: "["), "no JSON in:\n\(output)")
        let end = try #require(output.lastIndex(of: "]"))
        return try #require(try JSONSerialization.jsonObject(with: Data(output[start...end].utf8)) as? [[String: Any]])
    }

    @Test("Recovery: neffos bench recovery --history jetstream recovers on another node, and its churn over two nodes loses and repeats nothing")
    func recoveryOnJetStream() async throws {
        let results = try await bench(["bench", "recovery", "--history", "jetstream", "--missed", "100", "--rounds", "2", "--clients", "4", "--duration", "2", "--rate", "500"])
        #expect(results.map { $0["scenario"] as? String } == ["recovery", "recovery-churn"])
        #expect(results.allSatisfy { $0["errors"] as? Int == 0 && $0["drops"] as? Int == 0 }, "\(results)")
        let notes = results.compactMap { $0["notes"] as? [String: String] }
        #expect(notes.first?["history"] == "JetStream, recovered on another node", "\(notes)")
        #expect(notes.last?["clientsExact"] == "4/4" && notes.last?["recoveriesIncomplete"] == "0", "\(notes)")
    }

    @Test("History: neffos bench cluster --history compares the nodes' CPU per delivery with history off and in JetStream")
    func clusterCost() async throws {
        let results = try await bench(["bench", "cluster", "--history", "off,jetstream", "--clients", "30", "--duration", "1"])
        #expect(results.map { ($0["notes"] as? [String: String])?["history"] } == ["off", "jetstream"])
        for result in results {
            #expect(result["errors"] as? Int == 0 && (result["operations"] as? Int ?? 0) > 0, "\(result)")
            #expect(result["serverCPUMicrosPerOperation"] as? Double != nil, "\(result)")
        }
    }

    @Test("Cost: neffos bench cluster --cost 1,2 reports per node count the bus messages per broadcast, cross-node latency, and that a room on one node costs the other nothing on the bus")
    func costTable() async throws {
        let rows = try await bench(["bench", "cluster", "--cost", "1,2", "--clients", "20", "--duration", "1", "--rate", "50"])
        #expect(rows.map { $0["nodes"] as? Int } == [1, 2])
        for row in rows {
            #expect((row["deliveriesPerSecond"] as? Double ?? 0) > 0, "\(row)")
            #expect((row["crossNodeP99Milliseconds"] as? Double ?? 0) > 0, "\(row)")
            // One publish per broadcast, whatever the node count.
            #expect(abs((row["busPublishesPerBroadcast"] as? Double ?? 0) - 1) < 0.2, "\(row)")
        }
        // One delivery per other node with interest: none with one node, one with two.
        #expect((rows[0]["busDeliveriesPerBroadcast"] as? Double ?? 1) < 0.2, "\(rows[0])")
        #expect(abs((rows[1]["busDeliveriesPerBroadcast"] as? Double ?? 0) - 1) < 0.2, "\(rows[1])")
        #expect(rows[0]["oneNodeRoomBusDeliveriesPerBroadcast"] == nil)
        #expect((rows[1]["oneNodeRoomBusDeliveriesPerBroadcast"] as? Double ?? 1) < 0.05, "\(rows[1])")
    }
}
