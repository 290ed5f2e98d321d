import Configuration

/// Reads neffos's settings from a `ConfigReader`, each key under a scope, and names the full
/// key in every error: a value that is present but wrong stops start-up, it never falls back to
/// the default silently.
///
/// Values may be strings (environment variables, flags, YAML) or typed (JSON numbers and
/// booleans); both are read the same way.
package struct ConfigValues: Sendable {
    package let reader: ConfigReader
    package let scope: String

    package init(_ reader: ConfigReader, scope: String) {
        self.reader = reader
        self.scope = scope
    }

    /// The full name of `key`, as errors and documentation give it.
    package func name(_ key: String) -> String { scope.isEmpty ? key : "\(scope).\(key)" }

    /// The value of `key` as text, whatever its type in the source; `nil` when absent.
    package func text(_ key: String) -> String? {
        let configKey = ConfigKey(name(key))
        if let value = reader.string(forKey: configKey) { return value }
        if let value = reader.int(forKey: configKey) { return String(value) }
        if let value = reader.double(forKey: configKey) { return String(value) }
        if let value = reader.bool(forKey: configKey) { return String(value) }
        return nil
    }

    package func invalid(_ key: String, _ problem: String) -> NeffosError {
        NeffosError.invalidConfiguration.with(detail: "\(name(key)): \(problem)")
    }

    /// A string value; an empty one is an error.
    package func string(_ key: String) throws(NeffosError) -> String? {
        guard let value = text(key)?.trimmed else { return nil }
        guard !value.isEmpty else { throw invalid(key, "is empty") }
        return value
    }

    /// A whole number of at least `minimum`; a byte count may carry a unit (`512KiB`, `4MiB`).
    package func int(_ key: String, minimum: Int = 0, bytes: Bool = false) throws(NeffosError) -> Int? {
        guard let value = text(key) else { return nil }
        guard let number = bytes ? ConfigParsing.byteCount(value) : Int(value.trimmed) else {
            throw invalid(key, bytes ? "expected a number of bytes (65536, 512KiB, 4MiB), got \"\(value)\"" : "expected a whole number, got \"\(value)\"")
        }
        guard number >= minimum else { throw invalid(key, "must be at least \(minimum), got \(number)") }
        return number
    }

    /// A limit that may be switched off (`none`): `.some(nil)` then.
    package func optionalInt(_ key: String, minimum: Int = 1) throws(NeffosError) -> Int?? {
        guard let value = text(key) else { return nil }
        if ConfigParsing.isOff(value) { return .some(nil) }
        return .some(try int(key, minimum: minimum))
    }

    /// A duration: a number of seconds (`10`, `0.5`) or with a unit (`500ms`, `10s`, `2m`, `1h`).
    package func duration(_ key: String) throws(NeffosError) -> Duration? {
        guard let value = text(key) else { return nil }
        guard let duration = ConfigParsing.duration(value) else {
            throw invalid(key, "expected a duration (10s, 500ms, 2m, or seconds as a number, not negative), got \"\(value)\"")
        }
        return duration
    }

    /// A duration that may be switched off (`off` or `none`): `.some(nil)` then.
    package func optionalDuration(_ key: String) throws(NeffosError) -> Duration?? {
        guard let value = text(key) else { return nil }
        if ConfigParsing.isOff(value) { return .some(nil) }
        return .some(try duration(key))
    }

    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    package func bool(_ key: String) throws(NeffosError) -> Bool? {
        guard let value = text(key) else { return nil }
        guard let flag = ConfigParsing.bool(value) else { throw invalid(key, "expected true or false, got \"\(value)\"") }
        return flag
    }
}

/// The parsers of configuration values (text in, value or `nil` out); fuzzed by `neffos-fuzz url`.
package enum ConfigParsing {
    /// Whether `text` switches a setting off: `off`, `none`, `null`, `never`.
    package static func isOff(_ text: String) -> Bool {
        ["off", "none", "null", "never"].contains(text.trimmed.lowercased())
    }

    package static func bool(_ text: String) -> Bool? {
        switch text.trimmed.lowercased() {
        case "true", "yes", "on", "1": true
        case "false", "no", "off", "0": false
        default: nil
        }
    }

    /// A non-negative duration: seconds as a number, or a number with `ms`, `s`, `m` or `h`.
    package static func duration(_ text: String) -> Duration? {
        let value = text.trimmed.lowercased()
        let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var number = Substring(value)
        var scale = 1.0
        for unit in units where value.hasSuffix(unit.suffix) {
            number = value.dropLast(unit.suffix.count)
            scale = unit.seconds
            break
        }
        guard let amount = Double(String(number).trimmed), amount.isFinite, amount >= 0 else { return nil }
        let seconds = amount * scale
        // Beyond a year is a typo; it would also overflow nanoseconds sooner or later.
        guard seconds <= 365 * 86_400 else { return nil }
        return .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    /// A non-negative byte count: a whole number, optionally with `B`, `KB`/`KiB`, `MB`/`MiB`
    /// or `GB`/`GiB` (the binary units are 1,024-based, the decimal ones 1,000-based).
    package static func byteCount(_ text: String) -> Int? {
        let value = text.trimmed
        let units: [(suffix: String, factor: Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1),
        ]
        var number = Substring(value)
        var factor = 1
        for unit in units where value.lowercased().hasSuffix(unit.suffix.lowercased()) {
            number = value.dropLast(unit.suffix.count)
            factor = unit.factor
            break
        }
        guard let amount = Int(String(number).trimmed), amount >= 0 else { return nil }
        let (product, overflow) = amount.multipliedReportingOverflow(by: factor)
        return overflow ? nil : product
    }
}
