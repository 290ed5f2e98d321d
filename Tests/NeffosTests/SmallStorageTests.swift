import Testing
@testable import Neffos

/// The compact per-connection storage: ``SmallDictionary`` (namespaces) and ``Locked`` (one
/// allocation for the value and its mutex).
@Suite("Small per-connection storage")
struct SmallStorageTests {
    /// A deterministic generator, so that a failure replays.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("a small dictionary answers as a Dictionary does, over random inserts, in-place changes and removals")
    func matchesDictionary() {
        var random = SplitMix(state: 19)
        var small: SmallDictionary<Set<String>> = [:]
        var model: [String: Set<String>] = [:]
        let keys = ["", "a", "b", "chat", "game", "x"]
        for step in 0..<5_000 {
            let key = keys.randomElement(using: &random)!
            switch Int.random(in: 0..<5, using: &random) {
            case 0:
                small[key] = ["r\(step)"]
                model[key] = ["r\(step)"]
            case 1:
                // In place, through optional chaining, as a join does.
                let inserted = small[key]?.insert("s\(step % 7)").inserted
                #expect(inserted == model[key]?.insert("s\(step % 7)").inserted)
            case 2:
                #expect(small.removeValue(forKey: key) == model.removeValue(forKey: key))
            case 3:
                small[key] = nil
                model[key] = nil
            default:
                #expect(small[key] == model[key])
            }
            #expect(small.count == model.count && small.isEmpty == model.isEmpty)
        }
        #expect(Dictionary(uniqueKeysWithValues: small.map { ($0.key, $0.value) }) == model)
        #expect(small.keys.sorted() == model.keys.sorted())
        #expect(small.values.reduce(0) { $0 + $1.count } == model.values.reduce(0) { $0 + $1.count })
    }

    @Test("one entry lives inline; a second spills; emptied, it is empty")
    func spill() {
        var small: SmallDictionary<Int> = ["one": 1]
        small["two"] = 2
        small["one", default: 0] += 10
        #expect(small["one"] == 11 && small["two"] == 2 && small.count == 2)
        small["one"] = nil
        small["three"] = 3
        #expect(small.keys.sorted() == ["three", "two"])
        small = [:]
        #expect(small.isEmpty && small.count == 0 && small["two"] == nil)
    }

    @Test("a small set answers as a Set does, over random inserts and removals")
    func matchesSet() {
        var random = SplitMix(state: 7)
        var small: SmallSet<String> = []
        var model: Set<String> = []
        for _ in 0..<5_000 {
            let room = ["lobby", "a", "b", "game-1", "x"].randomElement(using: &random)!
            if Bool.random(using: &random) {
                #expect(small.insert(room).inserted == model.insert(room).inserted)
            } else {
                #expect(small.remove(room) == model.remove(room))
            }
            #expect(small.count == model.count && small.isEmpty == model.isEmpty)
            #expect(small.contains(room) == model.contains(room))
            #expect(small.asSet == model && Set(small) == model && small.sorted() == model.sorted())
        }
    }

    @Test("a locked value is shared by its copies and changed under the lock from many tasks")
    func locked() async {
        let counter = Locked(0)
        let copy = counter
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<1_000 { copy.withLock { $0 += 1 } } }
            }
        }
        #expect(counter.withLock { $0 } == 8_000)
    }
}

extension SmallDictionary {
    subscript(key: String, default value: @autoclosure () -> Value) -> Value {
        get { self[key] ?? value() }
        set { self[key] = newValue }
    }
}
