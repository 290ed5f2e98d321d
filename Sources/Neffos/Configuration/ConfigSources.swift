#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Configuration
import SystemPackage

extension Server.Configuration {
    /// The configuration reader the neffos programs use (`neffos serve`, `neffos cluster`, the
    /// chat examples), and a sensible one for yours: values from `overrides` (the program's
    /// flags, by key) first, then environment variables (`NEFFOS_LIMITS_ROOMS` for
    /// `neffos.limits.rooms`), then `file`, a JSON (`.json`) or YAML (`.yaml`, `.yml`) file:
    ///
    /// ```yaml
    /// neffos:
    ///   exchange:
    ///     url: nats://10.0.0.1:4222
    ///   limits:
    ///     rooms: 64
    ///   listener:
    ///     port: 443
    ///     tls:
    ///       certificate: /etc/neffos/chain.pem
    ///       key: /etc/neffos/key.pem
    /// ```
    ///
    /// - Throws: ``NeffosError/invalidConfiguration`` when the file is missing, of another
    ///   kind, or does not parse.
    public static func reader(
        overrides: [String: String] = [:],
        file: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws(NeffosError) -> ConfigReader {
        var providers: [any ConfigProvider] = [
            InMemoryProvider(
                name: "flags",
                values: Dictionary(uniqueKeysWithValues: overrides.map { (AbsoluteConfigKey(ConfigKey($0.key)), ConfigValue(.string($0.value), isSecret: false)) })),
            EnvironmentVariablesProvider(environmentVariables: environment),
        ]
        if let file {
            guard FileManager.default.fileExists(atPath: file) else {
                throw NeffosError.invalidConfiguration.with(detail: "no configuration file at \(file)")
            }
            do {
                switch file.split(separator: "/").last?.split(separator: ".").dropFirst().last?.lowercased() ?? "" {
                case "json": providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(file)))
                case "yaml", "yml": providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
                default:
                    throw NeffosError.invalidConfiguration.with(detail: "\(file): a configuration file ends in .json, .yaml or .yml")
                }
            } catch let error as NeffosError {
                throw error
            } catch {
                throw NeffosError.invalidConfiguration.with(detail: "\(file) does not parse: \(error)")
            }
        }
        return ConfigReader(providers: providers)
    }
}
