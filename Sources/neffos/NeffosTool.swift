import ArgumentParser

/// The `neffos` command-line tool.
@main
struct NeffosTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neffos",
        abstract: "Tools for swift-neffos: run the chat example on any exchange, a local cluster, and benchmarks.",
        subcommands: [Serve.self, ClusterCommand.self, Bench.self])
}
