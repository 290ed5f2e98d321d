import Logging
import NIOCore
import Neffos
import Synchronization

/// An exchange for tests: several nodes in one process, every payload recorded, deterministic
/// delivery when asked for, and faults on demand.
///
/// ```swift
/// let bus = LoopbackExchange()
/// // Give each test server `configuration.exchange = bus`, then:
/// bus.dropNext(1)               // lose the next payload (counted)
/// bus.partition("node-b")       // node-b neither sends nor receives
/// bus.disconnect("node-c")      // node-c's bus connection drops: it buffers its publishes
/// bus.reconnect("node-c")       // …and sends them once back; its subscriptions survive
/// #expect(bus.statistics.dropped == 1)
/// ```
///
/// In ``DeliveryMode/immediate`` mode a payload reaches its subscribers on the publisher's
/// thread before `publish` returns; in ``DeliveryMode/manual`` mode it waits in a queue until
/// ``deliverNext()`` or ``deliverAll()``, so a test decides the interleaving.
public final class LoopbackExchange: Exchange, CustomStringConvertible {
    /// When payloads reach their subscribers.
    public enum DeliveryMode: Sendable {
        /// At once, on the publisher's thread.
        case immediate
        /// When the test calls ``deliverNext()`` or ``deliverAll()``.
        case manual
    }

    /// One published payload, as the bus saw it.
    public struct Record: Sendable, CustomStringConvertible {
        /// The order of publication on this bus (from 1).
        public let sequence: Int
        /// The publishing node.
        public let from: String
        /// The subject.
        public let subject: String
        /// The payload.
        public let payload: ByteBuffer
        /// The nodes it was (or will be) delivered to.
        public var deliveredTo: [String]
        /// The nodes it was lost for (a fault, a partition, a disconnected node).
        public var droppedFor: [String]

        /// A one-line summary.
        public var description: String {
            "#\(sequence) \(from) → \(subject) (\(payload.readableBytes) B) to \(deliveredTo) lost \(droppedFor)"
        }
    }

    private struct Pending {
        let record: Int
        let subject: String
        let payload: ByteBuffer
        let to: String
    }

    private struct State {
        var nodes: [String: LoopbackConnection] = [:]
        var subscribers: [String: Set<String>] = [:]
        var records: [Record] = []
        var pending: [Pending] = []
        var partitioned: Set<String> = []
        var disconnected: Set<String> = []
        var outageBuffers: [String: [(subject: String, payload: ByteBuffer)]] = [:]
        var dropNext = 0
        var duplicateNext = 0
        var delayNext: (count: Int, by: Duration) = (0, .zero)
        var reorderNext = 0
        var held: [Pending] = []
        var dropped = 0
        var duplicated = 0
        var delivered = 0
    }

    /// The bus's name (`loopback://NAME`).
    public let name: String
    /// When payloads are delivered.
    public let mode: DeliveryMode
    /// How many publishes a disconnected node buffers before it drops (counted).
    public let outageBufferLimit: Int
    private let state = Watched(State())

    /// A new bus.
    public init(name: String = "loopback", mode: DeliveryMode = .immediate, outageBufferLimit: Int = 1024) {
        self.name = name
        self.mode = mode
        self.outageBufferLimit = outageBufferLimit
    }

    private static let named = Locked<[String: LoopbackExchange]>([:])

    /// The bus called `name` in this process (`loopback://NAME`), made on first use.
    public static func named(_ name: String) -> LoopbackExchange {
        named.withLock { buses in
            if let bus = buses[name] { return bus }
            let bus = LoopbackExchange(name: name)
            buses[name] = bus
            return bus
        }
    }

    /// `loopback://NAME`.
    public var description: String { "loopback://\(name)" }

    /// The registry plugin for `loopback://NAME` (the bus of that name in this process).
    public static let plugin = ExchangePlugin(
        scheme: "loopback", summary: "loopback://NAME — nodes in this process, recorded, with faults (tests)"
    ) { url in
        LoopbackExchange.named(url.servers.first?.host ?? url.path)
    }

    // MARK: Exchange

    /// Connects a node.
    public func connect(
        node: String, logger: Logger,
        deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
        status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> any ExchangeConnection {
        let connection = LoopbackConnection(bus: self, node: node, deliver: deliver, status: status)
        try state.update { s throws(NeffosError) in
            guard s.nodes[node] == nil else {
                throw NeffosError.invalidConfiguration.with(detail: "node \"\(node)\" is already connected to \(description)")
            }
            s.nodes[node] = connection
        }
        status(.connected)
        return connection
    }

    // MARK: Faults

    /// Loses the next `count` deliveries (each counted as dropped).
    public func dropNext(_ count: Int) { state.update { $0.dropNext += count } }

    /// Delivers each of the next `count` payloads twice.
    public func duplicateNext(_ count: Int) { state.update { $0.duplicateNext += count } }

    /// Delivers the next `count` payloads `duration` late (later ones overtake them); replaces
    /// a delay set before and not used up.
    public func delayNext(_ count: Int, by duration: Duration) { state.update { $0.delayNext = (count, duration) } }

    /// Holds the next `count` deliveries and releases them in reverse order.
    public func reorderNext(_ count: Int) { state.update { $0.reorderNext += count } }

    /// Cuts `node` off: what it publishes and what is published for it is lost (counted).
    public func partition(_ node: String) { state.update { _ = $0.partitioned.insert(node) } }

    /// Ends `node`'s partition.
    public func heal(_ node: String) { state.update { _ = $0.partitioned.remove(node) } }

    /// Drops `node`'s bus connection, as a lost NATS connection: it reports `.disconnected`,
    /// buffers what it publishes (up to ``outageBufferLimit``, then drops, counted), and misses
    /// what others publish meanwhile (counted). Its subscriptions are kept.
    public func disconnect(_ node: String) {
        let connection = state.update { s -> LoopbackConnection? in
            guard let connection = s.nodes[node], s.disconnected.insert(node).inserted else { return nil }
            return connection
        }
        connection?.status(.disconnected(reason: "loopback fault"))
    }

    /// Restores `node`'s bus connection: it reports `.reconnected` and sends what it buffered.
    public func reconnect(_ node: String) {
        let (connection, buffered) = state.update { s -> (LoopbackConnection?, [(subject: String, payload: ByteBuffer)]) in
            guard s.disconnected.remove(node) != nil, let connection = s.nodes[node] else { return (nil, []) }
            connection.reconnects.add(1, ordering: .relaxed)
            return (connection, s.outageBuffers.removeValue(forKey: node) ?? [])
        }
        guard let connection else { return }
        connection.status(.reconnected)
        for (subject, payload) in buffered { route(payload, subject: subject, from: node) }
    }

    // MARK: Delivery

    func publish(_ payload: ByteBuffer, subject: String, from node: String) {
        let buffered = state.update { s -> Bool in
            guard s.disconnected.contains(node) else { return false }
            if s.outageBuffers[node, default: []].count < outageBufferLimit {
                s.outageBuffers[node, default: []].append((subject, payload))
            } else {
                s.dropped += 1
                s.nodes[node]?.droppedCount.add(1, ordering: .relaxed)
            }
            return true
        }
        if !buffered { route(payload, subject: subject, from: node) }
    }

    private func route(_ payload: ByteBuffer, subject: String, from node: String) {
        var delayed: [(Pending, Duration)] = []
        let ready = state.update { s -> [Pending] in
            let subscribers = (s.subscribers[subject] ?? []).subtracting([node]).sorted()
            var record = Record(sequence: s.records.count + 1, from: node, subject: subject, payload: payload, deliveredTo: [], droppedFor: [])
            var ready: [Pending] = []
            let senderCut = s.partitioned.contains(node)
            let duplicate = s.duplicateNext > 0
            if duplicate { s.duplicateNext -= 1 }
            let delay = s.delayNext.count > 0 ? s.delayNext.by : nil
            if delay != nil { s.delayNext.count -= 1 }
            for target in subscribers {
                if senderCut || s.partitioned.contains(target) || s.disconnected.contains(target) || s.dropNext > 0 {
                    if !(senderCut || s.partitioned.contains(target) || s.disconnected.contains(target)) { s.dropNext -= 1 }
                    record.droppedFor.append(target)
                    s.dropped += 1
                    s.nodes[target]?.droppedCount.add(1, ordering: .relaxed)
                    continue
                }
                record.deliveredTo.append(target)
                let item = Pending(record: record.sequence, subject: subject, payload: payload, to: target)
                let copies = duplicate ? 2 : 1
                if duplicate { s.duplicated += 1 }
                for _ in 0..<copies {
                    if let delay {
                        delayed.append((item, delay))
                    } else if s.reorderNext > 0 {
                        s.reorderNext -= 1
                        s.held.append(item)
                        if s.reorderNext == 0 {
                            ready += s.held.reversed()
                            s.held = []
                        }
                    } else {
                        ready.append(item)
                    }
                }
            }
            s.records.append(record)
            if mode == .manual {
                s.pending += ready
                return []
            }
            return ready
        }
        for item in ready { hand(item) }
        for (item, delay) in delayed {
            Task {
                try? await Task.sleep(for: delay)
                self.hand(item)
            }
        }
    }

    private func hand(_ item: Pending) {
        let target = state.update { s -> LoopbackConnection? in
            guard let target = s.nodes[item.to] else { return nil }
            if s.disconnected.contains(item.to) || s.partitioned.contains(item.to) {
                s.dropped += 1
                target.droppedCount.add(1, ordering: .relaxed)
                return nil
            }
            s.delivered += 1
            return target
        }
        guard let target else { return }
        target.deliveredCount.add(1, ordering: .relaxed)
        target.deliver(item.subject, item.payload)
    }

    /// In manual mode, delivers the oldest waiting payload; returns whether there was one.
    @discardableResult
    public func deliverNext() -> Bool {
        let item = state.update { s -> Pending? in s.pending.isEmpty ? nil : s.pending.removeFirst() }
        guard let item else { return false }
        hand(item)
        return true
    }

    /// In manual mode, delivers every waiting payload, in order (including those published
    /// while delivering); returns how many.
    @discardableResult
    public func deliverAll() -> Int {
        var count = 0
        while deliverNext() { count += 1 }
        return count
    }

    /// Payloads waiting for ``deliverNext()`` (manual mode).
    public var pendingCount: Int { state.update { $0.pending.count } }

    // MARK: Inspection

    /// Every payload published so far, in order.
    public var records: [Record] { state.update { $0.records } }

    /// Forgets the records.
    public func clearRecords() { state.update { $0.records = [] } }

    /// What the bus did, over all nodes.
    public var statistics: ExchangeStatistics {
        state.update { s in
            ExchangeStatistics(published: s.records.count, delivered: s.delivered, dropped: s.dropped,
                               reconnects: s.nodes.values.reduce(0) { $0 + $1.reconnects.load(ordering: .relaxed) })
        }
    }

    /// Payloads delivered twice by ``duplicateNext(_:)`` (the core drops the second copies).
    public var duplicatedCount: Int { state.update { $0.duplicated } }

    /// The nodes connected now.
    public var nodes: [String] { state.update { Array($0.nodes.keys).sorted() } }

    /// The nodes subscribed to `subject`.
    public func subscribers(of subject: String) -> Set<String> { state.update { $0.subscribers[subject] ?? [] } }

    /// Waits until the records satisfy `predicate`, up to `timeout`.
    public func waitForRecords(
        timeout: Duration = .seconds(5), _ predicate: @escaping @Sendable ([Record]) -> Bool
    ) async throws {
        _ = try await state.wait(
            timeout: timeout, orThrow: { RawWebSocketError.timedOut("loopback records within \(timeout)") },
            until: { s in predicate(s.records) ? .success(true) : nil })
    }

    // MARK: Subscriptions (from connections)

    func subscribe(_ subject: String, node: String) {
        state.update { _ = $0.subscribers[subject, default: []].insert(node) }
    }

    func unsubscribe(_ subject: String, node: String) {
        state.update { s in
            s.subscribers[subject]?.remove(node)
            if s.subscribers[subject]?.isEmpty == true { s.subscribers[subject] = nil }
        }
    }

    func hasInterest(in subject: String, besides node: String) -> Bool {
        state.update { s in
            guard let names = s.subscribers[subject] else { return false }
            return names.count > 1 || !names.contains(node)
        }
    }

    func close(_ connection: LoopbackConnection) -> Bool {
        state.update { s in
            guard s.nodes[connection.node] === connection else { return false }
            s.nodes[connection.node] = nil
            s.disconnected.remove(connection.node)
            s.outageBuffers[connection.node] = nil
            for subject in Array(s.subscribers.keys) {
                s.subscribers[subject]?.remove(connection.node)
                if s.subscribers[subject]?.isEmpty == true { s.subscribers[subject] = nil }
            }
            s.pending.removeAll { $0.to == connection.node }
            return true
        }
    }
}
