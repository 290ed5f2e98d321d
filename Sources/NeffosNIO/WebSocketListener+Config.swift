import Configuration
import NIOCore
import NIOPosix
import Neffos

extension WebSocketListener {
    /// A listener whose address, path and TLS files come from `config` under `scope`; the
    /// parameters are the defaults for what the reader does not hold.
    ///
    /// ## Keys
    /// | key | setting | default |
    /// |---|---|---|
    /// | `neffos.listener.host` | the address to bind | `host` |
    /// | `neffos.listener.port` | the port, 0…65535 (0 picks a free one) | `port` |
    /// | `neffos.listener.path` | the WebSocket path (`*` for any) | `path` |
    /// | `neffos.listener.tls.certificate` | the PEM certificate chain: serves `wss://` | none: `ws://` |
    /// | `neffos.listener.tls.key` | its PEM private key (with the chain, never alone) | none |
    ///
    /// - Throws: ``Neffos/NeffosError/invalidConfiguration`` naming the key: a port out of range,
    ///   one of the TLS files without the other, or a ``TLSFailure`` reading them.
    public convenience init(
        server: Server,
        config: ConfigReader,
        scope: String = "neffos",
        host: String = "127.0.0.1",
        port: Int = 8080,
        path: String? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        responder: HTTPPageResponder? = nil
    ) throws(NeffosError) {
        let values = ConfigValues(config, scope: scope)
        let port = try values.int("listener.port", minimum: 0) ?? port
        guard port <= 65_535 else { throw values.invalid("listener.port", "must be at most 65535, got \(port)") }
        let configuredPath = try values.string("listener.path")
        let tls = try Self.tls(values)
        self.init(
            server: server, host: try values.string("listener.host") ?? host, port: port,
            path: configuredPath.map { $0 == "*" ? nil : $0 } ?? path, group: group, responder: responder, tls: tls)
    }

    private static func tls(_ values: ConfigValues) throws(NeffosError) -> ServerTLS? {
        let certificate = try values.string("listener.tls.certificate")
        let key = try values.string("listener.tls.key")
        switch (certificate, key) {
        case (nil, nil): return nil
        case (_?, nil): throw values.invalid("listener.tls.key", "missing: give the private key of listener.tls.certificate")
        case (nil, _?): throw values.invalid("listener.tls.certificate", "missing: give the certificate chain of listener.tls.key")
        case (let certificate?, let key?):
            do {
                return try ServerTLS(certificateChain: certificate, privateKey: key)
            } catch {
                let keyFailure = error == .unreadableKey || (error == .fileNotFound && error.detail == key)
                throw values.invalid(keyFailure ? "listener.tls.key" : "listener.tls.certificate", "\(error)")
            }
        }
    }
}
