import NIOCore
import Testing

@testable import Neffos

@Suite("History store (memory)")
struct HistoryStoreTests {
    let lobby = HistoryStream(namespace: "default", room: "lobby")

    func append(_ store: MemoryHistoryStore, _ range: ClosedRange<Int>, to stream: HistoryStream? = nil, limits: HistoryLimits = HistoryLimits()) {
        for n in range { _ = store.append(ByteBuffer(string: ";default;lobby;tick;0;0;\(n)"), isBinary: false, to: stream ?? lobby, limits: limits) }
    }

    func bodies(_ read: HistoryRead) -> [String] { read.entries.compactMap { $0.message?.bodyString } }

    @Test("History: positions are contiguous per room; a read after a position is complete while nothing between was dropped")
    func positionsAndCompleteness() {
        let store = MemoryHistoryStore()
        append(store, 1...5, limits: HistoryLimits(maxCount: 3))
        let all = store.read(lobby, after: nil, limit: 100)
        #expect(bodies(all) == ["3", "4", "5"])
        #expect(all.entries.map(\.position.offset) == [3, 4, 5] && all.latest.offset == 5 && !all.isComplete)
        let epoch = all.latest.epoch
        #expect(store.read(lobby, after: HistoryPosition(epoch: epoch, offset: 2), limit: 100).isComplete, "3… is all kept")
        #expect(!store.read(lobby, after: HistoryPosition(epoch: epoch, offset: 1), limit: 100).isComplete, "2 was dropped")
        #expect(store.read(lobby, after: HistoryPosition(epoch: epoch, offset: 5), limit: 100).isComplete)
        #expect(!store.read(lobby, after: HistoryPosition(epoch: epoch, offset: 9), limit: 100).isComplete, "a position from the future")
        #expect(!store.read(lobby, after: HistoryPosition(epoch: "other", offset: 4), limit: 100).isComplete, "another epoch")
        #expect(bodies(store.read(lobby, after: HistoryPosition(epoch: "other", offset: 4), limit: 100)) == ["3", "4", "5"])
        #expect(store.usage.entries == 3 && store.usage.streams == 1)
    }

    @Test("History: messages older than the room's age bound are not read back; the newest stays on append")
    func ageBound() {
        let store = MemoryHistoryStore()
        append(store, 1...3, limits: HistoryLimits(maxCount: 100, maxAge: .nanoseconds(1)))
        #expect(store.usage.entries == 1, "each append keeps only the newest (the others are past 1 ns)")
        #expect(store.read(lobby, after: nil, limit: 10).entries.isEmpty, "and a read drops that one too")
        #expect(store.read(lobby, after: nil, limit: 10).latest.offset == 3, "positions go on")
    }

    @Test("History: past maxStreams or maxBytes the room written longest ago loses its history; its next message starts a new epoch")
    func storeBounds() {
        let store = MemoryHistoryStore(maxStreams: 2, maxBytes: 1 << 20)
        let (a, b, c) = (HistoryStream(namespace: "n", room: "a"), HistoryStream(namespace: "n", room: "b"), HistoryStream(namespace: "n", room: "c"))
        append(store, 1...2, to: a)
        let epochA = store.read(a, after: nil, limit: 1).latest.epoch
        append(store, 1...1, to: b)
        append(store, 1...1, to: c)
        #expect(store.usage.streams == 2 && store.usage.evictedStreams == 1)
        #expect(store.read(b, after: nil, limit: 10).entries.count == 1)
        append(store, 3...3, to: a)
        let again = store.read(a, after: HistoryPosition(epoch: epochA, offset: 2), limit: 10)
        #expect(again.latest.epoch != epochA && again.latest.offset == 1 && !again.isComplete, "a new incarnation")

        let small = MemoryHistoryStore(maxStreams: 100, maxBytes: 100)
        append(small, 1...3, to: a)  // ~25 bytes each
        append(small, 1...3, to: b)
        #expect(small.usage.bytes <= 100 && small.usage.evictedStreams >= 1, "\(small.usage)")

        let evicted = store.read(b, after: nil, limit: 10)
        #expect(evicted.entries.isEmpty && evicted.latest.epoch.hasSuffix("-none"), "b was written longest ago; a read of it evicts nothing")
        #expect(store.usage.streams == 2)
        store.drop(c)
        #expect(store.usage.streams == 1 && store.usage.entries == 1)
    }

    @Test("History: wire forms of positions, recovery requests and join replies")
    func wireForms() {
        #expect(HistoryPosition("a1-2:42") == HistoryPosition(epoch: "a1-2", offset: 42))
        #expect(HistoryPosition("a;b:1") == nil && HistoryPosition(":1") == nil && HistoryPosition("a:-1") == nil && HistoryPosition("a:x") == nil)
        #expect(HistoryPosition(Substring(String(repeating: "e", count: 65) + ":1")) == nil, "epochs are bounded")
        #expect(RecoveryWire.recoveryRequest(in: ByteBuffer(string: "hello")) == nil, "an app's body")
        #expect(RecoveryWire.recoveryRequest(in: ByteBuffer(string: "~e:3")) == .some(HistoryPosition(epoch: "e", offset: 3)))
        #expect(RecoveryWire.recoveryRequest(in: ByteBuffer(string: "~")) == .some(nil))
        #expect(RecoveryWire.recoveryRequest(in: ByteBuffer(string: "~" + String(repeating: "9", count: 200))) == nil, "too long to be ours")
        let reply = RecoveryWire.joinReply(.recovered, count: 3, latest: HistoryPosition(epoch: "e", offset: 9))
        #expect(String(buffer: reply) == "~1 3 e:9")
        #expect(RecoveryWire.parseJoinReply(reply)?.count == 3)
        #expect(RecoveryWire.parseJoinReply(ByteBuffer(string: "~1 x e:9")) == nil && RecoveryWire.parseJoinReply(ByteBuffer()) == nil)
        #expect(String(buffer: RecoveryWire.positioned(ByteBuffer(string: ";n;r;e;0;0;b"), at: HistoryPosition(epoch: "e", offset: 1))) == "~e:1;n;r;e;0;0;b")
    }
}
