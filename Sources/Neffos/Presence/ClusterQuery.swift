#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A question one node asks every node of the cluster about its local connections.
enum ClusterQuery: Codable, Sendable, Equatable {
    /// The IDs of the members of `room` in `namespace`.
    case members(namespace: String, room: String)
    /// The rooms of `namespace` that have members.
    case rooms(namespace: String)
    /// The number of open connections.
    case connectionCount
    /// Whether a connection with this ID is open.
    case online(id: String)
}

/// One node's answer to a ``ClusterQuery``.
struct ClusterReply: Codable, Sendable, Equatable {
    /// Connection IDs or room names, sorted; at most the configured bound.
    var names: [String] = []
    /// How many there are (or the connection count): more than `names` holds when truncated.
    var count: Int = 0

    /// Whether `names` was cut at the bound.
    var truncated: Bool { count > names.count }

    static func encode(_ value: some Encodable) -> [UInt8]? {
        (try? JSONEncoder().encode(value)).map { Array($0) }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) -> T? {
        try? JSONDecoder().decode(type, from: Data(bytes))
    }
}

/// The queries this node asked and is waiting for answers to, by token; each ends when every
/// node it went to answered, or at its deadline.
struct PendingQueries: Sendable {
    struct Pending: Sendable {
        var expected: Set<String>
        var replies: [String: ClusterReply] = [:]
        let done: @Sendable ([String: ClusterReply], _ missing: [String]) -> Void
    }

    private var pending: [String: Pending] = [:]

    var count: Int { pending.count }

    mutating func register(_ token: String, expecting nodes: Set<String>, done: @escaping @Sendable ([String: ClusterReply], [String]) -> Void) {
        pending[token] = Pending(expected: nodes, done: done)
    }

    /// Records `node`'s reply; returns the completion to run when it was the last expected.
    mutating func reply(_ token: String, from node: String, _ reply: ClusterReply) -> (() -> Void)? {
        guard var query = pending[token], query.expected.contains(node), query.replies[node] == nil else { return nil }
        query.replies[node] = reply
        guard query.replies.count == query.expected.count else {
            pending[token] = query
            return nil
        }
        pending[token] = nil
        let replies = query.replies
        return { query.done(replies, []) }
    }

    /// Ends the query at its deadline; returns the completion (naming the nodes that did not
    /// answer), or `nil` when it had ended.
    mutating func expire(_ token: String) -> (() -> Void)? {
        guard let query = pending.removeValue(forKey: token) else { return nil }
        let missing = query.expected.subtracting(query.replies.keys).sorted()
        return { query.done(query.replies, missing) }
    }
}
