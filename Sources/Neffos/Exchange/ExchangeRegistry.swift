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
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = credentials.first.map { String($0).percentDecoded }
            password = credentials.count > 1 ? String(credentials[1]).percentDecoded : nil
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
    }

    /// The URL with any password replaced by `***` (safe to log).
    public var description: String {
        guard let password, !password.isEmpty else { return text }
        guard let at = text.lastIndex(of: "@"), let colon = text[..<at].lastIndex(of: ":") else { return text }
        return String(text[...colon]) + "***" + String(text[at...])
    }
}

/// One kind of exchange an application can pick by URL scheme.
public struct ExchangePlugin: Sendable {
    /// The URL scheme it answers (`nats`).
    public let scheme: String
    /// One line for error messages and help (`nats://host:port[,host:port…] — a NATS cluster`).
    public let summary: String
    /// Makes the exchange for a URL of this scheme.
    public let make: @Sendable (ExchangeURL) throws -> any Exchange

    /// A plugin.
    public init(scheme: String, summary: String, make: @escaping @Sendable (ExchangeURL) throws -> any Exchange) {
        self.scheme = scheme.lowercased()
        self.summary = summary
        self.make = make
    }

    /// `memory://` (``InProcessExchange/shared``) and `memory://NAME` (a named bus).
    public static let memory = ExchangePlugin(
        scheme: "memory", summary: "memory://[NAME] — servers in this process (the default)"
    ) { url in
        InProcessExchange.named(url.servers.first?.host ?? url.path)
    }
}

/// The exchanges an application can choose from, by URL scheme: an immutable table built from
/// the plugins the application links.
///
/// ```swift
/// let registry = ExchangeRegistry([.memory, LoopbackExchange.plugin, .nats])
/// configuration.exchange = try registry.exchange(for: ExchangeRegistry.configuredURL())
/// ```
///
/// An unknown scheme or a malformed URL is a start-up error that names the registered schemes.
public struct ExchangeRegistry: Sendable {
    private let plugins: [String: ExchangePlugin]

    /// A registry of `plugins`; a later plugin for the same scheme replaces an earlier one.
    public init(_ plugins: [ExchangePlugin]) {
        var table: [String: ExchangePlugin] = [:]
        for plugin in plugins { table[plugin.scheme] = plugin }
        self.plugins = table
    }

    /// The registry with the core's plugin: `memory://`.
    public static let standard = ExchangeRegistry([.memory])

    /// The registered schemes, sorted.
    public var schemes: [String] { plugins.keys.sorted() }

    /// A copy with `plugin` added.
    public func adding(_ plugin: ExchangePlugin) -> ExchangeRegistry {
        ExchangeRegistry(Array(plugins.values) + [plugin])
    }

    /// The exchange for `url`.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` for a malformed URL or an unknown scheme
    ///   (the message lists the registered schemes), or the plugin's own error.
    public func exchange(for url: String) throws -> any Exchange {
        let parsed = try ExchangeURL(url)
        guard let plugin = plugins[parsed.scheme] else {
            let known = plugins.values.sorted { $0.scheme < $1.scheme }.map { "  \($0.summary)" }.joined(separator: "\n")
            throw NeffosError.invalidConfiguration.with(
                detail: "no exchange is registered for \"\(parsed.scheme)://\" (in \(parsed)); registered:\n\(known)")
        }
        return try plugin.make(parsed)
    }

    /// The name of the environment variable that holds the exchange URL.
    public static let environmentVariable = "NEFFOS_EXCHANGE"

    /// The exchange URL from configuration, by precedence: a command-line `flag` value, the
    /// `NEFFOS_EXCHANGE` environment variable, the `exchange = …` line of a configuration
    /// `file`, then `fallback`.
    ///
    /// The file holds `key = value` lines; `#` starts a comment.
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` when the file cannot be read.
    public static func configuredURL(
        flag: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        file: String? = nil,
        fallback: String = "memory://"
    ) throws -> String {
        if let flag, !flag.isEmpty { return flag }
        if let value = environment[environmentVariable], !value.isEmpty { return value }
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw NeffosError.invalidConfiguration.with(detail: "cannot read configuration file \(file)").with(underlying: error)
            }
            for line in text.split(whereSeparator: \.isNewline) {
                let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let kv = content.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, String(kv[0]).trimmed == "exchange" else { continue }
                let value = String(kv[1]).trimmed
                if !value.isEmpty { return value }
            }
        }
        return fallback
    }
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
