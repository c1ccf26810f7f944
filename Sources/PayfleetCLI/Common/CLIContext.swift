import ArgumentParser
import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker

/// Options every `payfleet` command takes.
public struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml).")
    public var config: String?

    @Flag(name: .long, help: "Machine-readable JSON output.")
    public var json = false

    public init() {}

    public var configPath: String {
        config ?? ProcessInfo.processInfo.environment["PAYFLEET_CONFIG"] ?? "config/payfleet.yaml"
    }
}

/// The parts of the configuration the operator's commands need.
public struct CLIContext: Sendable {
    public let amqp: AMQPConfiguration
    public let managementURL: String?
    public let workers: [WorkerTopology]
    public let runtime: [String: RuntimeConfiguration]
    public let stateDir: String
    /// Config sections of workers present in the file (in fleet order): the workers `status`
    /// reports on. `runtime` also has defaults for the fleet's workers that are absent.
    public let configuredWorkers: [String]
    /// The `cli:` section: `audit_log` (string, default `<state_dir>/audit.jsonl`).
    public let auditLogPath: String

    public static func load(_ options: GlobalOptions) throws -> CLIContext {
        try load(configPath: options.configPath)
    }

    public static func load(configPath: String) throws -> CLIContext {
        let env = ProcessInfo.processInfo.environment
        let root = try ConfigSection.load(file: configPath, environment: env)
        let amqp = try RuntimeConfiguration.readBroker(root)
        let management = try root.section("broker").secret("management_url")
        var workers: [WorkerTopology] = []
        var runtime: [String: RuntimeConfiguration] = [:]
        var configured: [String] = []
        // The fleet's workers, plus the runtime's demonstration worker when it is configured.
        let known = WorkerIdentity.fleet + (root.has(demoWorker) ? [.demoWorker] : [])
        for identity in known {
            let name = identity.configSection
            if root.has(name) { configured.append(name) }
            let s = try root.section(name)
            let rc = try RuntimeConfiguration.read(root: root, section: s, identity: identity, partition: 0)
            if identity != .demoWorker { workers.append(rc.topology) }
            runtime[name] = rc
        }
        let stateDir = try root.stateDir()
        let cli = try root.section("cli")
        return CLIContext(
            amqp: amqp, managementURL: management, workers: workers, runtime: runtime, stateDir: stateDir,
            configuredWorkers: configured,
            auditLogPath: try cli.string(
                "audit_log", default: (stateDir as NSString).appendingPathComponent("audit.jsonl")))
    }

    static let demoWorker = WorkerIdentity.demoWorker.configSection

    /// A worker by its config section (`ledger-writer`) or its queue-name stem (`name:`).
    public func worker(_ name: String) throws -> RuntimeConfiguration {
        if let rc = runtime[name] { return rc }
        if let rc = runtime.values.first(where: { $0.worker == name }) { return rc }
        let names = runtime.keys.sorted().joined(separator: ", ")
        throw CLIFailure("unknown worker '\(name)' (configured: \(names))")
    }

    /// The config section of a worker (`ledger-writer`), for the runtime's admin port per partition.
    public func section(of rc: RuntimeConfiguration) -> String {
        runtime.first { $0.value.worker == rc.worker }?.key ?? rc.worker
    }
}

/// A one-line failure on stderr and a non-zero exit, as every command promises.
public struct CLIFailure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func printJSON(_ value: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: data, as: UTF8.self))
}
