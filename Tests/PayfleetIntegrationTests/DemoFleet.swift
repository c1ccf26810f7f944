import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker

/// One demo worker under test: its own queue names, config, SQLite file and process.
final class DemoFleet: @unchecked Sendable {
    let name: String
    let dir: String
    let configPath: String
    let topology: WorkerTopology
    let amqp: AMQPConfiguration
    let adminPort: Int
    var process: ChildProcess?
    var starts = 0
    let logger = Logger(label: "test")

    init(prefix: String, retryDelays: [String] = ["200ms", "400ms", "800ms"], deliveryLimit: Int = 20, batchSize: Int = 200)
        throws
    {
        name = TestEnvironment.uniqueName(prefix)
        dir = TestEnvironment.makeTempDir(prefix)
        configPath = dir + "/payfleet.yaml"
        adminPort = Int.random(in: 30_000...39_999)
        amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        topology = WorkerTopology(
            name: name, routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue),
            retryDelaysMS: retryDelays.map { ConfigSection.parseDurationMS($0)! }, deliveryLimit: deliveryLimit)
        let yaml = """
            broker:
              url: \(TestEnvironment.amqpURL)
              heartbeat: 10s
            state_dir: \(dir)/state
            log_level: info
            demo-worker:
              name: \(name)
              admin_port: \(adminPort)
              batch_size: \(batchSize)
              retry_delays: [\(retryDelays.joined(separator: ", "))]
              delivery_limit: \(deliveryLimit)
            """
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Runs `body` with a fresh fleet and always cleans up (queues, process, files) afterwards,
    /// unless `PAYFLEET_TEST_KEEP` is set (to inspect a failure).
    static func with(
        prefix: String, retryDelays: [String] = ["200ms", "400ms", "800ms"], deliveryLimit: Int = 20, batchSize: Int = 200,
        _ body: (DemoFleet) async throws -> Void
    ) async throws {
        let fleet = try DemoFleet(prefix: prefix, retryDelays: retryDelays, deliveryLimit: deliveryLimit, batchSize: batchSize)
        do {
            try await body(fleet)
        } catch {
            await fleet.cleanup()
            throw error
        }
        await fleet.cleanup()
    }

    var dbPath: String { dir + "/state/\(name).sqlite" }
    var queue: String { topology.queue(partition: 0) }

    func start() throws {
        starts += 1
        process = try ChildProcess(
            executable: TestEnvironment.binDir + "/payfleet-demo-worker", arguments: ["--config", configPath],
            logPath: dir + "/worker-\(starts).log")
    }

    /// Declares the topology so messages published before the worker starts are kept.
    func declare() async throws {
        let s = try await AMQPSession.connect(amqp)
        let topo = topology
        try await s.declare { try $0.declare(worker: topo) }
        await s.close()
    }

    func publisher() -> AMQPPublisher {
        AMQPPublisher(configuration: amqp, name: "test-pub", logger: logger)
    }

    /// Publishes events to the worker's queue through the default exchange (so other tests'
    /// queues bound to `payfleet.events` do not receive them), with confirms, retrying failures.
    func publish(_ events: [PaymentEvent], via pub: AMQPPublisher, chunk: Int = 500) async throws {
        var i = 0
        while i < events.count {
            let slice = Array(events[i..<min(i + chunk, events.count)])
            let out = slice.map { e in
                AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: EventFactory.body(e), messageID: e.id))
            }
            let results = await pub.publish(batch: out)
            if results.allSatisfy({ if case .success = $0 { return true } else { return false } }) {
                i += chunk
            } else {
                // Republish the chunk: the worker dedupes whatever did arrive.
                _ = await pub.waitUntilConnected(timeout: .seconds(60))
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func publishRaw(_ body: [UInt8], id: String, via pub: AMQPPublisher) async throws {
        try await pub.publish(AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: body, messageID: id)))
    }

    /// (rows in `applied`, distinct event ids, sum of amounts)
    func applied() throws -> (rows: Int, distinct: Int, sum: Int64) {
        guard FileManager.default.fileExists(atPath: dbPath) else { return (0, 0, 0) }
        let db = try SQLiteConnection(path: dbPath, readOnly: true)
        guard let r = try? db.queryOne("SELECT COUNT(*), COUNT(DISTINCT event_id), COALESCE(SUM(amount), 0) FROM applied")
        else { return (0, 0, 0) }
        return (Int(r.int(0)!), Int(r.int(1)!), r.int(2)!)
    }

    /// True once at least `rows` (or `distinct`) effects exist and the main queue is empty.
    func drained(rows: Int = 0, distinct: Int = 0) async throws -> Bool {
        let a = try applied()
        guard a.rows >= rows, a.distinct >= distinct else { return false }
        return try await depth(queue) == 0
    }

    func appliedOrder() throws -> [String] {
        let db = try SQLiteConnection(path: dbPath, readOnly: true)
        return try db.query("SELECT event_id FROM applied ORDER BY seq").compactMap { $0.string(0) }
    }

    func depth(_ queue: String) async throws -> Int {
        let s = try await AMQPSession.connect(amqp)
        defer { Task { await s.close() } }
        return try await s.inspect(queue: queue).messages
    }

    func metrics() async -> String {
        guard let url = URL(string: "http://127.0.0.1:\(adminPort)/metrics"),
            let (data, _) = try? await URLSession.shared.data(from: url)
        else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    func metric(_ name: String) async -> Int? {
        for line in await metrics().split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            if let v = line.split(separator: " ").last, let d = Double(v) { return Int(d) }
        }
        return nil
    }

    /// All messages in the DLQ (fetched and requeued, so the queue is left as it was).
    func deadLetters() async throws -> [AMQPMessage] {
        let s = try await AMQPSession.connect(amqp)
        var out: [AMQPMessage] = []
        while let m = try await s.get(queue: topology.dlq) { out.append(m.message) }
        await s.close()  // unacked: they return to the queue
        return out
    }

    func cleanup() async {
        await process?.killNow()
        if ProcessInfo.processInfo.environment["PAYFLEET_TEST_KEEP"] != nil { return }
        if let s = try? await AMQPSession.connect(amqp) {
            let queues = topology.declarations.queues.map(\.name)
            _ = try? await s.declare { d in for q in queues { try d.delete(queue: q) } }
            await s.close()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}
