import Foundation
import NeffosProcess
import NeffosTesting
import Testing

@Suite("neffos bench", .serialized, .heavyLoad)
struct BenchToolTests {
    /// This test's mark, in the environment of every process its tool starts: other suites run
    /// bench servers of their own meanwhile.
    let mark = UUID().uuidString

    /// The processes started under this test's mark that are still running.
    var leftovers: [Int32] { ChildProcess.running(withEnvironment: "NEFFOS_TEST_MARK", mark) }

    /// Runs `neffos bench <arguments> --json --no-progress` and decodes its results.
    func bench(_ arguments: [String]) async throws -> [[String: Any]] {
        let tool = try ChildProcess.sibling("neffos")
        let (status, output) = try await ChildProcess.run(
            tool, ["bench"] + arguments + ["--json", "--no-progress"], environment: ["NEFFOS_TEST_MARK": mark], timeout: .seconds(120))
        #expect(status == 0, "it wrote:\n\(output)")
        guard let start = output.firstIndex(of: "["), let end = output.lastIndex(of: "]") else {
            throw RawWebSocketError(description: "no JSON in:\n\(output)")
        }
        let json = try JSONSerialization.jsonObject(with: Data(output[start...end].utf8))
        return try #require(json as? [[String: Any]])
    }

    @Test("each scenario runs briefly against both servers, reports, and leaves no process behind")
    func scenarios() async throws {
        let ask = try await bench(["ask", "--duration", "1", "--clients", "4", "--compare"])
        #expect(ask.map { $0["server"] as? String } == ["neffos", "raw"])
        for result in ask {
            #expect((result["perSecond"] as? Double ?? 0) > 0, "\(result)")
            #expect(result["errors"] as? Int == 0, "\(result)")
            #expect((result["p50Milliseconds"] as? Double ?? 0) > 0, "latency measured: \(result)")
        }
        let fanout = try await bench(["fanout", "--duration", "1", "--clients", "20"])
        #expect((fanout.first?["operations"] as? Int ?? 0) > 0, "\(fanout)")
        let rooms = try await bench(["rooms", "--duration", "1", "--rooms", "3", "--members", "4"])
        #expect((rooms.first?["operations"] as? Int ?? 0) > 0, "\(rooms)")
        let connect = try await bench(["connect", "--clients", "50", "--concurrency", "10"])
        #expect(connect.first?["operations"] as? Int == 50, "\(connect)")
        let memory = try await bench(["memory", "--clients", "50"])
        // Every scenario reports the server's CPU per operation over its measured window, and
        // the generator's own.
        for result in ask + fanout + rooms + connect + memory {
            #expect((result["serverCPUSeconds"] as? Double ?? -1) >= 0, "\(result)")
            #expect(result["serverCPUMicrosPerOperation"] as? Double != nil, "\(result)")
            #expect((result["generatorCores"] as? Double ?? -1) >= 0, "\(result)")
        }
        #expect(leftovers.isEmpty, "no bench or raw server outlives its run")
    }

    @Test("a sweep runs a scenario over sizes and writes a table and a self-contained SVG plot")
    func sweep() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-sweep-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let results = try await bench(["sweep", "memory", "--sizes", "20,40", "--compare", "--out", folder])
        #expect(results.map { $0["server"] as? String } == ["neffos", "raw", "neffos", "raw"], "\(results)")
        let table = try String(contentsOfFile: folder + "/sweep-memory.md", encoding: .utf8)
        #expect(table.contains("| 20 |") && table.contains("| 40 |") && table.contains("memory per connection"), "\(table)")
        let svg = try String(contentsOfFile: folder + "/sweep-memory.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline"), "\(svg.prefix(200))")
        // Self-contained: nothing fetched, the namespace the only address.
        #expect(svg.components(separatedBy: "http").count == 2 && svg.contains("xmlns=\"http://www.w3.org/2000/svg\""), "\(svg.prefix(200))")
        #expect(leftovers.isEmpty, "no bench or raw server outlives its run")
    }

    @Test("a server given by --url and --pid is measured like a started one: CPU per op, and its memory")
    func givenServer() async throws {
        let (server, port) = try await startBenchServer()
        defer { server.terminate(signal: SIGKILL) }
        let url = "ws://127.0.0.1:\(port)/"
        let ask = try await bench(["ask", "--duration", "1", "--clients", "4", "--url", url, "--pid", "\(server.pid)"])
        #expect(ask.first?["serverCPUMicrosPerOperation"] as? Double != nil, "\(ask)")
        let memory = try await bench(["memory", "--clients", "20", "--url", url, "--pid", "\(server.pid)"])
        #expect((memory.first?["notes"] as? [String: String])?["bytesPerConnection"] != nil, "\(memory)")
        // Without --pid: no server CPU, and memory says what it needs.
        let blind = try await bench(["ask", "--duration", "1", "--clients", "2", "--url", url])
        #expect(blind.first?["serverCPUMicrosPerOperation"] == nil && blind.first?["generatorCores"] as? Double != nil, "\(blind)")
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling("neffos"), ["bench", "memory", "--url", url])
        #expect(status != 0 && output.contains("--pid"), "\(output)")
    }

    @Test("Recovery: neffos bench recovery measures catching up, and clients dropped while broadcasts flow get every message once")
    func recoveryScenario() async throws {
        let results = try await bench(["recovery", "--missed", "10,50", "--rounds", "2", "--clients", "3", "--rate", "300", "--drop-every", "200", "--duration", "1"])
        #expect(results.map { $0["scenario"] as? String } == ["recovery", "recovery", "recovery-churn"])
        for result in results.prefix(2) { #expect((result["p50Milliseconds"] as? Double ?? 0) > 0, "\(result)") }
        let churn = try #require(results.last)
        #expect(churn["drops"] as? Int == 0 && churn["errors"] as? Int == 0, "nothing missing, nothing repeated: \(churn)")
        #expect((churn["notes"] as? [String: String])?["clientsExact"] == "3/3", "\(churn)")
        #expect(leftovers.isEmpty, "no bench server outlives its run")
    }

    @Test("the bench server's askback asks the sender back and answers with the reply's body")
    func askback() async throws {
        let (server, port) = try await startBenchServer()
        defer { server.terminate(signal: SIGKILL) }
        let (socket, _) = try await handshake("ws://127.0.0.1:\(port)/")
        try await connectNamespace(socket, "bench")
        try await socket.send("$1;bench;;askback;0;0;ping")
        let question = try await socket.nextText()
        let token = String(question.prefix { $0 != ";" })
        #expect(question == "\(token);bench;;askback;0;0;ping", "the server asks back with the same body")
        try await socket.send("\(token);bench;;askback;0;0;pong")
        #expect(try await socket.nextText() == "$1;bench;;askback;0;0;pong")
        await socket.abort()
    }

    @Test("abuse runs hostile cases against a server that survives them, and reports memory, CPU and the healthy client")
    func abuse() async throws {
        let results = try await bench(["abuse", "--cases", "1,3,6,8", "--duration", "1"])
        #expect(results.count == 4, "\(results)")
        for result in results {
            let notes = result["notes"] as? [String: String] ?? [:]
            #expect(notes["rssPeakMiB"] != nil && notes["serverCPUSeconds"] != nil, "\(result)")
            #expect((result["operations"] as? Int ?? 0) > 0, "the healthy client kept being answered: \(result)")
        }
        let utf8 = try #require(results.first { ($0["scenario"] as? String)?.contains("invalid-utf8") == true })
        #expect((utf8["notes"] as? [String: String])?["attackersClosedByServer"] == "2/2")
        #expect(leftovers.isEmpty, "no bench server outlives its run")
    }

    @Test("a URL off loopback is refused")
    func loopbackOnly() async throws {
        let (status, output) = try await ChildProcess.run(try ChildProcess.sibling("neffos"), ["bench", "ask", "--url", "ws://10.1.2.3:80/"])
        #expect(status != 0)
        #expect(output.contains("loopback"), "it wrote:\n\(output)")
    }

    /// Runs `neffos <arguments>` with its open-file limit lowered to `limit` (`ulimit -n`),
    /// under this test's mark; returns its status and output.
    func underFileLimit(_ limit: Int, _ arguments: String) async throws -> (Int32, String) {
        try await ChildProcess.run(
            "/bin/sh", ["-c", "ulimit -n \(limit) && exec \"$0\" \(arguments)", try ChildProcess.sibling("neffos")],
            environment: ["NEFFOS_TEST_MARK": mark], timeout: .seconds(120))
    }

    @Test("more clients than the generator may open files is refused before dialling, naming the limit")
    func fileLimit() async throws {
        let (status, output) = try await underFileLimit(256, "bench connect --clients 1000 --no-progress")
        #expect(status != 0)
        #expect(output.contains("may open 256 files") && output.contains("ulimit"), "it wrote:\n\(output)")
        #expect(leftovers.isEmpty, "no bench server outlives the refusal")
    }

    @Test("scale spreads its clients over generator processes, broadcasts to all of them, and stops at the server's open-file limit, naming it")
    func scale() async throws {
        let (status, output) = try await underFileLimit(400, "bench scale --sizes 150,500 --per-generator 100 --broadcasts 1 --json")
        #expect(status == 0, "it wrote:\n\(output)")
        let start = try #require(output.firstIndex(of: "["), "no JSON in:\n\(output)")
        let end = try #require(output.lastIndex(of: "]"))
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(output[start...end].utf8)) as? [[String: Any]])
        #expect(rows.count == 2, "\(rows)")
        let measured = try #require(rows.first)
        #expect(measured["generators"] as? Int == 2)
        #expect(measured["serverFileLimit"] as? Int == 400)
        #expect((measured["broadcasts"] as? Int ?? 0) >= 1)
        #expect(measured["deliveries"] as? Int == measured["expectedDeliveries"] as? Int, "every client got every broadcast: \(measured)")
        #expect((measured["bytesPerConnection"] as? Double ?? 0) > 0 && (measured["timeToAllMilliseconds"] as? Double ?? 0) > 0, "\(measured)")
        let stopped = try #require(rows.last?["stoppedBy"] as? String, "\(rows)")
        #expect(stopped.contains("may open 400 files") && stopped.contains("ulimit -n"), "\(stopped)")
        #expect(leftovers.isEmpty, "no server or generator outlives the run")
    }
}
