import Foundation
import Logging
import PayfleetCore
import PayfleetWorker
import ServiceLifecycle

/// The whole life of the `ingest` process: configuration (unknown keys are errors), the HTTP
/// app and the outbox relay in one ServiceGroup, graceful stop on SIGTERM/SIGINT.
public enum IngestMain {
    /// Returns the exit code: 0 after a graceful stop, 78 for configuration errors, 1 on failure.
    public static func run() async -> Int32 {
        let env = ProcessInfo.processInfo.environment
        let configuration: IngestConfiguration
        let logger: Logger
        do {
            let options = try WorkerOptions.parse(CommandLine.arguments, environment: env)
            let root = try ConfigSection.load(file: options.configPath, environment: env)
            WorkerMain.bootstrapLogging(try root.string("log_level"))
            logger = Logger(label: "payfleet.ingest")
            let amqp = try RuntimeConfiguration.readBroker(root)
            let merchants = try WorkerMain.readMerchants(root)
            configuration = try IngestConfiguration.read(
                root: root, section: try root.section("ingest"), merchants: merchants, amqp: amqp)
            root.ignore(ConfigSections.all)
            try root.finish()
            if options.checkConfigOnly {
                print("\(options.configPath): ok")
                return 0
            }
        } catch let e as ConfigError {
            FileHandle.standardError.write(Data("ingest: \(e.description)\n".utf8))
            return 78
        } catch {
            FileHandle.standardError.write(Data("ingest: \(error)\n".utf8))
            return 78
        }
        do {
            let readyFile = env["PAYFLEET_READY_FILE"]
            let app = try await buildApplication(configuration: configuration, logger: logger) { port in
                logger.info("ingest listening", metadata: ["http.port": "\(port)"])
                if let readyFile {
                    let json = "{\"pid\": \(ProcessInfo.processInfo.processIdentifier), \"port\": \(port)}\n"
                    _ = FileManager.default.createFile(atPath: readyFile, contents: Data(json.utf8))
                }
                SystemdNotify.send("READY=1\nSTATUS=accepting on port \(port)")
            }
            var groupConfig = ServiceGroupConfiguration(
                services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [], logger: logger)
            groupConfig.maximumGracefulShutdownDuration = .seconds(20)
            let group = ServiceGroup(configuration: groupConfig)
            try await group.run()
            return 0
        } catch {
            logger.critical("ingest failed", metadata: ["error": "\(error)"])
            return 1
        }
    }
}
