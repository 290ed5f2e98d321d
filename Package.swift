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
        .library(name: "NeffosHummingbird", targets: ["NeffosHummingbird"]),
        .library(name: "NeffosVapor", targets: ["NeffosVapor"]),
        // The tool is the one executable product; the examples and the benchmark servers are
        // plain executable targets (`swift run neffos-chat`, `swift run neffos-bench-server`).
        .executable(name: "neffos", targets: ["neffos"]),
        .plugin(name: "NeffosClusterPlugin", targets: ["NeffosClusterPlugin"]),
    ],
    traits: [
        .default(enabledTraits: ["Mounts"]),
        .trait(
            name: "Mounts",
            description: "The Hummingbird and Vapor mounts (NeffosHummingbird, NeffosVapor), their examples and tests; on by default. `--disable-default-traits` leaves Hummingbird and Vapor out of the build."
        ),
        .trait(
            name: "OTel",
            description: "Links swift-otel into the neffos tool: `neffos serve` exports its spans to an OpenTelemetry collector (OTLP/HTTP) when OTEL_EXPORTER_OTLP_ENDPOINT is set. Off by default: swift-otel takes minutes to build."
        ),
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
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // wss:// on both ends: BoringSSL through NIO for the handshake, swift-certificates to
        // check a server's chain (and to make the tests' CA).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // Settings from flags, the environment and JSON or YAML files (ConfigReader).
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["JSON", "YAML"]),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Spans across nodes (the API; a backend such as swift-otel is the program's choice).
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // The OpenTelemetry backend of the tool, with the OTel trait only.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        // The Prometheus backend of swift-metrics, bootstrapped by the programs (the chat, the
        // tool), never by the library.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // NIOHTTPTypesHTTP1 only: NIO's HTTP/1 heads to and from swift-http-types.
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        // The mounts (NeffosHummingbird, NeffosVapor) and their examples only: `swift run
        // neffos-chat` builds neither.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
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
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
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
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NeffosHummingbird",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "HummingbirdCore", package: "hummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NeffosVapor",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "Vapor", package: "vapor", condition: .when(traits: ["Mounts"])),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
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
            // Child processes (nats-server, the examples, the tool) for the tests and the tool;
            // not a product: applications have no use for it.
            name: "NeffosProcess",
            dependencies: [
                "Neffos",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ChatApp",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            path: "examples/chat/ChatApp",
            resources: [.copy("Public")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "neffos-chat",
            dependencies: [
                "ChatApp",
                "Neffos",
                .target(name: "NeffosNATS", condition: .when(traits: ["NATS"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            path: "examples/chat/Main",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "neffos-hummingbird-chat",
            dependencies: [
                "ChatApp",
                "Neffos",
                .target(name: "NeffosHummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "examples/hummingbird-chat",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "neffos-vapor-chat",
            dependencies: [
                "ChatApp",
                "Neffos",
                .target(name: "NeffosVapor", condition: .when(traits: ["Mounts"])),
                .product(name: "Vapor", package: "vapor", condition: .when(traits: ["Mounts"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "examples/vapor-chat",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        example("neffos-chat-client", path: "examples/chat-client"),
        example("neffos-example-push", path: "examples/push"),
        example("neffos-example-ask", path: "examples/request-response"),
        example("neffos-example-rooms", path: "examples/rooms"),
        example("neffos-example-native", path: "examples/native", also: ["NeffosTesting", .product(name: "NIOCore", package: "swift-nio")]),
        example("neffos-example-typed", path: "examples/typed", also: [.product(name: "NIOCore", package: "swift-nio")]),
        example("neffos-example-scale-out", path: "examples/scale-out", also: ["NeffosNATS"]),
        .executableTarget(
            name: "neffos",
            dependencies: [
                "ChatApp",
                "Neffos",
                "NeffosNATS",
                "NeffosNIO",
                "NeffosProcess",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTel"])),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "neffos-bench-server",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .target(name: "NeffosHummingbird", condition: .when(traits: ["Mounts"])),
                .target(name: "NeffosVapor", condition: .when(traits: ["Mounts"])),
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "Vapor", package: "vapor", condition: .when(traits: ["Mounts"])),
                .target(name: "NeffosNATS", condition: .when(traits: ["NATS"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            path: "Sources/NeffosBenchServer",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "neffos-raw-server",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/NeffosRawServer",
            swiftSettings: strict
        ),
        .executableTarget(
            // The fuzz targets (codec, envelope, url, frames). Built normally, it replays inputs
            // (`neffos-fuzz TARGET FILE...`); built by scripts/fuzz with `-sanitize=fuzzer,address
            // -parse-as-library -DFUZZING`, it is a libFuzzer binary.
            name: "neffos-fuzz",
            dependencies: [
                "Neffos",
                "NeffosNIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/NeffosFuzz",
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
                .target(name: "NeffosHummingbird", condition: .when(traits: ["Mounts"])),
                .target(name: "NeffosVapor", condition: .when(traits: ["Mounts"])),
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["Mounts"])),
                .product(name: "Vapor", package: "vapor", condition: .when(traits: ["Mounts"])),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                "NeffosProcess",
                "NeffosTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
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
                "NeffosProcess",
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
