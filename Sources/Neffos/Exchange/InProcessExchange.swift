import Logging
import NIOCore
import Synchronization

/// An exchange inside one process: servers that share one become nodes of one cluster, with
/// no infrastructure.
///
/// ```swift
/// let bus = InProcessExchange()
/// var a = Server.Configuration(); a.exchange = bus
/// var b = Server.Configuration(); b.exchange = bus
/// // A broadcast on one server reaches the connections of the other.
/// ```
///
/// Delivery is synchronous, on the publisher's thread, so each publisher's order is kept.
/// `memory://` in an ``ExchangeRegistry`` is ``shared``; `memory://NAME` names a separate bus.
public final class InProcessExchange: Exchange, CustomStringConvertible {
    /// The process-wide bus (`memory://`).
    public static let shared = InProcessExchange(name: "")

    private static let named = Locked<[String: InProcessExchange]>([:])

    /// The bus called `name` in this process (`memory://NAME`), made on first use.
    public static func named(_ name: String) -> InProcessExchange {
        if name.isEmpty { return shared }
        return named.withLock { buses in
            if let bus = buses[name] { return bus }
            let bus = InProcessExchange(name: name)
            buses[name] = bus
            return bus
        }
    }

    let name: String
    let bus = Locked(Bus())

    struct Bus {
        var nodes: [String: InProcessConnection] = [:]
        var subscribers: [String: Set<String>] = [:]
    }

    /// A new, private bus.
    public convenience init() { self.init(name: "") }

    private init(name: String) { self.name = name }

    /// `memory://` or `memory://NAME`.
    public var description: String { "memory://\(name)" }

    /// The names of the nodes connected now.
    public var nodes: [String] { bus.withLock { Array($0.nodes.keys).sorted() } }

    /// Connects a node.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` when a node of that name is connected.
    public func connect(
        node: String, logger: Logger,
        deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
        status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> any ExchangeConnection {
        let connection = InProcessConnection(exchange: self, node: node, deliver: deliver, status: status)
        try bus.withLock { bus throws(NeffosError) in
            guard bus.nodes[node] == nil else {
                throw NeffosError.invalidConfiguration.with(detail: "node \"\(node)\" is already connected to \(description)")
            }
            bus.nodes[node] = connection
        }
        status(.connected)
        return connection
    }
}

/// One node's connection to an ``InProcessExchange``.
final class InProcessConnection: ExchangeConnection {
    private let exchange: InProcessExchange
    let node: String
    let deliver: @Sendable (String, ByteBuffer) -> Void
    private let status: @Sendable (ExchangeStatus) -> Void
    private let published = Atomic<Int>(0)
    private let delivered = Atomic<Int>(0)

    init(exchange: InProcessExchange, node: String, deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
         status: @escaping @Sendable (ExchangeStatus) -> Void) {
        self.exchange = exchange
        self.node = node
        self.deliver = deliver
        self.status = status
    }

    func publish(_ payload: ByteBuffer, to subject: String) {
        published.add(1, ordering: .relaxed)
        let targets = exchange.bus.withLock { bus -> [InProcessConnection] in
            guard let names = bus.subscribers[subject] else { return [] }
            return names.compactMap { $0 == node ? nil : bus.nodes[$0] }
        }
        for target in targets {
            target.delivered.add(1, ordering: .relaxed)
            target.deliver(subject, payload)
        }
    }

    func subscribe(_ subject: String) {
        exchange.bus.withLock { _ = $0.subscribers[subject, default: []].insert(node) }
    }

    func unsubscribe(_ subject: String) {
        exchange.bus.withLock { bus in
            bus.subscribers[subject]?.remove(node)
            if bus.subscribers[subject]?.isEmpty == true { bus.subscribers[subject] = nil }
        }
    }

    func hasInterest(in subject: String) -> Bool {
        exchange.bus.withLock { bus in
            guard let names = bus.subscribers[subject] else { return false }
            return names.count > 1 || !names.contains(node)
        }
    }

    func flush() async throws {}

    func close() async {
        let removed = exchange.bus.withLock { bus -> Bool in
            guard bus.nodes[node] === self else { return false }
            bus.nodes[node] = nil
            for subject in Array(bus.subscribers.keys) {
                bus.subscribers[subject]?.remove(node)
                if bus.subscribers[subject]?.isEmpty == true { bus.subscribers[subject] = nil }
            }
            return true
        }
        if removed { status(.closed) }
    }

    var statistics: ExchangeStatistics {
        ExchangeStatistics(published: published.load(ordering: .relaxed), delivered: delivered.load(ordering: .relaxed))
    }
}
