import Foundation
import Neffos

#if FUZZING

// Built for libFuzzer (`scripts/fuzz`: `-sanitize=fuzzer,address -parse-as-library
// -DFUZZING`): libFuzzer's driver runs the inputs through `LLVMFuzzerTestOneInput`.

/// The target `NEFFOS_FUZZ_TARGET` names, read once.
let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment[FuzzTarget.environmentVariable] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: " | ")
        FileHandle.standardError.write(Data("neffos-fuzz: set \(FuzzTarget.environmentVariable) to one of: \(names)\n".utf8))
        exit(2)
    }
    return target
}()

/// libFuzzer's start-up hook: checks the target's name before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FileHandle.standardError.write(Data("neffos-fuzz: target \(selectedTarget.rawValue)\n".utf8))
    return 0
}

/// libFuzzer's entry point: one input through the selected target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

/// libFuzzer's driver: parses libFuzzer's options from the command line and runs the inputs.
///
/// The C function, declared without a C header: its arguments are three pointers, which the
/// Swift calling convention passes as C does (in the first argument registers), and the
/// callback is a C function pointer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The program's entry point, in both builds. SwiftPM links an executable with
/// `--defsym main=neffos_fuzz_main` (the renamed entry point of the module, so that tests could
/// link it): without a `@main` the link fails, and libFuzzer's own `main` cannot take its
/// place. This one hands over to libFuzzer's driver.
@main
struct FuzzDriver {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput))
    }
}

#else
/// Without libFuzzer (the normal build): replays inputs, to re-run a crash file or check the
/// seed corpora.
///
///     neffos-fuzz TARGET FILE-OR-DIRECTORY...     run every file (directories: their files,
///                                                 recursively) through TARGET; exit 0 when
///                                                 no check fails (a failing check traps)
///     neffos-fuzz write-seeds TARGET DIRECTORY    write the generated seeds of TARGET
///                                                 (envelope, frames) into DIRECTORY
@main
struct FuzzReplay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "write-seeds", arguments.count == 3, let target = FuzzTarget(rawValue: arguments[1]) {
            writeSeeds(of: target, to: arguments[2])
            return
        }
        guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[0]) else { usage() }
        var count = 0
        for path in arguments.dropFirst() {
            let files = inputs(at: path)
            if files.isEmpty { fail("no input at \(path)") }
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { fail("cannot read \(file)") }
                print("neffos-fuzz \(target.rawValue): \(file)")
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("neffos-fuzz \(target.rawValue): \(count) inputs, no failed check")
    }

    /// The regular files at `path`: itself, or the files under it (sorted, hidden ones left out).
    static func inputs(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
        guard isDirectory.boolValue else { return [path] }
        let names = (FileManager.default.subpaths(atPath: path) ?? []).sorted()
        return names.filter { name in !name.split(separator: "/").contains { $0.hasPrefix(".") } }
            .map { "\(path)/\($0)" }
            .filter { file in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) && !isDirectory.boolValue
            }
    }

    static func writeSeeds(of target: FuzzTarget, to directory: String) {
        let seeds: [(name: String, bytes: [UInt8])]
        switch target {
        case .envelope: seeds = EnvelopeFuzzing.samples.map { ($0.name, Array($0.bytes.readableBytesView)) }
        case .frames: seeds = FrameSeeds.all
        case .codec, .url: fail("the \(target.rawValue) seeds are written by hand (Tests/Fuzz/Corpus/\(target.rawValue))")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for seed in seeds {
                try Data(seed.bytes).write(to: URL(fileURLWithPath: directory).appendingPathComponent(seed.name))
            }
        } catch {
            fail("cannot write the seeds: \(error)")
        }
        print("neffos-fuzz: wrote \(seeds.count) \(target.rawValue) seeds to \(directory)")
    }

    static func usage() -> Never {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
        fail("""
            usage: neffos-fuzz \(names) FILE-OR-DIRECTORY...
                   neffos-fuzz write-seeds envelope|frames DIRECTORY
            (built with -DFUZZING under libFuzzer instead: see scripts/fuzz)
            """)
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("neffos-fuzz: \(message)\n".utf8))
        exit(2)
    }
}
#endif
