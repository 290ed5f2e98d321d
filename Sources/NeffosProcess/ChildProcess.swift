#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Neffos
import Synchronization

/// A program a test starts, watches and stops by PID: its output is captured, and the test
/// waits for a line (with a deadline) instead of sleeping.
///
/// ```swift
/// let chat = try ChildProcess.start("/path/to/neffos-chat", ["--port", "0"], environment: ["NEFFOS_EXCHANGE_URL": "memory://"])
/// let line = try await chat.waitForOutput(containing: "chat page on")
/// chat.terminate()
/// let status = try await chat.waitForExit()
/// ```
///
/// It is started with `posix_spawn` and watched by two plain threads (one reads its output,
/// one waits for its exit), not with Foundation's `Process`, whose dispatch sources crashed
/// the test process on Linux when pipes closed while many children ran at once.
public final class ChildProcess: Sendable {
    /// The process ID.
    public let pid: Int32
    /// What it wrote so far, and whether its output ended.
    private let output = Watched<(text: String, ended: Bool)>(("", false))
    private let exit = Locked<(status: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))
    /// Set when the output ended (every writer closed it).
    private let outputEnd = OnceFlag()

    /// Everything it wrote to standard output and standard error so far.
    public var text: String { output.read { $0.text } }

    /// Whether it has not exited yet (as far as its exit watcher knows).
    public var isRunning: Bool { exit.withLock { $0.status == nil } }

    private init(pid: Int32) { self.pid = pid }

    /// The path of executable `name` built next to the running program (a test bundle, or the
    /// `neffos` tool), as SwiftPM puts every product of a package in one folder.
    ///
    /// - Throws: when it is not there, saying how to build it.
    public static func sibling(_ name: String) throws -> String {
        let running = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let path = URL(fileURLWithPath: running).deletingLastPathComponent().appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ProcessError(description: "\(name) is not built at \(path): run `swift build` (with `--traits NATS` for the NATS exchange) first")
        }
        return path
    }

    /// Starts `executable` with `arguments`; `environment` is added to the current one.
    /// Standard output and standard error are captured together; standard input is
    /// `/dev/null`.
    ///
    /// - Parameter ownProcessGroup: starts it in a process group of its own, so that a Ctrl-C
    ///   in the terminal reaches only this process, which then stops it as it sees fit.
    /// - Throws: when the executable cannot be run (with the system's reason).
    public static func start(
        _ executable: String, _ arguments: [String] = [], environment: [String: String] = [:], ownProcessGroup: Bool = false
    ) throws -> ChildProcess {
        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let (pid, readEnd) = try { () throws -> (pid_t, Int32) in
            // Another child started at this moment could inherit this pipe before its ends are
            // marked close-on-exec (its output would then never end): every child closes all
            // but its 0, 1 and 2 before it runs (closeOtherDescriptors).
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else {
                throw ProcessError(description: "cannot start \(executable): pipe: \(String(cString: strerror(errno)))")
            }
            let (readEnd, writeEnd) = (fds[0], fds[1])
            _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            // dup2 clears close-on-exec on the copies: the child keeps only its 0, 1 and 2.
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
            // Nothing else: a listening socket of this process inherited by a child would keep
            // its port open after the listener closed.
            closeOtherDescriptors(&actions)
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            if ownProcessGroup {
                posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
                posix_spawnattr_setpgroup(&attributes, 0)
            }
            var pid: pid_t = 0
            let status = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
            close(writeEnd)
            guard status == 0 else {
                close(readEnd)
                throw ProcessError(description: "cannot start \(executable): \(String(cString: strerror(status)))")
            }
            return (pid, readEnd)
        }()
        let child = ChildProcess(pid: pid)
        _ = killChildrenAtExit
        runningChildren.withLock { $0[pid] = child }
        Thread.detachNewThread { child.readOutput(from: readEnd) }
        Thread.detachNewThread { child.waitForTermination() }
        return child
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module
    /// does not import.
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    /// Adds to `actions` the closing of every descriptor above 2 in the child.
    private static func closeOtherDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom = Self.addCloseFrom, addCloseFrom(&actions, 3) == 0 { return }
        // Older C libraries: close what is open now.
        guard let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in open.compactMap(Int32.init) where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
    }

    /// Runs `executable` to its end (killed after `timeout`) and returns its exit status and
    /// everything it wrote.
    public static func run(
        _ executable: String, _ arguments: [String] = [], environment: [String: String] = [:], timeout: Duration = .seconds(60)
    ) async throws -> (status: Int32, output: String) {
        let process = try start(executable, arguments, environment: environment)
        let status = await process.waitForExit(timeout: timeout)
        return (status, process.text)
    }

    /// On its own thread: reads the output until the child (and its children) closed it.
    private func readOutput(from fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                append(String(decoding: buffer[0..<count], as: UTF8.self))
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        close(fd)
        closeOutput()
    }

    /// On its own thread: waits for the exit; the status is the exit code, or 128 + the
    /// signal that ended it.
    private func waitForTermination() {
        // Wait without reaping, then reap and record under the lock that `terminate` takes:
        // a signal is never sent to a PID that was reaped (and may have been reused).
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let waiters = exit.withLock { state -> [CheckedContinuation<Int32, Never>] in
            var status: Int32 = 0
            var reaped = waitpid(pid, &status, 0)
            while reaped < 0 && errno == EINTR { reaped = waitpid(pid, &status, 0) }
            let signal = status & 0x7F
            state.status = reaped < 0 ? -1 : (signal == 0 ? (status >> 8) & 0xFF : 128 + signal)
            defer { state.waiters = [] }
            return state.waiters
        }
        runningChildren.withLock { _ = $0.removeValue(forKey: pid) }
        let status = exit.withLock { $0.status ?? -1 }
        for waiter in waiters { waiter.resume(returning: status) }
    }

    private func append(_ chunk: String) {
        output.update { $0.text += chunk }
    }

    private func closeOutput() {
        output.update { $0.ended = true }
        outputEnd.set()
    }

    /// Waits until the output has ended (the process and any child holding its output closed
    /// it), up to `timeout`; returns whether it did. After that, ``text`` is complete.
    public func waitForOutputEnd(timeout: Duration = .seconds(10)) async -> Bool {
        await outputEnd.wait(timeout: timeout)
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
        try await output.wait(
            timeout: timeout,
            orThrow: { [self] in ProcessError.timedOut("\"\(needle)\" in the output; it wrote: \(text.suffix(2000))") },
            until: { state in
                if let line = Self.line(containing: needle, count: count, in: state.text) { return .success(line) }
                guard state.ended else { return nil }
                return .failure(ProcessError(description: "the process ended before writing \"\(needle)\"; it wrote: \(state.text.suffix(2000))"))
            })
    }

    /// Sends `signal` (SIGTERM by default) to the process, unless it has exited (and its PID
    /// may belong to another process by now).
    public func terminate(signal: Int32 = SIGTERM) {
        exit.withLock { state in
            // Under the lock: the exit watcher reaps the PID and records the status under it.
            if state.status == nil { kill(pid, signal) }
        }
    }

    /// Waits for the process to exit, up to `timeout`; kills it (SIGKILL) if it does not.
    /// Returns its exit status (128 + the signal when a signal ended it); ``text`` is then
    /// complete.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(10)) async -> Int32 {
        await waitUntilExit { [self] in
            Task {
                try? await Task.sleep(for: timeout)
                self.terminate(signal: SIGKILL)
            }
        }
    }

    /// Waits, however long it takes, for the process to exit; returns its exit status.
    public func waitUntilExit() async -> Int32 {
        await waitUntilExit {}
    }

    /// Waits for the exit, then (up to 2 s) for the output to end, so that ``text`` holds all
    /// the process wrote when this returns.
    private func waitUntilExit(whileWaiting: () -> Void) async -> Int32 {
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
            whileWaiting()
        }
        _ = await outputEnd.wait(timeout: .seconds(2))
        return status
    }
}

/// The children started and not yet reaped, killed when this process exits: a test that
/// failed before it stopped its `nats-server` (or a tool that exits early) leaves no orphan.
private let runningChildren = Locked<[Int32: ChildProcess]>([:])

/// Installs, once, the exit hook that kills ``runningChildren``.
private let killChildrenAtExit: Void = {
    atexit {
        for child in runningChildren.withLock({ Array($0.values) }) { child.terminate(signal: SIGKILL) }
    }
}()

extension ChildProcess {
    /// The PIDs of the processes now running whose environment has `variable` set to `value`
    /// (Linux `/proc`). A test starts a tool with a variable of its own, which every process
    /// the tool starts inherits; none should be left when the tool is done.
    public static func running(withEnvironment variable: String, _ value: String) -> [Int32] {
        let entry = Array("\(variable)=\(value)".utf8)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return data.split(separator: 0).contains { $0.elementsEqual(entry) }
        }
    }
}
