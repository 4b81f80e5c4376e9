// swift-tools-version: 6.1
import PackageDescription

/// The coordinator core and the simulator are optimised in debug builds too, so `make test` can run the committed
/// 1,000-worker × 100,000-shard scenario (minutes unoptimised, seconds optimised). Debugging them: drop this flag.
let optimizedInDebug: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "Sigma",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sigma", targets: ["sigma"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        // C libraries (Debian: libzmq3-dev, liblz4-dev, libopenblas-dev).
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"]), .brew(["zeromq"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"]), .brew(["lz4"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),
        .target(name: "CSysShims"),

        // Pure layers.
        .target(name: "SigmaModel", dependencies: [
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: optimizedInDebug),
        .target(name: "SigmaProtocol", dependencies: ["SigmaModel"], swiftSettings: optimizedInDebug),
        // What the coordinator core knows of jobs: round drivers (the protocol), partials, results. No engine.
        .target(name: "SigmaJobCore", dependencies: ["SigmaModel"], swiftSettings: optimizedInDebug),
        // Every job kind, one folder each under Kinds/, and the registry the shells run them through (JobKinds).
        .target(name: "SigmaJobs", dependencies: ["SigmaJobCore", "SigmaModel", "SigmaProtocol", "SigmaEngine", .product(name: "Yams", package: "Yams")], swiftSettings: optimizedInDebug),
        .target(name: "SigmaCoordinatorCore", dependencies: [
            "SigmaModel", "SigmaProtocol", "SigmaJobCore",
            .product(name: "DequeModule", package: "swift-collections"),
        ], swiftSettings: optimizedInDebug),
        .target(name: "SigmaSimulator", dependencies: [
            "SigmaCoordinatorCore", "SigmaWorkerCore", "SigmaJobs", "SigmaEngine", "SigmaModel", "SigmaProtocol",
            .product(name: "HeapModule", package: "swift-collections"),
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: optimizedInDebug),
        .target(name: "SigmaWorkerCore", dependencies: [
            "SigmaModel", "SigmaProtocol",
            .product(name: "DequeModule", package: "swift-collections"),
        ], swiftSettings: optimizedInDebug),

        // The only users of the C libraries.
        .target(name: "SigmaTransport", dependencies: [
            "CZeroMQ", "CLZ4", "CSysShims", "SigmaModel",
            .product(name: "DequeModule", package: "swift-collections"),
        ]),
        .target(name: "SigmaEngine", dependencies: ["COpenBLAS", "CSysShims", "CZlib"], swiftSettings: optimizedInDebug),

        // I/O shells.
        .target(name: "SigmaCoordinator", dependencies: [
            "SigmaCoordinatorCore", "SigmaTransport", "SigmaProtocol", "SigmaModel", "SigmaJobs", "SigmaEngine",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .target(name: "SigmaWorker", dependencies: [
            "SigmaWorkerCore", "SigmaTransport", "SigmaProtocol", "SigmaModel", "SigmaJobs", "SigmaEngine",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SigmaClient", dependencies: ["SigmaTransport", "SigmaProtocol", "SigmaModel"]),
        // What the terminal shows (sigma top, the tables, the formatters): status in, text out.
        .target(name: "SigmaTerminal", dependencies: ["SigmaModel", "SigmaProtocol"]),
        // The coordinator's HTTP side: web dashboard, JSON API and Prometheus /metrics, from coordinator snapshots.
        .target(name: "SigmaDashboard", dependencies: [
            "SigmaProtocol", "SigmaModel",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),

        .executableTarget(name: "sigma", dependencies: [
            "SigmaCoordinator", "SigmaCoordinatorCore", "SigmaDashboard", "SigmaWorker", "SigmaClient", "SigmaSimulator", "SigmaJobs", "SigmaTerminal",
            "SigmaEngine", "SigmaModel", "SigmaProtocol", "SigmaTransport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "SigmaProtocolTests", dependencies: ["SigmaProtocol", "SigmaModel", "SigmaCoordinatorCore", "SigmaWorkerCore", "SigmaJobs"]),
        .testTarget(name: "SigmaJobsTests", dependencies: ["SigmaJobs", "SigmaEngine", "SigmaModel", "SigmaProtocol", "CZlib"], exclude: ["Fixtures"]),
        .testTarget(name: "SigmaCoreTests", dependencies: ["SigmaCoordinatorCore", "SigmaWorkerCore", "SigmaSimulator", "SigmaJobs", "SigmaModel", "SigmaProtocol", "SigmaEngine"]),
        .testTarget(name: "SigmaTransportTests", dependencies: [
            "SigmaTransport", "SigmaCoordinator", "SigmaCoordinatorCore", "SigmaWorker", "SigmaWorkerCore", "SigmaClient", "SigmaJobs", "SigmaModel", "SigmaProtocol", "CZeroMQ",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .testTarget(name: "SigmaIntegrationTests", dependencies: [
            "SigmaClient", "SigmaJobs", "SigmaEngine", "SigmaDashboard", "SigmaModel", "SigmaProtocol", "SigmaTransport", "CSysShims",
            .product(name: "Yams", package: "Yams"),
        ], exclude: ["Fixtures", "Snapshots"]),
        .testTarget(name: "SigmaEngineTests", dependencies: ["SigmaEngine"], exclude: ["Fixtures"]),
        .testTarget(name: "SigmaTerminalTests", dependencies: ["SigmaTerminal", "SigmaModel", "SigmaProtocol"]),
    ],
    swiftLanguageModes: [.v6]
)
