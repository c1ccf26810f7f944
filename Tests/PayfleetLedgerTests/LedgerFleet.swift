import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker

/// One `ledger-writer` process under test against the private broker: its own queue names
/// (a unique `name:`), config with `merchants:`, state directory and process. With
/// `worker: "demo-worker"` the same harness runs the runtime's demonstration handler (the
/// benchmark's baseline).
final class LedgerFleet: @unchecked Sendable {
    let worker: String
    let name: String
    let dir: String
    let configPath: String
    let topology: WorkerTopology
    let amqp: AMQPConfiguration
    let adminPort: Int
    var process: ChildProcess?
    var starts = 0
    let logger = Logger(label: "test")

    init(prefix: String, worker: String = "ledger-writer") throws {
        self.worker = worker
        name = TestEnvironment.uniqueName(prefix)
        dir = TestEnvironment.makeTempDir(prefix)
        configPath = dir + "/payfleet.yaml"
        adminPort = Int.random(in: 40_000...49_999)
        amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let routingKeys = worker == "ledger-writer"
            ? Topology.fleet.first { $0.name == "ledger-writer" }!.routingKeys
            : PaymentEvent.EventType.allCases.map(\.rawValue)
        topology = WorkerTopology(
            name: name, routingKeys: routingKeys, partitionKey: .merchant, retryDelaysMS: [200, 400, 800], deliveryLimit: 20)
        let merchants = LedgerStream.merchants.map { m -> String in
            var s = "  - id: \(m.id)\n    timezone: \(m.timeZone)\n"
            s += "    cutoff: \"\(String(format: "%02d:%02d", m.cutoffMinutes / 60, m.cutoffMinutes % 60))\"\n"
            s += "    currencies: [\(m.currencies.joined(separator: ", "))]\n"
            if m.ledgerName != Merchant.accountSegment(m.id) { s += "    ledger_name: \"\(m.ledgerName)\"\n" }
            return s
        }.joined()
        let yaml = """
            broker:
              url: \(TestEnvironment.amqpURL)
              heartbeat: 10s
            state_dir: \(dir)/state
            log_level: info
            merchants:
            \(merchants)
            \(worker):
              name: \(name)
              admin_port: \(adminPort)
              batch_size: 200
              retry_delays: [200ms, 400ms, 800ms]
              delivery_limit: 20
            \(worker == "ledger-writer" ? "  unknown_customer: Unidentified" : "")
            """
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Runs `body` with a fresh worker and always cleans up (queues, process, files) afterwards,
    /// unless `PAYFLEET_TEST_KEEP` is set.
    static func with(
        prefix: String, worker: String = "ledger-writer", _ body: (LedgerFleet) async throws -> Void
    ) async throws {
        let fleet = try LedgerFleet(prefix: prefix, worker: worker)
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
            executable: TestEnvironment.binDir + (worker == "ledger-writer" ? "/ledger-writer" : "/payfleet-demo-worker"), arguments: ["--config", configPath],
            logPath: dir + "/worker-\(starts).log")
    }

    func declare() async throws {
        let s = try await AMQPSession.connect(amqp)
        let topo = topology
        try await s.declare { try $0.declare(worker: topo) }
        await s.close()
    }

    func publisher() -> AMQPPublisher { AMQPPublisher(configuration: amqp, name: "ledger-test-pub", logger: logger) }

    /// Publishes to the worker's queue through the default exchange, with confirms, retrying.
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
                _ = await pub.waitUntilConnected(timeout: .seconds(60))
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Events the worker recorded (posted or not).
    func recorded() throws -> Int {
        guard FileManager.default.fileExists(atPath: dbPath) else { return 0 }
        let db = try SQLiteConnection(path: dbPath, readOnly: true)
        let table = worker == "ledger-writer" ? "ledger_events" : "applied"
        return Int((try? db.queryOne("SELECT COUNT(*) FROM \(table)"))?.int(0) ?? 0)
    }

    func depth(_ queue: String) async throws -> Int {
        let s = try await AMQPSession.connect(amqp)
        defer { Task { await s.close() } }
        return try await s.inspect(queue: queue).messages
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
