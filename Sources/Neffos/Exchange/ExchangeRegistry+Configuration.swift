#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ExchangeRegistry {
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
