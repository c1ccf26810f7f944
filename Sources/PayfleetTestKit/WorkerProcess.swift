import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// One worker process under test against the private broker: its own queue names (a unique
/// `name:`), a config file, a state directory and the process. Every worker's integration
/// tests use it (demo worker, ledger-writer, crm-sync, receipt-sender, settlement-aggregator).
public final class WorkerProcess: @unchecked Sendable {
    public struct Options: Sendable {
        /// The executable in `TestEnvironment.binDir` (`ledger-writer`, `payfleet-demo-worker`, …).
        public var executable: String
        /// The worker's config section (`ledger-writer`, `demo-worker`, …).
        public var section: String
        public var prefix: String
        public var routingKeys: [String]
        public var partitionKey: WorkerTopology.PartitionKey
        public var retryDelays: [String] = ["200ms", "400ms", "800ms"]
        public var deliveryLimit = 20
        public var batchSize = 200
        public var partitions = 1
        /// The broker URL the worker is configured with (default: the test broker's amqp URL).
        public var brokerURL: String?
        /// Cluster nodes (`host:port`) written as `broker.hosts` (the worker fails over among them).
        public var brokerHosts: [String] = []
        /// Admin port in the config; nil picks a random one, 0 lets every instance take a free port.
        public var adminPort: Int?
        /// YAML appended at the top level (e.g. a `merchants:` list); `{dir}` is replaced by the
        /// fleet's temp directory.
        public var topLevelYAML = ""
        /// YAML lines appended inside the worker's section, indented two spaces; `{dir}` as above.
        public var sectionYAML: [String] = []

        public init(
            executable: String, section: String, prefix: String, routingKeys: [String],
            partitionKey: WorkerTopology.PartitionKey = .merchant
        ) {
            self.executable = executable
            self.section = section
            self.prefix = prefix
            self.routingKeys = routingKeys
            self.partitionKey = partitionKey
        }

        /// The options for one of the fleet's workers (`WorkerIdentity`), with its routing keys.
        public static func worker(_ name: String, prefix: String) -> Options {
            let spec = WorkerIdentity(rawValue: name)!
            return Options(
                executable: name, section: name, prefix: prefix, routingKeys: spec.routingKeys,
                partitionKey: spec.partitionKey)
        }
    }

    public let options: Options
    public let name: String
    public let dir: String
    public let configPath: String
    public let topology: WorkerTopology
    public let amqp: AMQPConfiguration
    public let adminPort: Int
    public var process: ChildProcess?
    public private(set) var starts = 0
    public let logger = Logger(label: "test")

    public init(_ options: Options) throws {
        self.options = options
        name = TestEnvironment.uniqueName(options.prefix)
        dir = TestEnvironment.makeTempDir(options.prefix)
        configPath = dir + "/payfleet.yaml"
        adminPort = options.adminPort ?? Int.random(in: 30_000...49_999)
        var amqp = try AMQPConfiguration(url: options.brokerURL ?? TestEnvironment.amqpURL)
        amqp.endpoints = options.brokerHosts.compactMap { AMQPConfiguration.Endpoint.parse($0, defaultPort: 5672) }
        self.amqp = amqp
        topology = WorkerTopology(
            name: name, routingKeys: options.routingKeys, partitions: options.partitions,
            partitionKey: options.partitionKey, retryDelaysMS: options.retryDelays.map { ConfigSection.parseDurationMS($0)! },
            deliveryLimit: options.deliveryLimit)
        try writeConfig()
    }

    /// (Re)writes the config file from `options` (tests may change the section and restart).
    public func writeConfig(sectionYAML: [String]? = nil) throws {
        let extra = (sectionYAML ?? options.sectionYAML).map { "  " + $0 }.joined(separator: "\n")
        let yaml = """
            broker:
              url: "\(options.brokerURL ?? TestEnvironment.amqpURL)"
              heartbeat: 10s
            \(options.brokerHosts.isEmpty ? "" : "  hosts: [" + options.brokerHosts.joined(separator: ", ") + "]")
            state_dir: \(dir)/state
            log_level: info
            \(options.topLevelYAML)
            \(options.section):
              name: \(name)
              admin_port: \(adminPort)
              batch_size: \(options.batchSize)
              retry_delays: [\(options.retryDelays.joined(separator: ", "))]
              delivery_limit: \(options.deliveryLimit)
              partitions: \(options.partitions)
            \(extra)

            """
        try yaml.replacingOccurrences(of: "{dir}", with: dir).write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Runs `body` with a fresh fleet and always cleans up (queues, process, files) afterwards,
    /// unless `PAYFLEET_TEST_KEEP` is set (to inspect a failure).
    public static func with(_ options: Options, _ body: (WorkerProcess) async throws -> Void) async throws {
        let fleet = try WorkerProcess(options)
        do {
            try await body(fleet)
        } catch {
            await fleet.cleanup()
            throw error
        }
        await fleet.cleanup()
    }

    /// The unpartitioned state file (`<name>.sqlite`).
    public var dbPath: String { dir + "/state/" + WorkerIdentity.stateFileName(name: name, partition: 0, partitions: 1) }
    public func dbPath(partition: Int) -> String {
        dir + "/state/" + WorkerIdentity.stateFileName(name: name, partition: partition, partitions: options.partitions)
    }
    public var queue: String { topology.queue(partition: 0) }
    public var adminURL: String { "http://127.0.0.1:\(adminPort)" }

    public func start(environment: [String: String] = [:]) throws {
        starts += 1
        process = try ChildProcess(
            executable: TestEnvironment.binDir + "/" + options.executable, arguments: ["--config", configPath],
            environment: environment, logPath: dir + "/worker-\(starts).log")
    }

    /// Starts one more instance for `partition` (several per partition: hot standbys).
    public func startInstance(partition: Int, environment: [String: String] = [:]) throws -> ChildProcess {
        starts += 1
        return try ChildProcess(
            executable: TestEnvironment.binDir + "/" + options.executable,
            arguments: ["--config", configPath, "--partition", String(partition)],
            environment: environment, logPath: dir + "/worker-p\(partition)-\(starts).log")
    }

    /// Declares the topology so messages published before the worker starts are kept.
    public func declare() async throws {
        let s = try await AMQPSession.connect(amqp)
        let topo = topology
        try await s.declare { try $0.declare(worker: topo) }
        await s.close()
    }

    public func publisher() -> AMQPPublisher {
        AMQPPublisher(configuration: amqp, name: "test-pub", logger: logger)
    }

    /// A test publisher, connected (throws when the broker does not answer within 60 s).
    public func connectedPublisher() async throws -> AMQPPublisher {
        let pub = publisher()
        guard await pub.waitUntilConnected(timeout: .seconds(60)) else {
            pub.close()
            throw TestFailure("the test publisher did not connect to the broker within 60 s")
        }
        return pub
    }

    /// Publishes events to the worker's queue through the default exchange (so other tests'
    /// queues bound to `payfleet.events` do not receive them), with confirms, retrying failures
    /// (the worker dedupes whatever did arrive twice).
    public func publish(_ events: [PaymentEvent], via pub: AMQPPublisher, chunk: Int = 500) async throws {
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

    /// One event as ingest's relay publishes it to a partitioned worker: to the worker's
    /// consistent-hash exchange, its type as routing key, the partition headers set.
    public func partitioned(_ e: PaymentEvent) -> AMQPOutgoing {
        var headers: [String: AMQPFieldValue] = [:]
        for (k, v) in Topology.partitionHeaders(for: e) { headers[k] = .string(v) }
        return AMQPOutgoing(
            exchange: topology.partitionExchange, routingKey: e.type.rawValue,
            message: AMQPMessage(body: EventFactory.body(e), messageID: e.id, headers: headers))
    }

    /// Publishes `events` in order to the partition exchange, 250 at a time with confirms: at
    /// the first refused one (a broker node lost, a partition), waits 100 ms and sends again
    /// from there, so each key's events keep their order (the worker dedupes a copy that did
    /// arrive).
    public func publishPartitioned(_ events: some Collection<PaymentEvent>, via pub: AMQPPublisher) async {
        var rest = Array(events)
        while !rest.isEmpty {
            let chunk = Array(rest.prefix(250))
            let results = await pub.publish(batch: chunk.map(partitioned))
            let ok = results.prefix { if case .success = $0 { true } else { false } }.count
            rest.removeFirst(ok)
            if ok < chunk.count { try? await Task.sleep(for: .milliseconds(100)) }
        }
    }

    public func publishRaw(_ body: [UInt8], id: String, via pub: AMQPPublisher) async throws {
        try await pub.publish(AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: body, messageID: id)))
    }

    /// Opens the worker's SQLite file read-only (nil before the worker created it).
    public func database() throws -> SQLiteConnection? {
        guard FileManager.default.fileExists(atPath: dbPath) else { return nil }
        return try SQLiteConnection(path: dbPath, readOnly: true)
    }

    /// `SELECT COUNT(*) FROM table` in the worker's database (0 before it exists).
    public func count(_ table: String, where condition: String? = nil) throws -> Int {
        guard let db = try database() else { return 0 }
        let sql = "SELECT COUNT(*) FROM \(table)" + (condition.map { " WHERE \($0)" } ?? "")
        return Int((try? db.queryOne(sql))?.int(0) ?? 0)
    }

    public func depth(_ queue: String) async throws -> Int {
        let s = try await AMQPSession.connect(amqp)
        defer { Task { await s.close() } }
        return try await s.inspect(queue: queue).messages
    }

    /// GET on the admin port; (status, body) or nil when nothing answers.
    public func admin(_ path: String) async -> (status: Int, body: String)? {
        guard let url = URL(string: adminURL + path),
            let (data, response) = try? await URLSession.shared.data(from: url)
        else { return nil }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    public func metrics() async -> String { await admin("/metrics")?.body ?? "" }

    /// The value of a metric (summed over its label sets), or nil when absent.
    public func metric(_ name: String) async -> Int? {
        // Counters and gauges the tests read are whole numbers ("12" or "12.0").
        var total: Int?
        for line in await metrics().split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard let v = line.split(separator: " ").last else { continue }
            let whole = v.split(separator: ".").first.flatMap { Int($0) }
            if let n = whole { total = (total ?? 0) + n }
        }
        return total
    }

    /// All messages in the DLQ (fetched and requeued, so the queue is left as it was).
    public func deadLetters() async throws -> [AMQPMessage] {
        let s = try await AMQPSession.connect(amqp)
        var out: [AMQPMessage] = []
        while let m = try await s.get(queue: topology.dlq) { out.append(m.message) }
        await s.close()  // unacked: they return to the queue
        return out
    }

    public func cleanup() async {
        if let end = process?.unexpectedEnd, let log = process?.log {
            // The directory (and the log) goes below: keep the end of it where the run shows it.
            let tail = log.split(separator: "\n", omittingEmptySubsequences: false).suffix(30).joined(separator: "\n")
            FileHandle.standardError.write(Data("\(options.executable) \(name) \(end); the end of its log:\n\(tail)\n".utf8))
        }
        await process?.killNow()
        if ProcessInfo.processInfo.environment["PAYFLEET_TEST_KEEP"] != nil { return }
        if let s = try? await AMQPSession.connect(amqp) {
            // settlement-aggregator declares its day-close feed itself (`day_closed_queue`,
            // bound to `payfleet.events`): left behind, it made `settlement.day_closed` routable
            // for every later test on the same broker.
            let ownFeed = options.section == "settlement-aggregator" ? [Topology.dayClosedFeed(worker: name)] : []
            let queues = topology.declarations.queues.map(\.name)
            let exchanges = topology.declarations.exchanges.map(\.name)
            _ = try? await s.declare { d in
                for q in queues { try d.delete(queue: q) }
                for e in exchanges { try d.delete(exchange: e) }
            }
            // Last and on its own: a feed that was never declared cannot cost the deletes above.
            _ = try? await s.declare { d in for q in ownFeed { try d.delete(queue: q) } }
            await s.close()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

