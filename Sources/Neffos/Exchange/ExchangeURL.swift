#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A parsed exchange URL: `scheme://host[:port][,host[:port]…][/path][?key=value&…]`.
///
/// Several hosts are allowed (a NATS cluster: `nats://a:4222,b:4222`); credentials, when given,
/// stay out of ``description``.
public struct ExchangeURL: Sendable, Equatable, CustomStringConvertible {
    /// One `host[:port]` of the URL.
    public struct Server: Sendable, Equatable {
        /// The host (brackets removed for IPv6).
        public var host: String
        /// The port, if given.
        public var port: Int?

        /// A host and an optional port.
        public init(host: String, port: Int?) {
            self.host = host
            self.port = port
        }
    }

    /// The text as given.
    public let text: String
    /// The scheme, lower-cased (`memory`, `nats`, `loopback`…).
    public let scheme: String
    /// The user, if the URL carries `user[:password]@`.
    public let user: String?
    /// The password, if given.
    public let password: String?
    /// The hosts, in order (empty for `memory://`).
    public let servers: [Server]
    /// The path, without the leading `/`.
    public let path: String
    /// The query parameters.
    public let options: [String: String]
    /// ``text`` with the password replaced by `***`, when there is a password.
    private let redactedText: String?

    /// Parses `text`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` saying what is wrong.
    public init(_ text: String) throws(NeffosError) {
        let trimmed = text.trimmed
        guard let schemeEnd = trimmed.firstRange(of: "://") else {
            throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has no scheme (expected scheme://…)")
        }
        let scheme: String = trimmed[..<schemeEnd.lowerBound].lowercased()
        let schemeIsValid = !scheme.isEmpty && scheme.allSatisfy { character in
            character.isLetter || character.isNumber || character == "+" || character == "-" || character == "."
        }
        guard schemeIsValid else {
            throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an invalid scheme")
        }
        var rest = Substring(trimmed[schemeEnd.upperBound...])
        var options: [String: String] = [:]
        if let query = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: query)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).percentDecoded
                let value = kv.count > 1 ? String(kv[1]).percentDecoded : ""
                options[key] = value
            }
            rest = rest[..<query]
        }
        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
        }
        var user: String?
        var password: String?
        var redactedText: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = credentials.first.map { String($0).percentDecoded }
            password = credentials.count > 1 ? String(credentials[1]).percentDecoded : nil
            if credentials.count > 1, !credentials[1].isEmpty {
                // Where the password is in the text: it may hold `:` and `@`, and so may the
                // path and the query after it.
                redactedText = String(trimmed[..<credentials[1].startIndex]) + "***" + String(trimmed[at...])
            }
            rest = rest[rest.index(after: at)...]
        }
        var servers: [Server] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) where !part.isEmpty || rest.contains(",") {
            guard !part.isEmpty else {
                throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an empty host in its list")
            }
            var host = Substring(part)
            var port: Int?
            if host.hasPrefix("[") {
                guard let close = host.firstIndex(of: "]") else {
                    throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an unclosed IPv6 address")
                }
                let after = host[host.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let value = Int(after.dropFirst()), (1...65535).contains(value) else {
                        throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an invalid port")
                    }
                    port = value
                }
                host = host[host.index(after: host.startIndex)..<close]
            } else if let colon = host.lastIndex(of: ":") {
                guard let value = Int(host[host.index(after: colon)...]), (1...65535).contains(value) else {
                    throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an invalid port in \"\(part)\"")
                }
                port = value
                host = host[..<colon]
            }
            guard !host.isEmpty, !host.contains(where: { $0.isWhitespace }) else {
                throw NeffosError.invalidConfiguration.with(detail: "exchange URL \"\(text)\" has an invalid host \"\(part)\"")
            }
            servers.append(Server(host: String(host), port: port))
        }
        self.text = trimmed
        self.scheme = scheme
        self.user = user
        self.password = password
        self.servers = servers
        self.path = path
        self.options = options
        self.redactedText = redactedText
    }

    /// The URL with any password replaced by `***` (safe to log).
    public var description: String { redactedText ?? text }
}

extension String {
    /// Without leading and trailing whitespace and newlines.
    var trimmed: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }

    /// `%XX` sequences decoded (invalid ones kept as they are).
    var percentDecoded: String {
        var bytes: [UInt8] = []
        var iterator = Array(utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            let high = iterator.next()
            let low = iterator.next()
            if let high, let low, let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
                if let high { bytes.append(high) }
                if let low { bytes.append(low) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
