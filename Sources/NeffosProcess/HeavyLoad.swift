/// Work that loads the whole machine (a benchmark run, a flood of hostile frames, a cluster
/// of servers churning) takes turns with other such work in this process.
///
/// The tests run in parallel, and on a 2-core machine two loads at once starve every other
/// test of CPU past its deadlines (the suite failed that way once: frames 5 s late). Tests
/// that generate load hold this while they do; everything else runs beside them as before.
public actor HeavyLoad {
    /// The one gate of the process.
    public static let gate = HeavyLoad()

    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    /// Runs `body` once no other heavy work runs, then lets the next one in (first come,
    /// first served).
    public static func run<T>(_ body: () async throws -> T) async rethrows -> T {
        await gate.acquire()
        do {
            let result = try await body()
            await gate.release()
            return result
        } catch {
            await gate.release()
            throw error
        }
    }

    private func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    private func release() {
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
