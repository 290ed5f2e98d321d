import HTTPTypes
import NIOCore
import Synchronization
import Tracing

/// The server's spans, made only when a tracer is configured (``Server/Configuration/tracer``,
/// or one bootstrapped with `InstrumentationSystem`): without one, the server holds no
/// `ServerTracing` and its paths test a `nil`, nothing more.
///
/// Spans (`SpanKind` in brackets):
/// - `neffos.handshake` [server]: from the upgrade's acceptance to `A<id>` (or the refusal),
///   child of a `traceparent` the upgrade request carried;
/// - `neffos.event` [server]: one handler invocation, its reply or error included; the
///   handler runs in its context, so its own spans, broadcasts and asks continue the trace;
/// - `neffos.ask` [client]: an ask the server makes (``Server/ask(_:to:timeout:)``, or
///   `NSConn.ask` on the server side), until its reply or deadline;
/// - `neffos.deliver` [consumer]: a broadcast or an ask arriving from another node, child of
///   the span that published it there (the trace context travels in the exchange envelope).
final class ServerTracing: Sendable {
    let tracer: any Tracer
    /// The node's name, on every span (`neffos.node`).
    let node: String
    /// Handshakes in progress, by connection.
    private let handshakes = Mutex<[ObjectIdentifier: any Span]>([:])

    /// `nil` when neither `configured` nor the bootstrapped tracer records anything.
    init?(configured: (any Tracer)?, node: String) {
        let tracer = configured ?? InstrumentationSystem.tracer
        if tracer is NoOpTracer { return nil }
        self.tracer = tracer
        self.node = node
    }

    // MARK: Handshakes

    func startHandshake(_ conn: Conn, request: UpgradeRequest) {
        var context = InstrumentationContext.topLevel
        tracer.extract(request, into: &context, using: UpgradeRequestExtractor())
        let span = tracer.startAnySpan("neffos.handshake", context: context, ofKind: .server)
        span.attributes["neffos.node"] = node
        span.attributes["neffos.connection.id"] = conn.id
        if let address = request.remoteAddress { span.attributes["network.peer.address"] = address }
        handshakes.withLock { $0[ObjectIdentifier(conn)] = span }
    }

    /// Ends `conn`'s handshake span: accepted, or refused with `refusal`.
    func endHandshake(_ conn: Conn, refusal: String? = nil) {
        guard let span = handshakes.withLock({ $0.removeValue(forKey: ObjectIdentifier(conn)) }) else { return }
        if let refusal {
            span.attributes["neffos.refusal"] = refusal
            span.setStatus(.init(code: .error, message: refusal))
        }
        span.end()
    }

    /// The context of `conn`'s handshake, for its on-connect hook.
    func handshakeContext(_ conn: Conn) -> InstrumentationContext? {
        handshakes.withLock { $0[ObjectIdentifier(conn)]?.context }
    }

    // MARK: Handlers and asks

    @inline(__always)
    func event<T>(_ message: Message, on conn: Conn, _ body: () throws -> T) rethrows -> T {
        try tracer.withAnySpan("neffos.event", context: .topLevel, ofKind: .server) { span in
            describe(span, message, conn)
            return try body()
        }
    }

    func event<T>(_ message: Message, on conn: Conn, _ body: () async throws -> T) async rethrows -> T {
        try await tracer.withAnySpan("neffos.event", context: .topLevel, ofKind: .server) { span in
            describe(span, message, conn)
            return try await body()
        }
    }

    func ask<T>(_ message: Message, to id: String?, _ body: () async throws -> T) async rethrows -> T {
        try await tracer.withAnySpan("neffos.ask", ofKind: .client) { span in
            span.attributes["neffos.node"] = node
            span.attributes["neffos.namespace"] = message.namespace
            span.attributes["neffos.event"] = message.event.rawValue
            if !message.room.isEmpty { span.attributes["neffos.room"] = message.room }
            if let id { span.attributes["neffos.connection.id"] = id }
            return try await body()
        }
    }

    private func describe(_ span: any Span, _ message: Message, _ conn: Conn) {
        span.attributes["neffos.node"] = node
        span.attributes["neffos.namespace"] = message.namespace
        span.attributes["neffos.event"] = message.event.rawValue
        if !message.room.isEmpty { span.attributes["neffos.room"] = message.room }
        span.attributes["neffos.connection.id"] = conn.id
    }

    // MARK: Across nodes

    /// The current trace context, as the envelope carries it (empty outside any span).
    func currentContext() -> [String: String] {
        guard let context = InstrumentationContext.current else { return [:] }
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier
    }

    /// Runs the local delivery of an envelope from `origin` in a `neffos.deliver` span, child
    /// of the publisher's context when the envelope carries one.
    func deliver<T>(_ carried: [String: String], kind: String, origin: String, target: BroadcastTarget, _ body: () -> T) -> T {
        var context = InstrumentationContext.topLevel
        if !carried.isEmpty { tracer.extract(carried, into: &context, using: DictionaryExtractor()) }
        return tracer.withAnySpan("neffos.deliver", context: context, ofKind: .consumer) { span in
            span.attributes["neffos.node"] = node
            span.attributes["neffos.namespace"] = target.namespace
            if !target.room.isEmpty { span.attributes["neffos.room"] = target.room }
            span.attributes["neffos.envelope.kind"] = kind
            span.attributes["neffos.origin.node"] = origin
            return body()
        }
    }
}

/// Reads a trace context from an upgrade request's headers (`traceparent`, `tracestate`…).
struct UpgradeRequestExtractor: Extractor {
    func extract(key: String, from carrier: UpgradeRequest) -> String? {
        carrier.header(key)
    }
}

/// Writes a trace context into an envelope's string pairs.
struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

/// Reads a trace context from an envelope's string pairs.
struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
