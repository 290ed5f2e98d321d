// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks (package-benchmark). A package of its own so that the main package's
// build and CI do not compile the benchmark tooling. Run from this folder:
//   swift package --disable-sandbox benchmark
let package = Package(
    name: "swift-neffos-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-neffos", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                .product(name: "Neffos", package: "swift-neffos"),
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "BroadcastBenchmarks",
            dependencies: [
                .product(name: "Neffos", package: "swift-neffos"),
                .product(name: "NeffosTesting", package: "swift-neffos"),
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/BroadcastBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
