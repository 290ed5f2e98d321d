import Foundation
import PackagePlugin

/// `swift package cluster [--nodes N] [--port P] [--duration S]`: builds the `neffos` tool
/// and runs `neffos cluster` with the same arguments (a local NATS cluster plus chat nodes,
/// stopped together by Ctrl-C).
@main
struct NeffosClusterPlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        print("building the neffos tool…")
        let build = try packageManager.build(.product("neffos"), parameters: .init(configuration: .debug, logging: .concise))
        guard build.succeeded else {
            Diagnostics.error("building neffos failed:\n\(build.logText)")
            throw ClusterPluginError("the neffos tool did not build (it needs nats.c: apt-get install libnats-dev)")
        }
        guard let tool = build.builtArtifacts.first(where: { $0.kind == .executable && $0.url.lastPathComponent == "neffos" }) else {
            throw ClusterPluginError("the build produced no neffos executable")
        }
        let process = Process()
        process.executableURL = tool.url
        process.arguments = ["cluster"] + arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ClusterPluginError("neffos cluster exited with status \(process.terminationStatus)")
        }
    }
}

/// Why the plugin stopped.
struct ClusterPluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
