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
        for (i, w) in Topology.fleet.enumerated() {
            let s = try root.section(w.name)
            let rc = try RuntimeConfiguration.read(
                root: root, section: s, worker: w.name, routingKeys: w.routingKeys, partitionKey: w.partitionKey,
                defaultAdminPort: 9101 + i * 10, partition: 0)
            workers.append(rc.topology)
            runtime[w.name] = rc
        }
        return CLIContext(
            amqp: amqp, managementURL: management, workers: workers, runtime: runtime,
            stateDir: try root.string("state_dir", default: ".payfleet/dev/state"))
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
