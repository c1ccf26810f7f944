import ArgumentParser
import Foundation
import PayfleetAMQP
import PayfleetCore

/// `payfleet topology declare | export`.
public struct TopologyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "topology", abstract: "Declare or export the broker topology.",
        subcommands: [Declare.self, Export.self])
    public init() {}

    public struct Declare: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Declare the events exchange and every worker's queues, retry tiers and DLQ (idempotent).")
        @OptionGroup public var global: GlobalOptions
        public init() {}

        public func run() async throws {
            let ctx = try CLIContext.load(global)
            let session = try await AMQPSession.connect(ctx.amqp)
            var declared: [String] = []
            for w in ctx.workers {
                try await session.declare { d in try d.declare(worker: w) }
                declared += w.declarations.queues.map(\.name)
            }
            await session.close()
            if global.json {
                try printJSON(["declared_queues": declared])
            } else {
                print("declared \(declared.count) queues on \(ctx.amqp)")
                for q in declared { print("  \(q)") }
            }
        }
    }

    public struct Export: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Print the topology as a RabbitMQ definitions file (rabbitmqctl import_definitions).")
        @OptionGroup public var global: GlobalOptions
        @Option(name: .shortAndLong, help: "Write to this file instead of standard output.")
        var output: String?
        @Flag(help: "Also export one least-privilege broker user per process, with permissions.")
        var users = false
        public init() {}

        public func run() async throws {
            let ctx = try CLIContext.load(global)
            var defs = Topology.definitions(workers: ctx.workers, vhost: ctx.amqp.vhost)
            if users {
                defs.merge(Topology.accessDefinitions(workers: ctx.workers, vhost: ctx.amqp.vhost)) { a, _ in a }
            }
            let data = try JSONSerialization.data(withJSONObject: defs, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            if let output {
                try data.write(to: URL(fileURLWithPath: output), options: .atomic)
            } else {
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }
}
