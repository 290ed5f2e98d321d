import Foundation
import PackagePlugin

/// `swift package cluster [--nodes N] [--port P] [--duration S]`: builds the `neffos` tool
/// and runs `neffos cluster` with the same arguments (a local NATS cluster plus chat nodes,
/// stopped together by Ctrl-C).
///
/// What the plugin and the tool print reaches the user as it happens, in a terminal or
/// through a pipe: SwiftPM holds a plugin's standard output until the plugin exits when its own
/// output is not a terminal, so every line goes out as a progress diagnostic (standard error,
/// written at once) instead.
@main
struct NeffosClusterPlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        Diagnostics.progress("building the neffos tool…")
        let build = try packageManager.build(.product("neffos"), parameters: .init(configuration: .debug, logging: .concise))
        guard build.succeeded else {
            Diagnostics.error("building neffos failed:\n\(build.logText)")
            throw ClusterPluginError("the neffos tool did not build (it needs nats.c: apt-get install libnats-dev)")
        }
        guard let tool = build.builtArtifacts.first(where: { $0.kind == .executable && $0.url.lastPathComponent == "neffos" }) else {
            throw ClusterPluginError("the build produced no neffos executable")
        }
        let output = Pipe()
        let lifeline = Pipe()  // Never written: its end, when the plugin ends, stops the tool.
        let process = Process()
        process.standardInput = lifeline
        process.executableURL = tool.url
        // The tool stops its nodes and NATS servers when the plugin ends (SwiftPM ends it on
        // Ctrl-C; the tool is in a process group of its own and would outlive it).
        process.arguments = ["cluster", "--stop-with-parent"] + arguments
        process.standardOutput = output
        process.standardError = output
        try process.run()
        relayLines(from: output.fileHandleForReading)
        process.waitUntilExit()
        withExtendedLifetime(lifeline) {}
        guard process.terminationStatus == 0 else {
            throw ClusterPluginError("neffos cluster exited with status \(process.terminationStatus)")
        }
    }

    /// Passes each line the tool writes on as a progress diagnostic, as it arrives, until the
    /// tool closes its output.
    private func relayLines(from handle: FileHandle) {
        var pending = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                Diagnostics.progress(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...newline)
            }
        }
        if !pending.isEmpty { Diagnostics.progress(String(decoding: pending, as: UTF8.self)) }
    }
}

/// Why the plugin stopped.
struct ClusterPluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
