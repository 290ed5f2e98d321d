// swift-tools-version:6.2
import PackageDescription

/// Settings every target of ours builds with: Swift 6 mode (strict concurrency) and no warnings.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
]

/// One program of `examples/`: it uses the core, the NIO transport and logging, plus `also`;
/// its README sits beside it.
func example(_ name: String, path: String, also: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["Neffos", "NeffosNIO", .product(name: "Logging", package: "swift-log")] + also,
        path: path,
        exclude: ["README.md"],
        swiftSettings: strict
    )
}

let package = Package(
    name: "swift-neffos",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Neffos", targets: ["Neffos"]),
        .library(name: "NeffosNIO", targets: ["NeffosNIO"]),
        .library(name: "NeffosTesting", targets: ["NeffosTesting"]),
        .library(name: "NeffosNATS", targets: ["NeffosNATS"]),
        .executable(name: "neffos-chat", targets: ["NeffosChat"]),
        .executable(name: "neffos", targets: ["neffos"]),
        .executable(name: "neffos-bench-server", targets: ["NeffosBenchServer"]),
        .executable(name: "neffos-raw-server", targets: ["NeffosRawServer"]),
        .executable(name: "neffos-chat-client", targets: ["NeffosChatClient"]),
        .executable(name: "neffos-example-push", targets: ["PushExample"]),
        .executable(name: "neffos-example-ask", targets: ["AskExample"]),
        .executable(name: "neffos-example-rooms", targets: ["RoomsExample"]),
        .executable(name: "neffos-example-native", targets: ["NativeExample"]),
        .executable(name: "neffos-example-typed", targets: ["TypedExample"]),
        .executable(name: "neffos-example-scale-out", targets: ["ScaleOutExample"]),
        .plugin(name: "NeffosClusterPlugin", targets: ["NeffosClusterPlugin"]),
    ],
    traits: [
        .trait(
            name: "NATS",
            description: "Links the NATS exchange (nats.c, Debian's libnats-dev) into the examples and the tool."
        ),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // `swift package generate-documentation --target Neffos`: the DocC catalog in Sources/Neffos.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "Neffos",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NeffosNIO",
            dependencies: [
                "Neffos",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CNATS",
            pkgConfig: "libnats",
            providers: [.apt(["libnats-dev"])]
        ),
        .target(
            name: "NeffosNATS",
            dependencies: [
                "Neffos",
                "CNATS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NeffosTesting",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ChatApp",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "examples/chat/ChatApp",
            resources: [.copy("Public")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "NeffosChat",
            dependencies: [
                "ChatApp",
                "Neffos",
                .target(name: "NeffosNATS", condition: .when(traits: ["NATS"])),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/chat/Main",
            swiftSettings: strict
        ),
        example("NeffosChatClient", path: "examples/chat-client"),
        example("PushExample", path: "examples/push"),
        example("AskExample", path: "examples/request-response"),
        example("RoomsExample", path: "examples/rooms"),
        example("NativeExample", path: "examples/native", also: ["NeffosTesting", .product(name: "NIOCore", package: "swift-nio")]),
        example("TypedExample", path: "examples/typed", also: [.product(name: "NIOCore", package: "swift-nio")]),
        example("ScaleOutExample", path: "examples/scale-out", also: ["NeffosNATS"]),
        .executableTarget(
            name: "neffos",
            dependencies: [
                "ChatApp",
                "Neffos",
                "NeffosNATS",
                "NeffosNIO",
                "NeffosTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "NeffosBenchServer",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .target(name: "NeffosNATS", condition: .when(traits: ["NATS"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "NeffosRawServer",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .plugin(
            name: "NeffosClusterPlugin",
            capability: .command(
                // No permissions declared: run it with --disable-sandbox (macOS's sandbox would
                // forbid the local ports; Linux has none).
                intent: .custom(verb: "cluster", description: "Run a local cluster: nats-server processes and chat nodes (neffos cluster).")
            ),
            path: "Plugins/NeffosClusterPlugin"
        ),
        .testTarget(
            name: "NeffosNIOTests",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                "NeffosTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NeffosNATSTests",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                "NeffosNATS",
                "NeffosTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NeffosTests",
            dependencies: [
                "Neffos",
                "NeffosTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
    ]
)
