import Foundation
import Logging
import PayfleetCore
import PayfleetTelemetry
import PayfleetWorker
import ServiceLifecycle

/// The whole life of the `ingest` process: configuration (unknown keys are errors), the HTTP
/// app and the outbox relay in one ServiceGroup, graceful stop on SIGTERM/SIGINT.
public enum IngestMain {
    /// Returns the exit code: 0 after a graceful stop, 78 for configuration errors, 1 on failure.
    public static func run() async -> Int32 {
        let env = ProcessInfo.processInfo.environment
        let loaded = WorkerMain.loadConfiguration(process: "ingest") { root, _ in
            let amqp = try RuntimeConfiguration.readBroker(root)
            return try IngestConfiguration.read(
                root: root, section: try root.section("ingest"), merchants: try WorkerMain.readMerchants(root),
                amqp: amqp)
        }
        guard case .run(let configuration) = loaded else {
            if case .exit(let code) = loaded { return code }
            return 78
        }
        let logger = Logger(label: "payfleet.ingest")
        do {
            let readyFile = env["PAYFLEET_READY_FILE"]
            let app = try await buildApplication(configuration: configuration, logger: logger) { port in
                logger.info("ingest listening", metadata: [LogKey.httpPort: "\(port)"])
                WorkerMain.announceReady(
                    readyFile: readyFile, portKey: "port", port: port, status: "accepting on port \(port)")
            }
            var groupConfig = ServiceGroupConfiguration(
                services: (PayfleetTracing.service.map { [.init(service: $0)] } ?? []) + [.init(service: app)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [], logger: logger)
            groupConfig.maximumGracefulShutdownDuration = .seconds(20)
            let group = ServiceGroup(configuration: groupConfig)
            try await group.run()
            return 0
        } catch {
            logger.critical("ingest failed", metadata: [LogKey.error: "\(error)"])
            return 1
        }
    }
}
