import Foundation
import Neffos

/// The `url` target: exchange URLs as applications configure them.
///
/// An input that starts with a NUL byte is a configuration value (the rest of the input), as
/// `Server.Configuration(config:)` parses it; any other input is UTF-8 text parsed as an
/// exchange URL (invalid UTF-8 repaired, as a `String` would be).
enum URLFuzzing {
    static func check(_ bytes: UnsafeRawBufferPointer) {
        if bytes.first == 0 {
            checkConfigurationValue(UnsafeRawBufferPointer(rebasing: bytes.dropFirst()))
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

    /// Parses `bytes` as a configuration value, as `neffos.*` keys read them (durations, byte
    /// counts, switches). A duration is never negative nor beyond a year; a byte count never
    /// negative; a value that switches a setting off is not also a number.
    static func checkConfigurationValue(_ bytes: UnsafeRawBufferPointer) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let duration = ConfigParsing.duration(text) {
            require(duration >= .zero && duration <= .seconds(365 * 86_400), "duration \(duration) from \(text.debugDescription)")
            require(!ConfigParsing.isOff(text), "\(text.debugDescription) is both off and a duration")
        }
        if let count = ConfigParsing.byteCount(text) {
            require(count >= 0, "byte count \(count) from \(text.debugDescription)")
        }
        _ = ConfigParsing.bool(text)
    }
}
