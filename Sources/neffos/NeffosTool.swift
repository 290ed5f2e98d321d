import ArgumentParser

/// The `neffos` command-line tool.
@main
struct NeffosTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neffos",
        abstract: "Tools for swift-neffos: load generation and benchmarks.",
        subcommands: [Bench.self])
}
