import Configuration
import Foundation
import Logging
import Neffos

extension Chat {
    /// A command-line flag of the chat programs and the configuration key it sets.
    public struct Flag: Sendable {
        /// The flag, `--port`.
        public let name: String
        /// The key its value sets, `neffos.listener.port`.
        public let key: String
        /// What its value is, for the usage line.
        public let value: String

        /// The address to listen on.
        public static let host = Flag(name: "--host", key: "neffos.listener.host", value: "HOST")
        /// The port (0 picks a free one).
        public static let port = Flag(name: "--port", key: "neffos.listener.port", value: "PORT")
        /// The exchange URL.
        public static let exchange = Flag(name: "--exchange", key: "neffos.exchange.url", value: "URL")
        /// This node's name in a cluster.
        public static let node = Flag(name: "--node", key: "neffos.node.name", value: "NAME")
        /// The PEM certificate chain: serves wss:// and https://.
        public static let tlsCertificate = Flag(name: "--tls-cert", key: "neffos.listener.tls.certificate", value: "FILE")
        /// The PEM private key of the chain.
        public static let tlsKey = Flag(name: "--tls-key", key: "neffos.listener.tls.key", value: "FILE")
    }

    /// The configuration of a chat program, from its command line: `flags` (each sets its key),
    /// `--config FILE` (JSON or YAML), `--help`. Flags win over `NEFFOS_*` environment
    /// variables, which win over the file (``Neffos/Server/Configuration/reader(overrides:file:environment:)``).
    ///
    /// Prints the usage and exits on `--help` (0), on an unknown flag or a flag without its
    /// value (2), and on a configuration file that is missing or does not parse (2, one line
    /// saying why).
    public static func configuration(program: String, flags: [Flag], arguments: [String] = CommandLine.arguments) async -> ConfigReader {
        let usage = "usage: \(program) " + (flags.map { "[\($0.name) \($0.value)]" } + ["[--config FILE.yaml|FILE.json]"]).joined(separator: " ")
        var overrides: [String: String] = [:]
        var file: String?
        var rest = arguments.dropFirst().makeIterator()
        while let argument = rest.next() {
            if argument == "--help" || argument == "-h" {
                print(usage)
                print("Settings come from the flags, then NEFFOS_* environment variables, then --config (keys: neffos.listener.port, neffos.limits.rooms, …).")
                exit(0)
            }
            guard let value = rest.next() else { fail("\(argument) needs a value\n\(usage)") }
            if argument == "--config" {
                file = value
            } else if let flag = flags.first(where: { $0.name == argument }) {
                overrides[flag.key] = value
            } else {
                fail("unknown argument \(argument)\n\(usage)")
            }
        }
        do {
            return try await Server.Configuration.reader(overrides: overrides, file: file)
        } catch {
            fail("cannot start: \(error)")
        }
    }

    /// The listener's host and port from `config` (for a chat mounted in a framework, which
    /// binds them itself); exits with the key's error on a wrong value.
    public static func address(_ config: ConfigReader, defaultPort: Int = 8080) -> (host: String, port: Int) {
        let values = ConfigValues(config, scope: "neffos")
        do {
            let port = try values.int("listener.port", minimum: 0) ?? defaultPort
            guard port <= 65_535 else { throw values.invalid("listener.port", "must be at most 65535, got \(port)") }
            return (try values.string("listener.host") ?? "127.0.0.1", port)
        } catch {
            fail("cannot start: \(error)")
        }
    }

    /// The server's configuration from `config`, logging to `logger`; exits with the key's error
    /// on a wrong value.
    public static func serverConfiguration(_ config: ConfigReader, logger: Logger, exchanges: ExchangeRegistry = .standard) -> Server.Configuration {
        do {
            var configuration = try Server.Configuration(config: config, exchanges: exchanges)
            configuration.logger = logger
            configure(&configuration)
            return configuration
        } catch {
            fail("cannot start: \(error)")
        }
    }

    /// Prints `message` to standard error and exits with status 2.
    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(2)
    }
}
