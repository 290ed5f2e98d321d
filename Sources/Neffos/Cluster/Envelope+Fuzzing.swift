import NIOCore

/// The envelope decoder's entry point for the fuzzer (`neffos-fuzz envelope`): envelopes stay
/// internal to the core, so the checks that need them live here, next to them.
package enum EnvelopeFuzzing {
    /// Decodes `bytes` as an envelope received from another node. Anything malformed must be
    /// refused (`nil`), never trap; an envelope that decodes must encode again, and decoding
    /// that encoding must give the same envelope (every field, the frame byte for byte).
    ///
    /// Traps when a check fails: for the fuzzer, that is a finding.
    package static func check(_ bytes: ByteBuffer) {
        guard let envelope = Envelope(decoding: bytes) else { return }
        // Decoded strings are at most 65,535 bytes each on the wire, but a string that was not
        // UTF-8 is repaired (each bad byte becomes U+FFFD, 3 bytes), so it may no longer fit.
        guard let encoded = envelope.encoded() else {
            let lengths = ([envelope.origin, envelope.target.namespace, envelope.target.room, envelope.target.to,
                            envelope.target.except ?? "", envelope.token] + envelope.traceContext.flatMap { [$0.key, $0.value] }).map(\.utf8.count)
            require(lengths.contains { $0 > Int(UInt16.max) }, "a decoded envelope does not encode: \(envelope)")
            return
        }
        guard let again = Envelope(decoding: encoded) else {
            fatalError("an envelope's encoding does not decode: \(envelope)")
        }
        require(again == envelope, "an envelope does not survive encoding: \(envelope) became \(again)")
        require(again.encoded() == encoded, "an envelope's encoding is not stable: \(envelope)")
    }

    /// Valid envelopes of every kind, encoded: the seeds of the fuzzer's corpus
    /// (`neffos-fuzz seeds envelope DIRECTORY` writes them), so that they follow the format
    /// when it changes.
    package static var samples: [(name: String, bytes: ByteBuffer)] {
        let envelopes: [(String, Envelope)] = [
            ("broadcast", Envelope(
                kind: .broadcast, binary: false, incarnation: 1, sequence: 1, origin: "node-a",
                target: BroadcastTarget(namespace: "default"), frame: ByteBuffer(string: ";default;;chat;0;0;hello"))),
            ("broadcast-room-except", Envelope(
                kind: .broadcast, binary: false, incarnation: 0x0123_4567_89AB_CDEF, sequence: 42, origin: "node-a",
                target: BroadcastTarget(namespace: "default", room: "room1", except: "conn-1"),
                frame: ByteBuffer(string: ";default;room1;chat;0;0;in room"))),
            ("broadcast-to-binary", Envelope(
                kind: .broadcast, binary: true, incarnation: 7, sequence: .max, origin: "n",
                target: BroadcastTarget(namespace: "n;s", room: "r.*>", to: "id"), frame: ByteBuffer(bytes: [0, 1, 2, 0xFF]))),
            ("ask", Envelope(
                kind: .ask, binary: false, incarnation: 42, sequence: 7, origin: "node a",
                target: BroadcastTarget(namespace: "default", to: "conn-2"), token: "123",
                deadline: 1_732_200_000_000_000_000, frame: ByteBuffer(string: "123;default;;question;0;0;sure?"))),
            ("reply", Envelope(
                kind: .reply, binary: false, incarnation: 3, sequence: 9, origin: "node-b",
                target: BroadcastTarget(namespace: "default"), token: "123",
                frame: ByteBuffer(string: "123;default;;question;0;0;yes"))),
            ("empty", Envelope(kind: .broadcast, binary: false, incarnation: 0, sequence: 0, origin: "", frame: ByteBuffer())),
            ("traced", {
                var envelope = Envelope(
                    kind: .ask, binary: false, incarnation: 5, sequence: 2, origin: "node-a",
                    target: BroadcastTarget(namespace: "default", to: "conn-3"), token: "77",
                    deadline: 1_732_200_000_000_000_000, frame: ByteBuffer(string: "77;default;;question;0;0;traced?"))
                envelope.traceContext = ["traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "neffos=1"]
                return envelope
            }()),
        ]
        return envelopes.compactMap { name, envelope in envelope.encoded().map { (name, $0) } }
    }

    /// Traps with `message` when `condition` is false (in optimized builds too, unlike
    /// `precondition`, whose message they drop).
    private static func require(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError(message()) }
    }
}
