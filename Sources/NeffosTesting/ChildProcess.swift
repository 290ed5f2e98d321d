import Foundation
import Neffos
import Synchronization

/// A program a test starts, watches and stops by PID: its output is captured, and the test
/// waits for a line (with a deadline) instead of sleeping.
///
/// ```swift
/// let chat = try ChildProcess.start("/path/to/neffos-chat", ["--port", "0"], environment: ["NEFFOS_EXCHANGE": "memory://"])
/// let line = try await chat.waitForOutput(containing: "chat page on")
/// chat.terminate()
/// let status = try await chat.waitForExit()
/// ```
public final class ChildProcess: Sendable {
    private let process: Process
    private let output = Locked<(text: String, waiters: [UInt64: (Needle, CheckedContinuation<String, any Error>)], next: UInt64, exited: Bool)>(("", [:], 0, false))

    /// What a waiter looks for: `count` lines containing `text`.
    private struct Needle: Sendable {
        let text: String
        let count: Int
    }
    private let exit = Locked<(status: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))

    /// The process ID.
    public var pid: Int32 { process.processIdentifier }

    /// Everything it wrote to standard output and standard error so far.
    public var text: String { output.withLock { $0.text } }

    private init(process: Process) { self.process = process }

    /// Starts `executable` with `arguments`; `environment` is added to the current one.
    ///
    /// - Throws: when the executable cannot be run.
    public static func start(_ executable: String, _ arguments: [String] = [], environment: [String: String] = [:]) throws -> ChildProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        let child = ChildProcess(process: process)
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                child.closeOutput()
            } else {
                child.append(String(decoding: data, as: UTF8.self))
            }
        }
        process.terminationHandler = { process in
            child.exited(process.terminationStatus)
        }
        try process.run()
        return child
    }

    private func append(_ chunk: String) {
        let ready = output.withLock { state -> [(CheckedContinuation<String, any Error>, String)] in
            state.text += chunk
            var ready: [(CheckedContinuation<String, any Error>, String)] = []
            for (id, (needle, continuation)) in state.waiters {
                if let line = Self.line(containing: needle.text, count: needle.count, in: state.text) {
                    ready.append((continuation, line))
                    state.waiters[id] = nil
                }
            }
            return ready
        }
        for (continuation, line) in ready { continuation.resume(returning: line) }
    }

    private func closeOutput() {
        let waiters = output.withLock { state in
            state.exited = true
            defer { state.waiters = [:] }
            return state.waiters.values.map { $0 }
        }
        for (needle, continuation) in waiters {
            continuation.resume(throwing: RawWebSocketError(description: "the process ended before writing \"\(needle.text)\""))
        }
    }

    private func exited(_ status: Int32) {
        let waiters = exit.withLock { state in
            state.status = status
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: status) }
    }

    /// The `count`-th line of `text` containing `needle`, if there are that many.
    private static func line(containing needle: String, count: Int = 1, in text: String) -> String? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).filter { $0.contains(needle) }
        return lines.count >= count ? String(lines[count - 1]) : nil
    }

    /// Waits until a line of output contains `needle`, and returns that line.
    public func waitForOutput(containing needle: String, timeout: Duration = .seconds(10)) async throws -> String {
        try await waitForOutput(containing: needle, count: 1, timeout: timeout)
    }

    /// Waits until `count` lines of output contain `needle`, and returns the last of them.
    public func waitForOutput(containing needle: String, count: Int, timeout: Duration = .seconds(10)) async throws -> String {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
            enum Step { case found(String), ended, wait(UInt64) }
            let step = output.withLock { state -> Step in
                if let line = Self.line(containing: needle, count: count, in: state.text) { return .found(line) }
                if state.exited { return .ended }
                let id = state.next
                state.next += 1
                state.waiters[id] = (Needle(text: needle, count: count), continuation)
                return .wait(id)
            }
            switch step {
            case .found(let line): continuation.resume(returning: line)
            case .ended: continuation.resume(throwing: RawWebSocketError(description: "the process ended before writing \"\(needle)\"; it wrote: \(text.suffix(2000))"))
            case .wait(let id):
                Task {
                    try? await Task.sleep(for: timeout)
                    let waiter = self.output.withLock { $0.waiters.removeValue(forKey: id) }
                    waiter?.1.resume(throwing: RawWebSocketError.timedOut("\"\(needle)\" in the output; it wrote: \(self.text.suffix(2000))"))
                }
            }
        }
    }

    /// Sends `signal` (SIGTERM by default) to the process.
    public func terminate(signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit, up to `timeout`; kills it (SIGKILL) if it does not.
    /// Returns its exit status.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(10)) async -> Int32 {
        let status = await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            let done = exit.withLock { state -> Int32? in
                if let status = state.status { return status }
                state.waiters.append(continuation)
                return nil
            }
            if let done {
                continuation.resume(returning: done)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            }
        }
        return status
    }
}
