import NIOCore
import Neffos

/// The fuzz targets of `neffos-fuzz`, by the name given in `NEFFOS_FUZZ_TARGET` (under
/// libFuzzer) or as the first argument (replaying inputs).
///
/// Each target takes one input of arbitrary bytes. Bad input must be refused cleanly; a check
/// that fails traps, and for the fuzzer a trap (or a leak, or a hang) is a finding.
enum FuzzTarget: String, CaseIterable, Sendable {
    /// `MessageCodec.decode` on any bytes, as text and binary, with and without native
    /// messages; what decodes must encode and decode back to the same message.
    case codec
    /// The cluster envelope decoder; what decodes must encode and decode back to the same
    /// envelope.
    case envelope
    /// Exchange URLs (`ExchangeURL`) and configuration values (`ConfigParsing`).
    case url
    /// Raw bytes from a client into a server-side WebSocket connection: the listener's
    /// pipeline after the upgrade, on a test channel, with a server answering asks and
    /// broadcasting.
    case frames

    /// The environment variable that selects the target under libFuzzer.
    static let environmentVariable = "NEFFOS_FUZZ_TARGET"

    /// Runs one input through the target.
    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .codec: CodecFuzzing.check(ByteBuffer(bytes: bytes))
        case .envelope: EnvelopeFuzzing.check(ByteBuffer(bytes: bytes))
        case .url: URLFuzzing.check(bytes)
        case .frames: FrameFuzzing.check(Array(bytes))
        }
    }
}

/// Traps with `message` when `condition` is false: a failed check, a finding for the fuzzer.
/// Unlike `precondition`, it says why in optimized builds too (scripts/fuzz builds them).
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}
