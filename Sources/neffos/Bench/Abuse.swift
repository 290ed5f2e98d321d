import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket
import Neffos
import NeffosNIO
import Synchronization

/// The hostile cases `neffos bench abuse` runs, each against a server that a healthy client
/// keeps asking throughout (the numbers are issue 14's defects).
enum AbuseCase: Int, CaseIterable, Sendable {
    case framesBeforeHandshake = 1
    case roomsAndNames = 2
    case pingFlood = 3
    case slowAndIdle = 4
    case connectionFlood = 5
    case invalidUTF8 = 6
    case roomJoins = 7
    case closeWithoutReading = 8

    var name: String {
        switch self {
        case .framesBeforeHandshake: "frames-before-handshake"
        case .roomsAndNames: "rooms-and-names"
        case .pingFlood: "ping-flood"
        case .slowAndIdle: "slowloris-and-idle"
        case .connectionFlood: "connection-flood"
        case .invalidUTF8: "invalid-utf8"
        case .roomJoins: "room-joins"
        case .closeWithoutReading: "close-without-reading"
        }
    }

    /// Hostile connections by default.
    var defaultAttackers: Int {
        switch self {
        case .framesBeforeHandshake, .pingFlood, .closeWithoutReading: 3
        case .roomsAndNames, .invalidUTF8: 2
        case .slowAndIdle: 400
        case .connectionFlood: 10_100
        case .roomJoins: 45
        }
    }
}

/// Samples a process's resident memory and CPU time.
struct ProcessSample {
    let residentBytes: Int
    let cpuSeconds: Double

    /// Open file descriptors (sockets included).
    let openFiles: Int

    init?(pid: Int32) {
        guard let resident = BenchProcesses.residentBytes(of: pid),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        residentBytes = resident
        cpuSeconds = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        openFiles = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }
}

extension BenchRunner {
    /// Runs one hostile case for `duration` against the server (PID `pid`) while a healthy
    /// client keeps one `echo` ask in flight; reports the server's memory and CPU, the
    /// healthy client's asks and failures, and what happened to the attackers.
    func abuse(_ url: WebSocketURL, server: String, pid: Int32, case abuse: AbuseCase, attackers: Int, duration: Duration) async throws -> BenchResult {
        let (healthy, _) = try await connect(1) { _ in (url, [], .asker(inflight: 1)) }
        defer { for connection in healthy { connection.close() } }
        guard let start = ProcessSample(pid: pid) else { throw ToolError("cannot read /proc/\(pid)") }
        let peak = Atomic<Int>(start.residentBytes)
        let peers = Locked<[RawPeer]>([])
        let sampling = Task {
            while !Task.isCancelled {
                if let sample = ProcessSample(pid: pid) { peak.max(sample.residentBytes, ordering: .relaxed) }
                for peer in peers.withLock({ $0 }) where peer.stoppedReading { await peer.pollServerClose() }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let notes = Locked<[String: String]>([:])
        // The attackers get event loops of their own: the healthy client's latency then says
        // how the server treats it, not how busy the generator's loops are.
        let attackLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { attackLoops.shutdownGracefully { _ in } }
        let attack = Task {
            do {
                try await Self.attack(abuse, url: url, count: attackers, group: attackLoops, peers: peers, notes: notes)
            } catch is CancellationError {
            } catch {
                notes.withLock { $0["attackError"] = "\(error)" }
            }
        }
        let (end, drained, _) = try await run(abuse.name, active: healthy, duration: duration)
        attack.cancel()
        sampling.cancel()
        _ = await attack.value
        guard let finish = ProcessSample(pid: pid) else { throw ToolError("the server (pid \(pid)) is gone: it crashed") }
        let all = peers.withLock { $0 }
        // (Attackers that stopped reading were watched through TCP_INFO.)
        for peer in all where peer.stoppedReading { await peer.pollServerClose() }
        let closed = all.filter { $0.secondsToClose != nil }.count
        let closeTimes = all.compactMap(\.secondsToClose).sorted()
        for peer in all { peer.channel.close(promise: nil) }
        var result = BenchResult(
            scenario: "abuse \(abuse.rawValue) \(abuse.name)", server: server, clients: all.count + 1, seconds: duration.seconds,
            operations: end.received, perSecond: Double(end.received) / duration.seconds,
            p50Milliseconds: 0, p99Milliseconds: 0, p999Milliseconds: 0, maxMilliseconds: 0,
            errors: drained.errors, drops: max(0, drained.sent - drained.received))
        result.latency(drained.latency)
        let mib = { (bytes: Int) in String(format: "%.1f", Double(bytes) / 1_048_576) }
        result.notes["rssStartMiB"] = mib(start.residentBytes)
        result.notes["rssPeakMiB"] = mib(peak.load(ordering: .relaxed))
        result.notes["rssEndMiB"] = mib(finish.residentBytes)
        result.notes["serverCPUSeconds"] = String(format: "%.2f", finish.cpuSeconds - start.cpuSeconds)
        result.notes["serverOpenFiles(start/end)"] = "\(start.openFiles)/\(finish.openFiles)"
        result.notes["attackersClosedByServer"] = "\(closed)/\(all.count)"
        if !closeTimes.isEmpty {
            result.notes["secondsToClose(min)"] = String(format: "%.2f", closeTimes[0])
            result.notes["secondsToClose(median)"] = String(format: "%.2f", closeTimes[closeTimes.count / 2])
            result.notes["secondsToClose(max)"] = String(format: "%.2f", closeTimes.last!)
        }
        for (key, value) in notes.withLock({ $0 }) { result.notes[key] = value }
        return result
    }

    /// Opens the attackers of `abuse` and plays their part until cancelled.
    private static func attack(
        _ abuse: AbuseCase, url: WebSocketURL, count: Int, group: any EventLoopGroup,
        peers: Locked<[RawPeer]>, notes: Locked<[String: String]>
    ) async throws {
        @Sendable func open(_ index: Int = 0, namespace: String? = nil, handshake: Bool = true) async throws -> RawPeer {
            let peer = try await RawPeer.connect(url, group: group, source: index)
            peers.withLock { $0.append(peer) }
            if handshake { try await peer.open(url, namespace: namespace) }
            return peer
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            switch abuse {
            case .framesBeforeHandshake:
                // Defect 1: 64 KiB frames before `M`, up to 64 MiB each.
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open(handshake: false)
                        try await peer.send(RawPeer.upgradeRequest(url))
                        try await peer.wait(for: "\r\n\r\n")
                        let chunk = RawPeer.frame(.text, String(repeating: "x", count: 65_536))
                        for _ in 0..<1024 where peer.secondsToClose == nil { try? await peer.send(chunk) }
                    }
                }
            case .roomsAndNames:
                // Defect 2: long room names, then more rooms than a connection may hold.
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open(namespace: "bench")
                        let long = String(repeating: "n", count: 100_000)
                        for index in 0..<200 where peer.secondsToClose == nil { try? await peer.send(RawPeer.frame(.text, "$j;bench;\(index)\(long);_OnRoomJoin;0;0;")) }
                        for index in 0..<100_000 where peer.secondsToClose == nil && !Task.isCancelled {
                            try? await peer.send(RawPeer.frame(.text, "$j;bench;r\(index);_OnRoomJoin;0;0;"))
                        }
                    }
                }
            case .pingFlood:
                // Defect 3: pings as fast as the socket takes them, never reading a pong.
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open()
                        try await peer.stopReading()
                        let ping = RawPeer.frame(.ping, String(repeating: "p", count: 125))
                        var batch = ByteBuffer()
                        for _ in 0..<64 { batch.writeImmutableBuffer(ping) }
                        while !Task.isCancelled && peer.secondsToClose == nil { try? await peer.send(batch) }
                    }
                }
            case .slowAndIdle:
                // Defect 4: half send a request one byte a second (slow loris), half send nothing.
                for index in 0..<count {
                    tasks.addTask {
                        let peer = try await open(index, handshake: false)
                        guard index % 2 == 0 else { return }
                        for byte in "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8 + Array(repeating: UInt8(ascii: "a"), count: 1000) {
                            guard peer.secondsToClose == nil, !Task.isCancelled else { return }
                            try? await peer.send(ByteBuffer(bytes: [byte]))
                            try await Task.sleep(for: .seconds(1))
                        }
                    }
                }
            case .connectionFlood:
                // Defect 5: more idle sockets than the server may hold (or has descriptors for).
                var opened = 0
                for index in 0..<count {
                    if (try? await open(index, handshake: false)) != nil { opened += 1 }
                }
                try await Task.sleep(for: .seconds(2))
                let refused = peers.withLock { $0 }.filter { $0.receivedText.hasPrefix("HTTP/1.1 503") }.count
                notes.withLock {
                    $0["socketsOpened"] = "\(opened)"
                    $0["answered503"] = "\(refused)"
                }
            case .invalidUTF8:
                // Defect 6: a broadcast that is not UTF-8, for every browser in the namespace.
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open(namespace: "bench")
                        var payload = ByteBuffer(string: ";bench;;broadcast;0;0;")
                        payload.writeBytes([0xC3, 0x28, 0xFF])
                        try await peer.send(RawPeer.frame(.text, payload))
                        try await peer.wait(for: "invalid UTF-8")
                    }
                }
            case .roomJoins:
                // Defect 7: rooms accumulate; joins must not slow down.
                let joined = Locked(0)
                let started = ContinuousClock.now
                let marks = Locked<[Double]>([])
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open(namespace: "bench")
                        let base = peer.emptyReplies
                        let prefix = UUID().uuidString.prefix(8)
                        // Batches of 20 joins, each sent at once, then waited for.
                        for batch in 0..<50 where !Task.isCancelled {
                            var frames = ByteBuffer()
                            for index in batch * 20..<(batch + 1) * 20 {
                                frames.writeImmutableBuffer(RawPeer.frame(.text, "$\(index);bench;r\(prefix)\(index);_OnRoomJoin;0;0;"))
                            }
                            try await peer.send(frames)
                            let expected = base + (batch + 1) * 20
                            let waitStart = ContinuousClock.now
                            while peer.emptyReplies < expected {
                                guard ContinuousClock.now - waitStart < .seconds(10), peer.secondsToClose == nil else {
                                    throw ToolError("join replies stopped at \(peer.emptyReplies - base)")
                                }
                                try await Task.sleep(for: .milliseconds(1))
                            }
                            let (before, after) = joined.withLock { total in
                                total += 20
                                return (total - 20, total)
                            }
                            if before / 5_000 != after / 5_000 { marks.withLock { $0.append((ContinuousClock.now - started).seconds) } }
                        }
                    }
                }
                try await tasks.waitForAll()
                let times = marks.withLock { $0 }
                let rates = zip([0] + times, times).map { 5_000 / ($1 - $0) }
                notes.withLock {
                    $0["roomsJoined"] = "\(joined.withLock { $0 })"
                    if let first = rates.first, let last = rates.last {
                        $0["joinsPerSecond(first 5k)"] = "\(Int(first))"
                        $0["joinsPerSecond(last 5k)"] = "\(Int(last))"
                    }
                }
            case .closeWithoutReading:
                // Defect 8: fill the outbox with replies, send a close frame, never read.
                for _ in 0..<count {
                    tasks.addTask {
                        let peer = try await open(namespace: "bench")
                        try await peer.stopReading()
                        // 6 MiB of replies: past what the kernel's socket buffers take, the
                        // server's outbox fills.
                        let body = String(repeating: "b", count: 128 * 1024)
                        for index in 0..<48 { try await peer.send(RawPeer.frame(.text, "$\(index);bench;;echo;0;0;\(body)")) }
                        try await peer.send(RawPeer.frame(.connectionClose, ByteBuffer(bytes: [0x03, 0xE8])))
                    }
                }
            }
            try await tasks.waitForAll()
        }
    }
}
