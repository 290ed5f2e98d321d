/// Why a TLS connection or a TLS setting failed.
///
/// A client's dial that fails for one of these reasons throws ``Neffos/NeffosError/dialFailed``
/// with the failure as its `underlying` error; loading a certificate or a key throws it
/// directly. Compare with the static members (`failure == .expired`); ``detail`` says what was
/// involved (a path, a host name, the certificate's subject) and is safe to log.
///
/// ```swift
/// do {
///     _ = try await Client.dial("wss://chat.example.com/ws", namespaces: namespaces)
/// } catch let error as NeffosError where error.underlying as? TLSFailure == .untrustedIssuer {
///     // the server's certificate does not chain to a trusted root
/// }
/// ```
public struct TLSFailure: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case fileNotFound, unreadableCertificate, unreadableKey, keyMismatch
        case untrustedIssuer, expired, notYetValid, wrongHost, rejected, handshakeFailed
    }

    private let code: Code
    /// What was involved: a file path, a host name, a certificate's subject, BoringSSL's text.
    public private(set) var detail: String?

    private init(_ code: Code, _ detail: String? = nil) {
        self.code = code
        self.detail = detail
    }

    /// No file at the given path (a certificate chain, a key, a CA bundle).
    public static let fileNotFound = TLSFailure(.fileNotFound)
    /// The file holds no PEM certificate that could be read.
    public static let unreadableCertificate = TLSFailure(.unreadableCertificate)
    /// The file holds no PEM private key that could be read.
    public static let unreadableKey = TLSFailure(.unreadableKey)
    /// The private key does not belong to the first certificate of the chain.
    public static let keyMismatch = TLSFailure(.keyMismatch)
    /// The server's certificate does not chain to a trusted root (self-signed, or signed by a
    /// CA the client was not told to trust).
    public static let untrustedIssuer = TLSFailure(.untrustedIssuer)
    /// A certificate of the server's chain has expired.
    public static let expired = TLSFailure(.expired)
    /// A certificate of the server's chain is not valid yet (check the clocks).
    public static let notYetValid = TLSFailure(.notYetValid)
    /// The server's certificate is not for the host the client dialled.
    public static let wrongHost = TLSFailure(.wrongHost)
    /// The server's chain is trusted and current but breaks another rule of RFC 5280 (a CA
    /// without the CA flag, a wrong key usage…); ``detail`` says which.
    public static let rejected = TLSFailure(.rejected)
    /// The TLS handshake failed for another reason (no common protocol version or cipher, the
    /// peer does not speak TLS); ``detail`` carries BoringSSL's text.
    public static let handshakeFailed = TLSFailure(.handshakeFailed)

    /// A copy of this failure carrying `detail`.
    public func with(detail: String) -> TLSFailure {
        TLSFailure(code, detail)
    }

    /// The stable text of this kind of failure.
    public var text: String {
        switch code {
        case .fileNotFound: "no such file"
        case .unreadableCertificate: "no readable PEM certificate"
        case .unreadableKey: "no readable PEM private key"
        case .keyMismatch: "the private key does not match the certificate"
        case .untrustedIssuer: "the server's certificate is not signed by a trusted authority"
        case .expired: "the server's certificate has expired"
        case .notYetValid: "the server's certificate is not valid yet"
        case .wrongHost: "the server's certificate is for another host"
        case .rejected: "the server's certificate chain was rejected"
        case .handshakeFailed: "the TLS handshake failed"
        }
    }

    private var hint: String {
        switch code {
        case .fileNotFound: "check the path"
        case .unreadableCertificate: "give a PEM file that starts with -----BEGIN CERTIFICATE-----"
        case .unreadableKey: "give a PEM private key (PKCS#8, RSA or EC), unencrypted"
        case .keyMismatch: "give the key the certificate was issued for"
        case .untrustedIssuer:
            "trust its CA on the client (ClientTLS.trusting(certificateAuthorities:)), or serve a chain that ends at a public root"
        case .expired: "renew the server's certificate; the server picks a new one up with ServerTLS.reload()"
        case .notYetValid: "check the clocks of the client and the server"
        case .wrongHost: "dial the host name the certificate names, or issue one for this name"
        case .rejected: "issue the server a certificate that follows RFC 5280"
        case .handshakeFailed: "check that the server serves TLS on this port (wss://), and the client dials wss://"
        }
    }

    /// The full, log-safe description: text, detail and what to do.
    public var description: String {
        var parts = text
        if let detail { parts += ": \(detail)" }
        return parts + "; " + hint
    }

    /// Failures of the same kind are equal, whatever their detail.
    public static func == (lhs: TLSFailure, rhs: TLSFailure) -> Bool { lhs.code == rhs.code }

    /// Hashes the kind of failure only, consistently with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// Matches a failure of this kind in a `catch` or a `switch`, whatever its detail.
    public static func ~= (pattern: TLSFailure, value: any Error) -> Bool {
        (value as? TLSFailure) == pattern
    }
}
