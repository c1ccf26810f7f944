import ArgumentParser
import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker

/// Measures, on one private broker in one run:
/// (a) the AMQP layer over rabbitmq-c: publish with confirms and consume with acks, 500-byte
///     persistent messages on a quorum queue;
/// (b) the worker runtime end to end: consume, SQLite dedupe, group commit, ack;
/// and prints both and the ratio (b)/(a).
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payfleet-bench", abstract: "Payfleet benchmarks.",
        subcommands: [Bench.self, FleetBench.self, WorkerBench.self], defaultSubcommand: Bench.self)
}

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime", abstract: "Throughput of the AMQP layer and of the worker runtime.")

    @Option(help: "AMQP URL of the (private) broker.")
    var amqp = ProcessInfo.processInfo.environment["PAYFLEET_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:25672/"
    @Option(help: "Messages per measurement.")
    var count = 20_000
    @Option(help: "Messages per confirm batch.")
    var confirmBatch = 500
    @Option(help: "Consumer prefetch (and runtime batch size).")
    var prefetch = 200

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        let logger = Logger(label: "bench")
        let config = try AMQPConfiguration(url: amqp)
        let padding = String(repeating: "x", count: 500)
        let body = Array(padding.utf8)

        // (a) publish with confirms into a quorum queue.
        let queue = "payfleet.bench.\(UInt32.random(in: 0...UInt32.max))"
        let session = try await AMQPSession.connect(config)
        try await session.declare { d in try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")])) }
        let pub = AMQPPublisher(configuration: config, name: "bench", maxBatch: confirmBatch, logger: logger)
        guard await pub.waitUntilConnected() else { throw CLIError("cannot connect to \(config)") }
        var t0 = ContinuousClock.now
        var sent = 0
        while sent < count {
            let n = min(confirmBatch, count - sent)
            let out = (0..<n).map { i in
                AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: body, messageID: "b\(sent + i)"))
            }
            for r in await pub.publish(batch: out) { try r.get() }
            sent += n
        }
        let publishRate = Double(count) / (ContinuousClock.now - t0).seconds

        // (a) consume with acks.
        let consumer = AMQPConsumer(configuration: config, queue: queue, prefetch: prefetch, logger: logger)
        t0 = ContinuousClock.now
        var got = 0
        for await e in consumer.events {
            guard case .deliveries(let batch) = e else { continue }
            got += batch.count
            consumer.ack(batch.last!, multiple: true)
            if got >= count { break }
        }
        let consumeRate = Double(got) / (ContinuousClock.now - t0).seconds
        consumer.shutdown()
        _ = try? await session.declare { try $0.delete(queue: queue) }

        // (b) the runtime end to end with the demo handler.
        let dir = TestEnvironment.makeTempDir("bench")
        let name = "bench-\(UInt32.random(in: 0...UInt32.max) % 1_000_000)"
        let topo = WorkerTopology(name: name, routingKeys: ["payment.succeeded"])
        try await session.declare { try $0.declare(worker: topo) }
        let events = (0..<count).map { EventFactory.payment($0, prefix: name) }
        sent = 0
        while sent < count {
            let chunk = events[sent..<min(sent + confirmBatch, count)]
            let out = chunk.map { e in
                AMQPOutgoing(exchange: "", routingKey: topo.queue(partition: 0), message: AMQPMessage(body: EventFactory.body(e), messageID: e.id))
            }
            for r in await pub.publish(batch: out) { try r.get() }
            sent += chunk.count
        }
        pub.close()
        let avgBytes = events.prefix(100).map { EventFactory.body($0).count }.reduce(0, +) / 100
        let rc = RuntimeConfiguration(
            worker: name, amqp: config, topology: topo, statePath: dir + "/bench.sqlite", batchSize: prefetch)
        let runtime = try await WorkerRuntime(configuration: rc, handler: DemoHandler(), logger: logger)
        t0 = ContinuousClock.now
        let applied = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask { try await runtime.run(); return 0 }
            group.addTask {
                while true {
                    let n = try await runtime.store.withConnection { db in Int(try db.queryOne("SELECT COALESCE(MAX(seq), 0) FROM applied")!.int(0)!) }
                    if n >= count { return n }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let n = try await group.next()!
            group.cancelAll()
            return n
        }
        // Steady state: from the first applied event to the last (start-up, connecting and
        // declaring the topology excluded), by the applied_at stamps of the SQLite rows.
        let span = try await runtime.store.withConnection { db in
            Double(try db.queryOne("SELECT MAX(applied_at) - MIN(applied_at) FROM applied")!.int(0)!) / 1000
        }
        let runtimeRate = Double(applied - 1) / max(span, 0.001)
        func metric(_ name: String) -> Double {
            for line in runtime.metrics.text().split(separator: "\n") where line.hasPrefix(name + "{") {
                return Double(line.split(separator: " ").last ?? "0") ?? 0
            }
            return 0
        }
        let batches = metric("payfleet_batch_size_count")
        let batchSeconds = metric("payfleet_batch_duration_seconds_sum")
        for q in topo.declarations.queues.map(\.name) { _ = try? await session.declare { try $0.delete(queue: q) } }
        await session.close()
        try? FileManager.default.removeItem(atPath: dir)

        // Where a runtime event's time goes, outside the broker: decoding and the SQL of a batch.
        let bodies = events.map { Data(EventFactory.body($0)) }
        t0 = ContinuousClock.now
        for b in bodies { _ = try EventCodec.decode(b) }
        let decodeUS = 1e6 * (ContinuousClock.now - t0).seconds / Double(count)

        func f(_ x: Double) -> String { String(format: "%8.0f msg/s", x) }
        print("payfleet-bench: \(count) messages, 500-byte bodies (events ~\(avgBytes) bytes), quorum queues, persistent")
        print("(a) AMQP layer  publish with confirms (batch \(confirmBatch)): \(f(publishRate))")
        print("(a) AMQP layer  consume with acks (prefetch \(prefetch)):      \(f(consumeRate))")
        print("(b) runtime     consume → SQLite dedupe + group commit → ack: \(f(runtimeRate))")
        print(String(format: "    %.0f batches, %.1f events per transaction, %.2f ms per batch", batches, Double(count) / max(batches, 1), 1000 * batchSeconds / max(batches, 1)))
        print(String(format: "    decoding an event: %.1f µs", decodeUS))
        print(String(format: "ratio (b)/(a consume) = %.2f   (b)/(a publish) = %.2f", runtimeRate / consumeRate, runtimeRate / publishRate))
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
