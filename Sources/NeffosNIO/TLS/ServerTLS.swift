import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// The certificate chain and private key a ``WebSocketListener`` serves `wss://` with.
///
/// ```swift
/// let tls = try ServerTLS(certificateChain: "/etc/neffos/chain.pem", privateKey: "/etc/neffos/key.pem")
/// let listener = WebSocketListener(server: server, host: "0.0.0.0", port: 443, tls: tls)
/// // Later, after the files were renewed (on SIGHUP, say):
/// try tls.reload()
/// ```
///
/// The files are PEM: the chain starts with the server's own certificate, followed by the
/// intermediates; the key is unencrypted (PKCS#8, RSA or EC). ``reload()`` reads them again:
/// new connections get the new chain, connections already open keep theirs. Plain HTTP pages
/// of the listener (the chat page, `/metrics`) are served over TLS too.
public final class ServerTLS: Sendable {
    /// The path of the PEM certificate chain.
    public let certificateChainPath: String
    /// The path of the PEM private key.
    public let privateKeyPath: String
    /// The context new connections are served with; replaced by ``reload()``.
    private let context: Mutex<NIOSSLContext>

    /// Reads the certificate chain and the key.
    ///
    /// - Throws: ``TLSFailure/fileNotFound``, ``TLSFailure/unreadableCertificate``,
    ///   ``TLSFailure/unreadableKey`` or ``TLSFailure/keyMismatch``, with the path in its detail.
    public init(certificateChain: String, privateKey: String) throws(TLSFailure) {
        self.certificateChainPath = certificateChain
        self.privateKeyPath = privateKey
        self.context = Mutex(try Self.load(chain: certificateChain, key: privateKey))
    }

    /// Reads the files again; new connections are served with what they hold now. On an error
    /// the chain in use stays.
    ///
    /// - Throws: as ``init(certificateChain:privateKey:)``.
    public func reload() throws(TLSFailure) {
        let fresh = try Self.load(chain: certificateChainPath, key: privateKeyPath)
        context.withLock { $0 = fresh }
    }

    /// The handler that serves TLS on one new connection.
    func makeHandler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: context.withLock { $0 })
    }

    private static func load(chain: String, key: String) throws(TLSFailure) -> NIOSSLContext {
        for path in [chain, key] where !FileManager.default.fileExists(atPath: path) {
            throw TLSFailure.fileNotFound.with(detail: path)
        }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(chain)
        } catch {
            throw TLSFailure.unreadableCertificate.with(detail: chain)
        }
        guard !certificates.isEmpty else { throw TLSFailure.unreadableCertificate.with(detail: chain) }
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw TLSFailure.unreadableKey.with(detail: key)
        }
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificates.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            // The certificates and the key each parsed: what BoringSSL refuses is the pair.
            throw TLSFailure.keyMismatch.with(detail: "\(key) for \(chain)")
        }
    }
}
