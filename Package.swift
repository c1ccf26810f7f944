// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "payfleet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "payfleet-demo-worker", targets: ["payfleet-demo-worker"]),
        .executable(name: "payfleet-bench", targets: ["payfleet-bench"]),
        .executable(name: "payfleet", targets: ["payfleet"]),
        .executable(name: "ledger-writer", targets: ["ledger-writer"]),
        .executable(name: "ingest", targets: ["ingest"]),
        .executable(name: "receipt-sender", targets: ["receipt-sender"]),
        .executable(name: "settlement-aggregator", targets: ["settlement-aggregator"]),
        .executable(name: "crm-sync", targets: ["crm-sync"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
    ],
    targets: [
        .systemLibrary(
            name: "CRabbitMQ", pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(
            name: "CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        .target(
            name: "PayfleetCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .target(
            name: "PayfleetAMQP",
            dependencies: [
                "CRabbitMQ", "PayfleetCore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "PayfleetStore",
            dependencies: [
                "CSQLite", "PayfleetCore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "PayfleetTelemetry",
            dependencies: [
                "PayfleetCore",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .target(
            name: "PayfleetWorker",
            dependencies: [
                "PayfleetCore", "PayfleetAMQP", "PayfleetStore", "PayfleetTelemetry",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(
            name: "PayfleetTestKit",
            dependencies: [
                "PayfleetCore", "PayfleetAMQP", "PayfleetStore", "PayfleetWorker",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        .target(
            name: "PayfleetCLI",
            dependencies: [
                "PayfleetCore", "PayfleetAMQP", "PayfleetStore", "PayfleetWorker", "PayfleetSettlement", "PayfleetIngest",
                "PayfleetLedger",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .executableTarget(name: "payfleet", dependencies: ["PayfleetCLI"]),
        .target(
            name: "PayfleetLedger",
            dependencies: [
                "PayfleetCore", "PayfleetStore", "PayfleetWorker",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(name: "ledger-writer", dependencies: ["PayfleetLedger", "PayfleetWorker"]),
        .target(
            name: "PayfleetIngest",
            dependencies: [
                "PayfleetCore", "PayfleetStore", "PayfleetAMQP", "PayfleetWorker", "PayfleetTelemetry",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "ingest", dependencies: ["PayfleetIngest"]),
        .target(
            name: "PayfleetCRMSync",
            dependencies: [
                "PayfleetCore", "PayfleetStore", "PayfleetWorker",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "crm-sync", dependencies: ["PayfleetCRMSync", "PayfleetWorker"]),
        .executableTarget(
            name: "payfleet-demo-worker",
            dependencies: ["PayfleetWorker"]),
        .executableTarget(
            name: "payfleet-bench",
            dependencies: [
                "PayfleetWorker", "PayfleetTestKit", "PayfleetIngest", "PayfleetStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(
            name: "PayfleetReceipts",
            dependencies: [
                "CCurl", "PayfleetCore", "PayfleetStore", "PayfleetWorker",
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "receipt-sender", dependencies: ["PayfleetReceipts", "PayfleetWorker"]),
        .testTarget(
            name: "PayfleetReceiptsTests",
            dependencies: [
                "PayfleetReceipts", "PayfleetTestKit", "receipt-sender",
                "PayfleetAMQP", "PayfleetStore", "PayfleetCore", "PayfleetWorker",
            ],
            exclude: ["smtp_sink.py", "sms_sink.py"]),
        .testTarget(name: "PayfleetCoreTests", dependencies: ["PayfleetCore"]),
        .testTarget(name: "PayfleetStoreTests", dependencies: ["PayfleetStore"]),
        .testTarget(
            name: "PayfleetWorkerTests",
            dependencies: [
                "PayfleetWorker", "PayfleetTestKit", "PayfleetStore", "PayfleetCore",
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .testTarget(
            name: "PayfleetIngestTests",
            dependencies: [
                "PayfleetIngest", "PayfleetTestKit", "PayfleetStore", "PayfleetAMQP", "ingest",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            resources: [.copy("Fixtures")]),
        .testTarget(
            // The runtime against a real broker: AMQP, the demo worker's fleet, store failures,
            // deployment files, clusters.
            name: "PayfleetRuntimeTests",
            dependencies: [
                "PayfleetWorker", "PayfleetTestKit", "PayfleetCLI", "payfleet-demo-worker", "payfleet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(
            name: "PayfleetCLITests",
            dependencies: [
                "PayfleetCLI", "PayfleetTestKit", "PayfleetAMQP", "PayfleetCore", "PayfleetWorker", "payfleet",
                "payfleet-demo-worker", "PayfleetIngest", "PayfleetLedger", "PayfleetSettlement", "PayfleetCRMSync",
                "PayfleetStore", "PayfleetTelemetry", "ingest", "ledger-writer", "settlement-aggregator",
                "crm-sync", "receipt-sender", "PayfleetReceipts",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        .testTarget(
            name: "PayfleetLedgerTests",
            dependencies: [
                "PayfleetLedger", "PayfleetTestKit", "PayfleetCLI", "ledger-writer",
                "PayfleetAMQP", "PayfleetStore", "PayfleetCore", "PayfleetWorker",
            ]),
        .target(
            name: "PayfleetSettlement",
            dependencies: [
                "PayfleetCore", "PayfleetStore", "PayfleetAMQP", "PayfleetWorker",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "settlement-aggregator", dependencies: ["PayfleetSettlement", "PayfleetWorker"]),
        .testTarget(
            name: "PayfleetSettlementTests",
            dependencies: [
                "PayfleetSettlement", "PayfleetTestKit", "PayfleetCLI", "settlement-aggregator", "payfleet",
                "PayfleetAMQP", "PayfleetStore", "PayfleetCore", "PayfleetWorker", "PayfleetLedger", "PayfleetIngest",
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "PayfleetCRMSyncTests",
            dependencies: [
                "PayfleetCRMSync", "PayfleetTestKit", "crm-sync",
                "PayfleetAMQP", "PayfleetStore", "PayfleetCore", "PayfleetWorker",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
    ]
)
