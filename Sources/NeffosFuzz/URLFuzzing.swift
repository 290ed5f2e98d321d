import Foundation
import Neffos

/// The `url` target: exchange URLs as applications configure them.
///
/// An input that starts with a NUL byte is the text of a configuration file (the rest of the
/// input), read by `ExchangeRegistry.configuredURL(file:)`; any other input is UTF-8 text
/// parsed as an exchange URL (invalid UTF-8 repaired, as a `String` would be).
enum URLFuzzing {
    static func check(_ bytes: UnsafeRawBufferPointer) {
        if bytes.first == 0 {
            checkConfigurationFile(UnsafeRawBufferPointer(rebasing: bytes.dropFirst()))
        } else {
            checkURL(String(decoding: bytes, as: UTF8.self))
        }
    }

    /// Parses `text`. A URL that parses must parse again from its ``ExchangeURL/text`` to the
    /// same value; its hosts are not empty and its ports in range; its description (what is
    /// logged) must hide any password and say everything else: parsed again, it gives the same
    /// URL with the password `***`.
    static func checkURL(_ text: String) {
        guard let url = try? ExchangeURL(text) else { return }
        require(!url.scheme.isEmpty && url.scheme == url.scheme.lowercased(), "scheme \"\(url.scheme)\" of \(text.debugDescription)")
        for server in url.servers {
            require(!server.host.isEmpty, "an empty host in \(text.debugDescription)")
            if let port = server.port { require((1...65535).contains(port), "port \(port) in \(text.debugDescription)") }
        }
        require((try? ExchangeURL(url.text)) == url, "\(text.debugDescription) does not parse again the same")
        guard let password = url.password, !password.isEmpty else {
            require(url.description == url.text, "\(text.debugDescription) has no password but its description differs")
            return
        }
        guard let redacted = try? ExchangeURL(url.description) else {
            fatalError("the description of \(text.debugDescription) does not parse: \(url.description.debugDescription)")
        }
        require(
            redacted.password == "***", "the description of \(text.debugDescription) does not hide the password: \(url.description.debugDescription)")
        require(
            redacted.scheme == url.scheme && redacted.user == url.user && redacted.servers == url.servers
                && redacted.path == url.path && redacted.options == url.options,
            "the description of \(text.debugDescription) says another URL: \(url.description.debugDescription)")
    }

    /// Where configuration files are written, one per process.
    private static let file = FileManager.default.temporaryDirectory
        .appendingPathComponent("neffos-fuzz-\(ProcessInfo.processInfo.processIdentifier).conf").path

    /// Reads `bytes` as a configuration file. Its `exchange` value, when there is one, is
    /// trimmed, not empty, holds no comment and no line break; it is then checked as a URL.
    static func checkConfigurationFile(_ bytes: UnsafeRawBufferPointer) {
        // An empty file is left out: Foundation's `String(contentsOfFile:)` leaks a 4 KiB read
        // buffer on an empty file (FoundationEssentials of Swift 6.3.1, in `readBytesFromFile`), which the leak
        // detector would report on every run. Its result is the fallback anyway.
        guard !bytes.isEmpty else { return }
        guard FileManager.default.createFile(atPath: file, contents: Data(bytes)) else {
            fatalError("cannot write \(file)")
        }
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fallback = "fallback://"
        guard let value = try? ExchangeRegistry.configuredURL(environment: [:], file: file, fallback: fallback) else {
            return  // not UTF-8: the file cannot be read, which is an error value
        }
        guard value != fallback else { return }
        require(!value.isEmpty, "an empty exchange value")
        require(!value.contains("#"), "a comment in the exchange value \(value.debugDescription)")
        require(!value.contains(where: \.isNewline), "a line break in the exchange value \(value.debugDescription)")
        require(value.first?.isWhitespace == false && value.last?.isWhitespace == false, "an untrimmed exchange value \(value.debugDescription)")
        checkURL(value)
    }
}
