// swift-tools-version:6.1
// Micro benchmarks of LogPipe's hot paths (ordo-one/benchmark). Run from this
// folder: `swift package benchmark` (or `../scripts/bench-micro.sh`).
import Foundation
import PackageDescription

// A path dependency is named after its folder, which is the clone's name.
let logpipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "LogPipeBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.5.0"),
    ],
    targets: [
        // pcre2_jit_match called from C: the baseline of the regex benchmark.
        .target(name: "RawPCRE2", linkerSettings: [.linkedLibrary("pcre2-8")]),
        .executableTarget(
            name: "LogPipeBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LogPipe", package: logpipe),
                .product(name: "NATSClient", package: logpipe),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                "RawPCRE2",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/LogPipeBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
