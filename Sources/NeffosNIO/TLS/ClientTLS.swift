import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// How a ``Neffos/Client`` checks the server it dials with `wss://`.
///
/// By default (``systemTrust``) the server's chain must end at one of the system's trust roots
/// (on Debian, `/etc/ssl/certs` from the `ca-certificates` package), every certificate of it
/// must be current, and the server's certificate must name the host of the URL (a DNS name or
/// an IP address in its subject alternative names). A private CA is trusted with
/// ``trusting(certificateAuthorities:)``:
///
/// ```swift
/// let client = try await Client.dial(
///     "wss://chat.internal:8443/ws", namespaces: namespaces,
///     tls: try .trusting(certificateAuthorities: "/etc/neffos/ca.pem"))
/// ```
///
/// A failed check ends the dial with ``Neffos/NeffosError/dialFailed`` whose `underlying` error
/// is a ``TLSFailure``: ``TLSFailure/untrustedIssuer``, ``TLSFailure/expired``,
/// ``TLSFailure/notYetValid``, ``TLSFailure/wrongHost``, ``TLSFailure/rejected`` or
/// ``TLSFailure/handshakeFailed``.
public struct ClientTLS: Sendable {
    private enum Roots: Sendable {
        case system
        case certificates([Certificate])
    }

    private let roots: Roots
    /// Whether the server's certificate must name the host of the URL. Default: `true`. Turn it
    /// off only where the name cannot match and the CA is yours alone.
    public var verifiesHostname = true

    private init(roots: Roots) {
        self.roots = roots
    }

    /// Trusts the system's roots (the default).
    public static let systemTrust = ClientTLS(roots: .system)

    /// Trusts the CA certificates of a PEM file, and no other root.
    ///
    /// - Throws: ``TLSFailure/fileNotFound`` or ``TLSFailure/unreadableCertificate``.
    public static func trusting(certificateAuthorities path: String) throws(TLSFailure) -> ClientTLS {
        guard let data = FileManager.default.contents(atPath: path) else { throw TLSFailure.fileNotFound.with(detail: path) }
        return try trusting(pem: String(decoding: data, as: UTF8.self), source: path)
    }

    /// Trusts the CA certificates of PEM text, and no other root.
    ///
    /// - Throws: ``TLSFailure/unreadableCertificate``.
    public static func trusting(pem: String) throws(TLSFailure) -> ClientTLS {
        try trusting(pem: pem, source: "the PEM text")
    }

    private static func trusting(pem: String, source: String) throws(TLSFailure) -> ClientTLS {
        let certificates: [Certificate]
        do {
            certificates = try PEMDocument.parseMultiple(pemString: pem).map { try Certificate(pemDocument: $0) }
        } catch {
            throw TLSFailure.unreadableCertificate.with(detail: source)
        }
        guard !certificates.isEmpty else { throw TLSFailure.unreadableCertificate.with(detail: source) }
        return ClientTLS(roots: .certificates(certificates))
    }

    /// Checks the chain a server presented for `host` (DER, the server's own first): `nil`
    /// when it passes.
    func check(_ presented: [[UInt8]?], host: String, now: Date = Date()) async -> TLSFailure? {
        var chain: [Certificate] = []
        for der in presented {
            guard let der, let parsed = try? Certificate(derEncoded: der) else {
                return TLSFailure.rejected.with(detail: "the server sent a certificate that cannot be parsed")
            }
            chain.append(parsed)
        }
        guard let leaf = chain.first else { return TLSFailure.untrustedIssuer.with(detail: "the server sent no certificate") }
        let store: CertificateStore
        switch roots {
        case .system: store = CertificateStore.systemTrustRoots
        case .certificates(let certificates): store = CertificateStore(certificates)
        }
        var verifier = Verifier(rootCertificates: store) { RFC5280Policy() }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        if case .couldNotValidate(let failures) = result {
            // No failure at all: no candidate chain reached a trusted root.
            guard !failures.isEmpty else {
                return TLSFailure.untrustedIssuer.with(detail: "\(leaf.subject), issued by \(leaf.issuer)")
            }
            for failure in failures {
                for certificate in failure.chain {
                    if certificate.notValidAfter < now {
                        return TLSFailure.expired.with(detail: "\(certificate.subject), on \(certificate.notValidAfter)")
                    }
                    if certificate.notValidBefore > now {
                        return TLSFailure.notYetValid.with(detail: "\(certificate.subject), from \(certificate.notValidBefore)")
                    }
                }
            }
            return TLSFailure.rejected.with(detail: failures.map { "\($0.policyFailureReason)" }.joined(separator: "; "))
        }
        guard verifiesHostname else { return nil }
        // The chain is trusted and current: check the name (with the same chain rules, which
        // handle the leaf's critical extensions).
        let isIP = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        var identity = Verifier(rootCertificates: store) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: isIP ? nil : host, serverIP: isIP ? host : nil)
        }
        if case .couldNotValidate = await identity.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst())) {
            let names = (try? leaf.extensions.subjectAlternativeNames).flatMap { $0 }.map { $0.map { "\($0)" } } ?? []
            return TLSFailure.wrongHost.with(detail: "dialled \(host); the certificate names \(names.isEmpty ? "no host" : names.joined(separator: ", "))")
        }
        return nil
    }
}

/// A client's TLS for one URL: the context (built once, kept across reconnections) and the
/// failure of the last check, which the dial reports.
package final class ClientTLSSession: Sendable {
    private let tls: ClientTLS
    private let host: String
    private let context: NIOSSLContext
    private let failure = Mutex<TLSFailure?>(nil)

    package init(_ tls: ClientTLS, host: String) throws(TLSFailure) {
        self.tls = tls
        self.host = host
        var configuration = TLSConfiguration.makeClientConfiguration()
        // The custom check below replaces BoringSSL's, the host name included: no roots to
        // load here, and no second name check.
        configuration.trustRoots = .certificates([])
        configuration.certificateVerification = .noHostnameVerification
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFailure.handshakeFailed.with(detail: "\(error)")
        }
    }

    /// The handler for one connection attempt.
    func makeHandler() throws -> NIOSSLClientHandler {
        failure.withLock { $0 = nil }
        // SNI carries host names only.
        let isIP = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return try NIOSSLClientHandler(context: context, serverHostname: isIP ? nil : host) { [self] chain, promise in
            let der = chain.map { try? $0.toDERBytes() }
            Task { [self] in
                let found = await tls.check(der, host: host)
                failure.withLock { $0 = found }
                promise.succeed(found == nil ? .certificateVerified : .failed)
            }
        }
    }

    /// What failed the last attempt's check, or its handshake; `nil` when TLS is not to blame.
    func failureCause(of error: any Error) -> TLSFailure? {
        if let found = failure.withLock({ $0 }) { return found }
        if let error = error as? NIOSSLError, case .handshakeFailed = error {
            return TLSFailure.handshakeFailed.with(detail: "\(error)")
        }
        return nil
    }
}
