import Logging
import NIOCore

/// A bus that carries what one server node must tell the others: the plugin surface of
/// scale-out.
///
/// An exchange connects each node once (one bus connection per node, not per client) and
/// moves opaque payloads between nodes by subject. Everything neffos means by those payloads
/// (routing to namespaces, rooms and IDs, excluding a sender, asks across nodes) lives once, in
/// the core, above this protocol; an exchange only has to move bytes.
///
/// Three ship: ``InProcessExchange`` (servers in one process), `LoopbackExchange` (tests, with
/// recording and faults) and `NATSExchange` (a NATS cluster). See CONTRIBUTING.md to write
/// another.
public protocol Exchange: Sendable {
    /// Connects a node to the bus.
    ///
    /// - Parameters:
    ///   - node: the node's unique name; it receives what is published to its subjects, never
    ///     what it published itself.
    ///   - logger: where the exchange logs (the server's logger).
    ///   - deliver: called for each payload published by another node on a subject this node
    ///     subscribed to, in publication order per publisher and subject. It may be called on
    ///     any thread; it must not block.
    ///   - status: called when the bus connection changes state.
    /// - Throws: an error saying why the bus cannot be reached.
    func connect(
        node: String,
        logger: Logger,
        deliver: @escaping @Sendable (_ subject: String, _ payload: ByteBuffer) -> Void,
        status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> any ExchangeConnection
}

/// One node's connection to an ``Exchange``.
///
/// Calls may come from any thread. `publish`, `subscribe` and `unsubscribe` must not block:
/// while the bus is unreachable an exchange buffers publishes up to a bound and counts what it
/// drops; subscriptions survive its reconnections (it replays them).
public protocol ExchangeConnection: AnyObject, Sendable {
    /// Publishes `payload` to the nodes subscribed to `subject` (not to this node).
    func publish(_ payload: ByteBuffer, to subject: String)
    /// Starts delivering what other nodes publish on `subject`. Idempotent.
    func subscribe(_ subject: String)
    /// Stops delivering `subject`. Idempotent.
    func unsubscribe(_ subject: String)
    /// Whether another node may want `subject` (an exchange that cannot know says `true`).
    /// The core skips building a payload nobody would receive.
    func hasInterest(in subject: String) -> Bool
    /// Returns once everything published and subscribed so far has reached the bus.
    func flush() async throws
    /// Disconnects; no delivery happens after it returns.
    func close() async
    /// Counters of what the connection did, for tests and diagnostics.
    var statistics: ExchangeStatistics { get }
}

extension ExchangeConnection {
    /// By default every subject may interest another node.
    public func hasInterest(in subject: String) -> Bool { true }
}

/// What an exchange connection counted.
public struct ExchangeStatistics: Sendable, Equatable {
    /// Payloads published.
    public var published = 0
    /// Payloads delivered to this node.
    public var delivered = 0
    /// Payloads lost: dropped during an outage past the buffer, by a slow consumer, or by a
    /// fault.
    public var dropped = 0
    /// Times the bus connection was re-established.
    public var reconnects = 0
    /// Messages from other nodes that this node was subscribed to and never received: found
    /// by the server from gaps in each publisher's numbering (so they are counted whatever
    /// the exchange, even when the bus itself cannot tell). Filled in by
    /// ``Server/exchangeStatistics``; an exchange leaves it at 0.
    public var lost = 0

    /// Counters starting at zero.
    public init(published: Int = 0, delivered: Int = 0, dropped: Int = 0, reconnects: Int = 0) {
        self.published = published
        self.delivered = delivered
        self.dropped = dropped
        self.reconnects = reconnects
    }
}

/// A change of a node's bus connection.
public enum ExchangeStatus: Sendable, Equatable, CustomStringConvertible {
    /// Connected (the first time).
    case connected
    /// The connection was lost; local delivery goes on, publishes are buffered up to a bound.
    case disconnected(reason: String)
    /// Connected again; subscriptions were replayed.
    case reconnected
    /// This node could not keep up with `subject`; `dropped` payloads were lost.
    case slowConsumer(subject: String, dropped: Int)
    /// An error the exchange reported without losing the connection.
    case error(String)
    /// Closed for good.
    case closed

    /// A short description.
    public var description: String {
        switch self {
        case .connected: "connected"
        case .disconnected(let reason): "disconnected (\(reason))"
        case .reconnected: "reconnected"
        case .slowConsumer(let subject, let dropped): "slow consumer on \(subject): \(dropped) dropped"
        case .error(let text): "error: \(text)"
        case .closed: "closed"
        }
    }
}

/// The subjects the core uses on the bus, made of tokens that any name maps to injectively.
///
/// A name becomes a token by keeping `A–Z a–z 0–9 -` and writing every other byte of its
/// UTF-8 as `_` and two upper-case hex digits; the empty name is the lone token `_`. So
/// `"a.b"` → `a_2Eb`, `"*"` → `_2A`, `""` → `_`: no token is empty or contains `.`, `*`, `>`
/// or a space, and two different names never share a token.
public enum Subjects {
    /// The token for `name`.
    public static func token(_ name: String) -> String {
        if name.isEmpty { return "_" }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(name.utf8.count)
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                bytes.append(byte)
            default:
                bytes.append(UInt8(ascii: "_"))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The name a token stands for, or `nil` when `token` is not one this encoding makes.
    public static func name(fromToken token: String) -> String? {
        if token == "_" { return "" }
        var bytes: [UInt8] = []
        var iterator = Array(token.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "_") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static let hex = Array("0123456789ABCDEF".utf8)

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Broadcasts to a namespace.
    static func namespace(_ cluster: String, _ namespace: String) -> String {
        "neffos.\(cluster).n.\(token(namespace))"
    }

    /// Broadcasts to a room.
    static func room(_ cluster: String, _ namespace: String, _ room: String) -> String {
        "neffos.\(cluster).r.\(token(namespace)).\(token(room))"
    }

    /// Messages to the connections bearing an ID.
    static func connection(_ cluster: String, _ id: String) -> String {
        "neffos.\(cluster).c.\(token(id))"
    }

    /// Control messages to one node (ask replies, answers to its queries).
    static func node(_ cluster: String, _ node: String) -> String {
        "neffos.\(cluster).node.\(token(node))"
    }

    /// Joins and leaves of a room, for the nodes that follow its presence.
    static func presence(_ cluster: String, _ namespace: String, _ room: String) -> String {
        "neffos.\(cluster).p.\(token(namespace)).\(token(room))"
    }

    /// What every node of the cluster receives: heartbeats and queries.
    static func nodes(_ cluster: String) -> String {
        "neffos.\(cluster).nodes"
    }
}
