import Foundation
import Logging
import PayfleetCore
import PayfleetTelemetry
import ServiceLifecycle

/// Top-level sections of `config/payfleet.yaml`; each process reads its own and the shared ones.
public enum ConfigSections {
    public static let all =
        ["broker", "state_dir", "log_level", "merchants", "ingest"] + WorkerIdentity.allCases.map(\.configSection)
        + ["cli", "dev", "console", "tracing"]
}

/// Command-line options every worker executable takes.
public struct WorkerOptions: Sendable {
    public var configPath: String
    public var partition: Int
    public var checkConfigOnly: Bool

    /// `--config FILE` (else `$PAYFLEET_CONFIG`, else `config/payfleet.yaml`), `--partition N`
    /// (else `$PAYFLEET_PARTITION`, else 0; systemd's `%i`), `--check-config`.
    public static func parse(_ args: [String], environment: [String: String]) throws(ConfigError) -> WorkerOptions {
        var o = WorkerOptions(
            configPath: environment["PAYFLEET_CONFIG"] ?? "config/payfleet.yaml",
            partition: Int(environment["PAYFLEET_PARTITION"] ?? "0") ?? 0, checkConfigOnly: false)
        var i = 1
        while i < args.count {
            switch args[i] {
            case "--config":
                guard i + 1 < args.count else { throw ConfigError(key: "--config", message: "needs a file") }
                o.configPath = args[i + 1]
                i += 1
            case "--partition":
                guard i + 1 < args.count, let p = Int(args[i + 1]), p >= 0 else {
                    throw ConfigError(key: "--partition", message: "needs a partition number")
                }
                o.partition = p
                i += 1
            case "--check-config": o.checkConfigOnly = true
            case "-h", "--help":
                throw ConfigError(key: "usage", message: "\(args[0]) [--config FILE] [--partition N] [--check-config]")
            default:
                throw ConfigError(key: args[i], message: "unknown option")
            }
            i += 1
        }
        return o
    }
}

/// The whole life of a worker process, so each executable is one call.
public enum WorkerMain {
    public typealias HandlerFactory<H> = @Sendable (_ section: ConfigSection, _ root: ConfigSection, _ merchants: [Merchant], _ logger: Logger) throws -> H

    public static func bootstrapLogging(_ level: String?) {
        let lvl = Logger.Level(rawValue: level ?? "info") ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = lvl
            return h
        }
    }

    /// Reads `merchants:` (a list of merchant mappings).
    public static func readMerchants(_ root: ConfigSection) throws(ConfigError) -> [Merchant] {
        var seen = Set<String>()
        var out: [Merchant] = []
        for s in try root.sectionList("merchants") {
            let m = try Merchant.read(s)
            guard seen.insert(m.id).inserted else { throw ConfigError(key: s.dotted("id"), message: "duplicate merchant '\(m.id)'") }
            out.append(m)
        }
        return out
    }

    /// What start-up decided: run with the configuration read, or exit with this code.
    public enum Startup<T> {
        case run(T)
        case exit(Int32)
    }

    /// The start-up every Payfleet process shares: options, the configuration file, logging,
    /// `read` for the process's own sections, then unknown keys anywhere are errors. Prints a
    /// one-line reason and answers `.exit(78)` on a configuration error, `.exit(0)` after
    /// `--check-config`.
    public static func loadConfiguration<T>(
        process: String, _ read: (_ root: ConfigSection, _ options: WorkerOptions) throws -> T
    ) -> Startup<T> {
        let env = ProcessInfo.processInfo.environment
        do {
            let options = try WorkerOptions.parse(CommandLine.arguments, environment: env)
            let root = try ConfigSection.load(file: options.configPath, environment: env)
            bootstrapLogging(try root.string("log_level"))
            let value = try read(root, options)
            let tracing = try TracingConfiguration.read(root: root, process: process)
            root.ignore(ConfigSections.all)
            try root.finish()
            if options.checkConfigOnly {
                print("\(options.configPath): ok")
                return .exit(0)
            }
            // OTLP export (`tracing:`): the exporter's service runs first in the process's group.
            if let tracing { _ = try PayfleetTracing.bootstrap(tracing, logger: Logger(label: "payfleet.\(process).tracing")) }
            return .run(value)
        } catch let e as ConfigError {
            FileHandle.standardError.write(Data("\(process): \(e.description)\n".utf8))
            return .exit(78)
        } catch {
            FileHandle.standardError.write(Data("\(process): \(error)\n".utf8))
            return .exit(78)
        }
    }

    /// Tells supervisors the process is ready: `$PAYFLEET_READY_FILE` (pid and port as JSON)
    /// and systemd's notify socket.
    public static func announceReady(readyFile: String?, portKey: String, port: Int, status: String) {
        if let readyFile {
            let json = "{\"pid\": \(ProcessInfo.processInfo.processIdentifier), \"\(portKey)\": \(port)}\n"
            _ = FileManager.default.createFile(atPath: readyFile, contents: Data(json.utf8))
        }
        SystemdNotify.send("READY=1\nSTATUS=\(status)")
    }

    /// Loads configuration, builds the runtime and admin listener, runs until SIGTERM/SIGINT.
    /// Returns the process exit code (0 after a graceful stop, 78 for configuration errors).
    ///
    /// `services` adds long-lived tasks of the worker's own that run beside the runtime in the
    /// same service group (e.g. a timer that closes settlement days through the runtime's store);
    /// they stop with the group on SIGTERM.
    public static func run<H: WorkerHandler>(
        _ identity: WorkerIdentity,
        makeHandler: HandlerFactory<H>,
        services: (@Sendable (_ runtime: WorkerRuntime<H>, _ logger: Logger) -> [any Service])? = nil
    ) async -> Int32 {
        let env = ProcessInfo.processInfo.environment
        let worker = identity.name
        let loaded = loadConfiguration(process: worker) { root, options -> (RuntimeConfiguration, H, Logger) in
            var logger = Logger(label: "payfleet.\(worker)")
            logger[metadataKey: LogKey.worker] = "\(worker)"
            let section = try root.section(identity.configSection)
            let config = try RuntimeConfiguration.read(
                root: root, section: section, identity: identity, partition: options.partition)
            let handler = try makeHandler(section, root, try readMerchants(root), logger)
            return (config, handler, logger)
        }
        guard case .run(let (runtimeConfig, handler, logger)) = loaded else {
            if case .exit(let code) = loaded { return code }
            return 78
        }
        do {
            let runtime = try await WorkerRuntime(configuration: runtimeConfig, handler: handler, logger: logger)
            let readyFile = env["PAYFLEET_READY_FILE"]
            let admin = AdminServer(
                host: runtimeConfig.adminHost, port: runtimeConfig.adminPort, logger: logger,
                readiness: { await runtime.readiness() }, metrics: { runtime.metrics.text() },
                onBound: { port in
                    logger.info("admin listener up", metadata: [LogKey.adminPort: "\(port)"])
                    // READY=1 once the broker connections (topology declared on connect) and the
                    // database answer, not merely when the admin port is bound.
                    Task {
                        while await !runtime.readiness().ready {
                            try? await Task.sleep(for: .milliseconds(50))
                        }
                        announceReady(
                            readyFile: readyFile, portKey: "admin_port", port: port,
                            status: "consuming \(runtimeConfig.topology.queue(partition: runtimeConfig.partition))")
                    }
                },
                routes: { router in handler.adminRoutes(router, store: runtime.store) })
            // Shut down in reverse: the admin listener first, then the worker's own services, the
            // runtime last. Only this group handles SIGTERM/SIGINT (AdminServer runs Hummingbird
            // without signal handlers of its own).
            var configs: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: runtime, successTerminationBehavior: .gracefullyShutdownGroup)
            ]
            // The span exporter stops last, after the runtime's final spans ended.
            if let exporter = PayfleetTracing.service { configs.insert(.init(service: exporter), at: 0) }
            for s in services?(runtime, logger) ?? [] { configs.append(.init(service: s)) }
            configs.append(.init(service: admin))
            let group = ServiceGroup(
                configuration: .init(
                    services: configs,
                    gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
                    logger: logger))
            try await group.run()
            return 0
        } catch {
            logger.critical("worker failed", metadata: [LogKey.error: "\(error)"])
            return 1
        }
    }
}

/// sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET`.
public enum SystemdNotify {
    /// systemd's watchdog interval (`$WATCHDOG_USEC`, for this process when `$WATCHDOG_PID` is
    /// set), or nil when no watchdog is configured.
    public static func watchdogInterval(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Duration? {
        guard let s = environment["WATCHDOG_USEC"], let usec = UInt64(s), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], Int32(pid) != ProcessInfo.processInfo.processIdentifier { return nil }
        return .microseconds(Int64(usec))
    }

    public static func send(_ state: String) {
        guard var path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                state.withCString { s in sendto(fd, s, strlen(s), 0, sa, len) }
            }
        }
    }
}

extension WorkerMain {
    /// A worker executable's `--help` text: the options every worker takes, around its summary.
    public static func usage(_ identity: WorkerIdentity, summary: String) -> String {
        let worker = identity.name, defaultAdminPort = identity.defaultAdminPort
        return """
        USAGE: \(worker) [--config FILE] [--partition N] [--check-config]

        \(summary)

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `\(worker):` section (admin port default \(defaultAdminPort)).
          --partition N     The partition this instance owns (else $PAYFLEET_PARTITION, else 0;
                            systemd's %i in payfleet-\(worker)@N.service).
          --check-config    Read and validate the configuration, print "FILE: ok" and exit.
          -h, --help        Show this help and exit.

        Runs until SIGTERM or SIGINT. Exit codes: 0 after a graceful stop, 78 on a configuration
        error (the message names the key), 1 on another failure.
        """
    }

    /// `--help` / `-h` answers before any configuration is read: usage on stdout, exit 0.
    public static func exitOnHelp(_ usage: String) {
        if CommandLine.arguments.dropFirst().contains(where: { $0 == "--help" || $0 == "-h" }) {
            print(usage)
            exit(0)
        }
    }
}
