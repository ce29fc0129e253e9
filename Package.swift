// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "LogPipe",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LogPipe", targets: ["LogPipe"]),
        .library(name: "NATSClient", targets: ["NATSClient"]),
        .library(name: "LogPipeAPI", targets: ["LogPipeAPI"]),
        .executable(name: "logpipe", targets: ["logpipe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.0.0"..<"5.0.0"),
        // Counters and gauges the library emits; the application picks the
        // backend (the CLI: Prometheus on its API endpoint).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        // PipelineService: a pipeline in an application's ServiceGroup.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        // `swift package generate-documentation` (scripts/docs.sh); a
        // command plugin only, nothing of it is linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CPCRE2",
            pkgConfig: "libpcre2-8",
            providers: [.apt(["libpcre2-dev"]), .brew(["pcre2"])]
        ),
        .target(name: "LogPipeBase"),
        .target(
            name: "LogPipe",
            dependencies: [
                "CPCRE2",
                "LogPipeBase",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "NATSClient",
            dependencies: [
                "LogPipeBase",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "NATSTestSupport",
            dependencies: ["NATSClient"],
            path: "Tests/Support"
        ),
        .target(
            name: "LogPipeNATS",
            dependencies: ["LogPipe", "NATSClient", "LogPipeBase"]
        ),
        .target(
            name: "LogPipeAPI",
            dependencies: [
                "LogPipe",
                "LogPipeBase",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "logpipe",
            dependencies: [
                "LogPipe",
                "LogPipeAPI",
                "LogPipeBase",
                "LogPipeNATS",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "EmbeddingExample",
            dependencies: [
                "LogPipe",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Examples/Embedding"
        ),
        .testTarget(
            name: "LogPipeTests",
            dependencies: [
                "LogPipe", "LogPipeBase", "NATSTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["../Fixtures"]
        ),
        .testTarget(
            name: "NATSClientTests",
            dependencies: ["NATSClient", "NATSTestSupport"]
        ),
        .testTarget(
            name: "LogPipeNATSTests",
            dependencies: ["LogPipeNATS", "LogPipe"]
        ),
        .testTarget(
            name: "LogPipeCLITests",
            dependencies: ["logpipe", "EmbeddingExample", "LogPipe", "NATSTestSupport"]
        ),
        .testTarget(
            name: "LogPipeAPITests",
            dependencies: [
                "LogPipeAPI", "LogPipe", "NATSTestSupport",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
