import NeffosProcess
import Testing

/// A test that loads the whole machine: it runs only while no other such test runs
/// (``HeavyLoad``), in this target and the other test targets alike.
struct HeavyLoadTrait: TestTrait, SuiteTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        try await HeavyLoad.run { try await function() }
    }
}

extension Trait where Self == HeavyLoadTrait {
    /// The test (or every test of the suite) loads the whole machine: one such at a time.
    static var heavyLoad: Self { HeavyLoadTrait() }
}
