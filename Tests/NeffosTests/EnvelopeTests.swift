import NIOCore
import Testing

@testable import Neffos

@Suite("Envelopes and de-duplication")
struct EnvelopeTests {
    @Test("an envelope round-trips every field, the binary flag and the frame")
    func roundTrip() throws {
        let envelope = Envelope(
            kind: .ask, binary: true, incarnation: 42, sequence: 7, origin: "node a",
            target: BroadcastTarget(namespace: "n;s", room: "r.*>", to: "id", except: "other"), token: "123", deadline: 99,
            frame: ByteBuffer(bytes: [0, 1, 2, 0xFF]))
        let payload = try #require(envelope.encoded())
        #expect(Envelope(decoding: payload) == envelope)
    }

    @Test("a malformed or truncated envelope decodes to nil, never a trap")
    func malformed() throws {
        let payload = try #require(Envelope(kind: .broadcast, binary: false, incarnation: 1, sequence: 1, origin: "a", frame: ByteBuffer(string: "x")).encoded())
        // Everything but the one-byte frame is header: every shorter prefix is malformed.
        for length in 0..<(payload.readableBytes - 1) {
            #expect(Envelope(decoding: payload.getSlice(at: 0, length: length)!) == nil, "prefix of \(length) bytes")
        }
        var wrongVersion = payload
        wrongVersion.setInteger(UInt8(1), at: 0)
        #expect(Envelope(decoding: wrongVersion) == nil)
        var wrongKind = payload
        wrongKind.setInteger(UInt8(9), at: 1)
        #expect(Envelope(decoding: wrongKind) == nil)
    }

    @Test("a sequence is accepted once per publisher; a restarted publisher starts afresh")
    func dedup() {
        var windows = DedupWindows()
        func first(_ sequence: UInt64, _ node: String, _ incarnation: UInt64) -> Bool {
            windows.insert(sequence, from: DedupWindows.Publisher(node: node, incarnation: incarnation))
        }
        #expect(first(1, "a", 1))
        #expect(first(2, "a", 1))
        #expect(!first(1, "a", 1), "a duplicate")
        #expect(first(1, "b", 1), "another node")
        // Node a restarts under the same name: its sequence begins at 1 again.
        #expect(first(1, "a", 2))
    }

    @Test("out-of-order sequences within the window are accepted once; far older ones are refused")
    func window() {
        var window = DedupWindow()
        func first(_ sequence: UInt64) -> Bool { window.insert(sequence) }
        #expect(first(10))
        #expect(first(5))
        #expect(!first(5))
        #expect(first(10_000))
        #expect(!first(6), "older than the window: cannot tell, refused")
    }

    @Test("publishers not heard from for longest are forgotten past the capacity")
    func capacity() {
        var windows = DedupWindows()
        func first(_ node: Int) -> Bool { windows.insert(1, from: DedupWindows.Publisher(node: "n\(node)", incarnation: 1)) }
        for node in 0..<(DedupWindows.capacity + 10) {
            #expect(first(node))
        }
        #expect(windows.count == DedupWindows.capacity)
        #expect(!first(DedupWindows.capacity + 9), "the most recent publisher is remembered")
        #expect(first(0), "the oldest was forgotten")
    }
}

@Suite("Loss detection: numbered streams")
struct StreamGapTests {
    @Test("a publisher numbers each subject on its own, and starts a new epoch past its capacity")
    func publishing() {
        var streams = PublishedStreams()
        #expect(streams.next(on: "a") == (0, 1))
        #expect(streams.next(on: "a") == (0, 2))
        #expect(streams.next(on: "b") == (0, 1))
        for index in 2..<PublishedStreams.capacity { _ = streams.next(on: "s\(index)") }
        #expect(streams.next(on: "a") == (0, 3), "a known subject goes on")
        #expect(streams.next(on: "new") == (1, 1), "a new one past the capacity forgets them all")
        #expect(streams.next(on: "a") == (1, 1))
    }

    @Test("a receiver counts the gaps of each stream; late ones, new incarnations and epochs and forgotten subjects count nothing")
    func receiving() {
        var streams = ReceivedStreams()
        func record(_ sequence: UInt64, from origin: String = "n1", on subject: String = "s", incarnation: UInt64 = 7, epoch: UInt32 = 0) -> Int {
            streams.record(subject: subject, origin: origin, incarnation: incarnation, epoch: epoch, sequence: sequence)
        }
        #expect(record(3) == 0, "the first seen starts the count")
        #expect(record(4) == 0)
        #expect(record(7) == 2, "5 and 6 never came")
        #expect(record(5) == 0, "late: not a gap again")
        #expect(record(8, from: "n2") == 0, "another publisher has its own count")
        #expect(record(9, on: "other") == 0, "so does another subject")
        #expect(record(1, incarnation: 8) == 0, "a restarted publisher starts afresh")
        #expect(record(2, incarnation: 8, epoch: 1) == 0, "so does a new epoch")
        #expect(record(4, incarnation: 8, epoch: 1) == 1)
        streams.forget("s")
        #expect(record(40, incarnation: 8, epoch: 1) == 0, "what came while unsubscribed is not lost")
        #expect(record(0) == 0, "0: not counted")
    }
}
