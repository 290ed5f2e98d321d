import InMemoryTracing
import Logging
import Neffos
import NeffosNIO
import NeffosTesting
import Testing
import Tracing

/// Spans across nodes: a server ask answered on another node, and a broadcast delivered on
/// another node, continue one trace (the context travels in the exchange's envelopes).
@Suite("Tracing")
struct TracingTests {
    /// The finished spans named `name` whose `neffos.node` attribute is `node`.
    func spans(_ tracer: InMemoryTracer, _ name: String, on node: String) -> [FinishedInMemorySpan] {
        tracer.finishedSpans.filter { $0.operationName == name && $0.attributes["neffos.node"]?.toSpanAttribute() == .string(node) }
    }

    @Test("a cross-node ask is one trace: node-0's neffos.ask is the parent of node-1's neffos.deliver, and the client's handshake has its own")
    func crossNodeAsk() async throws {
        let tracer = InMemoryTracer()
        let bus = LoopbackExchange()
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": Events()], configure: { _, configuration in
            configuration.tracer = tracer
        }) { _ in bus }
        var events = Events()
        events.answer("question") { _, _ in "yes" }
        let client = try await cluster.client(at: 1, namespaces: ["default": events])
        _ = try await client.connect("default")
        // Node 0 asks the client connected to node 1.
        let reply = try await cluster.servers[0].ask(Message(namespace: "default", event: "question"), to: client.id, timeout: .seconds(10))
        #expect(reply.bodyString == "yes")

        let ask = try #require(spans(tracer, "neffos.ask", on: "node-0").first)
        #expect(ask.kind == .client)
        let delivered = spans(tracer, "neffos.deliver", on: "node-1")
        let child = try #require(delivered.first { $0.parentSpanID == ask.spanID }, "node-1 delivered the ask in a child of node-0's ask span: \(tracer.finishedSpans.map(\.operationName))")
        #expect(child.traceID == ask.traceID)
        #expect(child.kind == .consumer)
        #expect(child.attributes["neffos.envelope.kind"]?.toSpanAttribute() == .string("ask"))
        #expect(child.attributes["neffos.origin.node"]?.toSpanAttribute() == .string("node-0"))
        #expect(!spans(tracer, "neffos.handshake", on: "node-1").isEmpty, "the client's handshake")
        await client.close()
        await cluster.stop()
    }

    @Test("a handler's broadcast continues its trace on the other node; a failing handler's span records the error")
    func crossNodeBroadcast() async throws {
        let tracer = InMemoryTracer()
        let bus = LoopbackExchange()
        var server = Events()
        server.on("shout") { ns, message in
            ns.server?.broadcast(Message(namespace: "default", event: "heard", body: message.body))
        }
        server.answer("fail") { _, _ in throw NeffosError.badRoom }
        let cluster = try await TestCluster.start(nodes: 2, namespaces: ["default": server], configure: { _, configuration in
            configuration.tracer = tracer
        }) { _ in bus }
        let listener = Received()
        var listening = listener.events()
        listening.on("heard") { _, message in listener.append(message) }
        let hearer = try await cluster.client(at: 1, namespaces: ["default": listening])
        _ = try await hearer.connect("default")
        let shouter = try await cluster.client(at: 0, namespaces: ["default": Events()])
        let ns = try await shouter.connect("default")
        try ns.emit("shout", "hello")
        try await listener.wait(for: 1, of: "heard")

        let event = try #require(spans(tracer, "neffos.event", on: "node-0").first { $0.attributes["neffos.event"]?.toSpanAttribute() == .string("shout") })
        #expect(event.kind == .server)
        let delivered = try #require(spans(tracer, "neffos.deliver", on: "node-1").first { $0.parentSpanID == event.spanID })
        #expect(delivered.traceID == event.traceID)

        await #expect(throws: NeffosError.badRoom) { _ = try await ns.ask("fail", timeout: .seconds(5)) }
        let failed = try #require(spans(tracer, "neffos.event", on: "node-0").first { $0.attributes["neffos.event"]?.toSpanAttribute() == .string("fail") })
        #expect(failed.status?.code == .error)
        #expect(!failed.errors.isEmpty)
        await hearer.close()
        await shouter.close()
        await cluster.stop()
    }

    @Test("without a tracer no span is made (the no-op tracer counts as none)")
    func noTracer() async throws {
        var configuration = Server.Configuration()
        configuration.tracer = NoOpTracer()
        let server = try Server(namespaces: ["default": Events()], configuration: configuration)
        #expect(server.isTracing == false)
        var traced = Server.Configuration()
        traced.tracer = InMemoryTracer()
        #expect(try Server(namespaces: ["default": Events()], configuration: traced).isTracing)
    }
}
