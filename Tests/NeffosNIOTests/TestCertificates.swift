import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority made at test time (none is committed), and the certificates it
/// issues, written as PEM files into a folder of their own.
struct TestCA {
    let name: String
    let key = P256.Signing.PrivateKey()
    let certificate: Certificate
    let folder: URL

    init(name: String = "neffos test CA") throws {
        self.name = name
        let subject = try DistinguishedName { CommonName(name) }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 86_400,
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(key))
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("neffos-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try certificate.serializeAsPEM().pemString.write(to: caFile, atomically: true, encoding: .utf8)
    }

    /// The CA's certificate, as PEM.
    var caFile: URL { folder.appendingPathComponent("ca.pem") }

    /// Issues a server certificate for `names` (DNS names and IPv4 addresses) valid over
    /// `validity`; writes `<file>.pem` (the chain) and `<file>.key`, returns their paths.
    func issue(
        _ file: String, names: [String] = ["localhost", "127.0.0.1"],
        validity: ClosedRange<Date> = Date() - 3600...Date() + 86_400
    ) throws -> (chain: String, key: String) {
        let leafKey = P256.Signing.PrivateKey()
        let alternativeNames: [GeneralName] = names.map { name in
            let octets = name.split(separator: ".").compactMap { UInt8($0) }
            return octets.count == 4 ? .ipAddress(ASN1OctetString(contentBytes: ArraySlice(octets))) : .dnsName(name)
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: validity.lowerBound, notValidAfter: validity.upperBound,
            issuer: certificate.subject, subject: try DistinguishedName { CommonName(names.first ?? file) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                SubjectAlternativeNames(alternativeNames)
                try ExtendedKeyUsage([.serverAuth])
            },
            issuerPrivateKey: .init(key))
        let chain = folder.appendingPathComponent("\(file).pem")
        let keyFile = folder.appendingPathComponent("\(file).key")
        try leaf.serializeAsPEM().pemString.write(to: chain, atomically: true, encoding: .utf8)
        try leafKey.pemRepresentation.write(to: keyFile, atomically: true, encoding: .utf8)
        return (chain.path, keyFile.path)
    }

    /// Removes the files.
    func remove() {
        try? FileManager.default.removeItem(at: folder)
    }
}
