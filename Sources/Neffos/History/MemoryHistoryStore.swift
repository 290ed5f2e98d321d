import DequeModule
import Foundation
import NIOCore

/// Keeps rooms' histories in this process's memory: per node, gone when it stops.
///
/// Each room keeps at most its ``HistoryLimits`` (count and age); the store as a whole keeps
/// at most `maxStreams` rooms and `maxBytes` of frames: past either, the room written to
/// longest ago loses its whole history (counted in ``HistoryUsage/evictedStreams``). The epoch
/// is random per store, so positions from before a restart are recognised as stale.
public final class MemoryHistoryStore: HistoryStore {
    private struct Kept {
        var position: UInt64
        var frame: ByteBuffer
        var isBinary: Bool
        var time: ContinuousClock.Instant
    }

    private struct Stream {
        /// The stream's epoch: the store's, and which incarnation of the stream in it (a room
        /// evicted and written again starts over at offset 1, in a new epoch).
        let epoch: String
        var limits: HistoryLimits
        var entries = Deque<Kept>()
        /// The offset of the newest message appended (0: none yet).
        var last: UInt64 = 0
        var bytes = 0
        /// When the stream was last written (or made), for eviction.
        var touched: UInt64 = 0
    }

    private struct State {
        var streams: [HistoryStream: Stream] = [:]
        var usage = HistoryUsage()
        var clock: UInt64 = 0
        var incarnations: UInt64 = 0
    }

    /// This store's part of every epoch: random, 12 hex digits, new per store (per process).
    public let epoch: String
    /// The most rooms kept at once. Default: 10,000.
    public let maxStreams: Int
    /// The most frame bytes kept over all rooms. Default: 64 MiB.
    public let maxBytes: Int
    private let state = Locked(State())

    /// A store keeping at most `maxStreams` rooms and `maxBytes` of frames.
    ///
    /// - Precondition: both at least 1.
    public init(maxStreams: Int = 10_000, maxBytes: Int = 64 << 20) {
        precondition(maxStreams >= 1 && maxBytes >= 1, "MemoryHistoryStore bounds must be at least 1")
        self.maxStreams = maxStreams
        self.maxBytes = maxBytes
        epoch = String(UInt64.random(in: 0..<(1 << 48)), radix: 16)
    }

    public func append(_ frame: ByteBuffer, isBinary: Bool, to stream: HistoryStream, limits: HistoryLimits) -> HistoryPosition {
        let now = ContinuousClock.now
        return state.withLock { state in
            state.clock += 1
            if state.streams[stream] == nil { Self.create(&state, stream, limits: limits, epoch: epoch, maxStreams: maxStreams) }
            state.streams[stream]!.limits = limits
            let offset = state.streams[stream]!.last + 1
            state.streams[stream]!.last = offset
            state.streams[stream]!.touched = state.clock
            state.streams[stream]!.entries.append(Kept(position: offset, frame: frame, isBinary: isBinary, time: now))
            state.streams[stream]!.bytes += frame.readableBytes
            state.usage.entries += 1
            state.usage.bytes += frame.readableBytes
            Self.trim(&state, stream, limits: limits, now: now)
            while state.usage.bytes > maxBytes, state.streams.count > 1 { Self.evictOldest(&state, sparing: stream) }
            return HistoryPosition(epoch: state.streams[stream]!.epoch, offset: offset)
        }
    }

    public func read(_ stream: HistoryStream, after position: HistoryPosition?, limit: Int) -> HistoryRead {
        let now = ContinuousClock.now
        return state.withLock { state in
            // A room read before anything was kept in it gets its epoch now, so that a position
            // taken at a join (offset 0) recovers the first messages. A read never evicts: with
            // the store full, the position it gives recovers nothing (only appends evict).
            if state.streams[stream] == nil {
                guard state.streams.count < maxStreams else {
                    return HistoryRead(entries: [], latest: HistoryPosition(epoch: "\(epoch)-none", offset: 0), isComplete: false)
                }
                Self.create(&state, stream, limits: HistoryLimits(), epoch: epoch, maxStreams: maxStreams)
            }
            Self.trim(&state, stream, limits: state.streams[stream]!.limits, now: now, keepingNewest: false)
            let kept = state.streams[stream]!
            let epoch = kept.epoch
            let latest = HistoryPosition(epoch: epoch, offset: kept.last)
            let from: UInt64 = position?.epoch == epoch ? min(position!.offset, kept.last) : 0
            let oldest = kept.entries.first?.position ?? kept.last + 1
            // Everything after `from` is kept when the oldest kept one directly follows it.
            var complete = position?.epoch == epoch && position!.offset <= kept.last && from + 1 >= oldest
            let start = kept.entries.firstIndex { $0.position > from } ?? kept.entries.endIndex
            var slice = kept.entries[start...]
            if slice.count > max(0, limit) {
                slice = slice.suffix(max(0, limit))
                complete = false
            }
            let entries = slice.map {
                HistoryEntry(position: HistoryPosition(epoch: epoch, offset: $0.position), frame: $0.frame, isBinary: $0.isBinary)
            }
            return HistoryRead(entries: entries, latest: latest, isComplete: complete)
        }
    }

    public func drop(_ stream: HistoryStream) {
        state.withLock { state in
            guard let kept = state.streams.removeValue(forKey: stream) else { return }
            state.usage.streams -= 1
            state.usage.entries -= kept.entries.count
            state.usage.bytes -= kept.bytes
        }
    }

    public var usage: HistoryUsage { state.withLock { $0.usage } }

    /// Drops what `limits` no longer allow from `stream` (on append, the newest message stays
    /// whatever its age).
    private static func trim(_ state: inout State, _ stream: HistoryStream, limits: HistoryLimits, now: ContinuousClock.Instant, keepingNewest: Bool = true) {
        while let first = state.streams[stream]?.entries.first, state.streams[stream]!.entries.count > (keepingNewest ? 1 : 0),
            state.streams[stream]!.entries.count > limits.maxCount || now - first.time > limits.maxAge
        {
            state.streams[stream]!.entries.removeFirst()
            state.streams[stream]!.bytes -= first.frame.readableBytes
            state.usage.entries -= 1
            state.usage.bytes -= first.frame.readableBytes
        }
    }

    private static func create(_ state: inout State, _ stream: HistoryStream, limits: HistoryLimits, epoch: String, maxStreams: Int) {
        if state.streams.count >= maxStreams { evictOldest(&state) }
        state.incarnations += 1
        state.clock += 1
        state.streams[stream] = Stream(epoch: "\(epoch)-\(String(state.incarnations, radix: 16))", limits: limits, touched: state.clock)
        state.usage.streams += 1
    }

    /// Drops the whole history of the room written to longest ago (O(rooms); only when a bound
    /// is reached).
    private static func evictOldest(_ state: inout State, sparing spared: HistoryStream? = nil) {
        guard let (victim, kept) = state.streams.filter({ $0.key != spared }).min(by: { $0.value.touched < $1.value.touched }) else { return }
        state.streams[victim] = nil
        state.usage.streams -= 1
        state.usage.entries -= kept.entries.count
        state.usage.bytes -= kept.bytes
        state.usage.evictedStreams += 1
    }
}
