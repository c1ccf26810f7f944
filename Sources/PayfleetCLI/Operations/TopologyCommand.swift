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
            try await TopologyCommand.refuseRepartitioningWithMessages(ctx.workers, amqp: ctx.amqp)
            // The operator's user declares the exchange the processes only check for.
            var amqp = ctx.amqp
            amqp.declareEventsExchange = true
            let session = try await AMQPSession.connect(amqp)
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

    /// Queues of another partition layout than the configured one (`payfleet.W` when partitioned,
    /// `payfleet.W.pN` with N ≥ P): a change of `partitions` re-maps keys to queues, so it is
    /// refused while any of them holds messages (drain first, docs/operations.md); empty ones
    /// are only reported.
    static func refuseRepartitioningWithMessages(_ workers: [WorkerTopology], amqp: AMQPConfiguration) async throws {
        func depth(_ queue: String) async -> Int? {
            // A passive declare of a missing queue closes the channel: one session per probe.
            guard let s = try? await AMQPSession.connect(amqp) else { return nil }
            defer { Task { await s.close() } }
            return try? await s.inspect(queue: queue).messages
        }
        var problems: [String] = []
        for w in workers {
            var stale: [String] = []
            if w.isPartitioned { stale.append("payfleet.\(w.name)") } else { stale.append("payfleet.\(w.name).p0") }
            var n = max(w.partitions, 1)
            while n < 256, await depth("payfleet.\(w.name).p\(n)") != nil {
                stale.append("payfleet.\(w.name).p\(n)")
                n += 1
            }
            for q in stale {
                guard let messages = await depth(q) else { continue }
                if messages > 0 {
                    problems.append("\(q) holds \(messages) messages")
                } else {
                    FileHandle.standardError.write(Data(
                        "topology: \(q) is left from another partitions setting and is empty; delete it once no instance consumes it\n".utf8))
                }
                // Retry tiers of the old layout count too.
                for delay in w.retryDelaysMS {
                    let tier = q + ".retry." + WorkerTopology.label(ms: delay)
                    if let m = await depth(tier), m > 0 { problems.append("\(tier) holds \(m) messages") }
                }
            }
        }
        guard problems.isEmpty else {
            throw CLIFailure(
                "refusing to change partitions while queues of the old layout hold messages: "
                    + problems.joined(separator: "; ") + " (change partitions with `payfleet partitions resize`, docs/operations.md)")
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
