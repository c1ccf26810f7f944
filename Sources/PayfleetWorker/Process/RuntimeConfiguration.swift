import Foundation
import PayfleetAMQP
import PayfleetCore

/// Runtime settings of one worker process, read from `broker:`, `state_dir` and the worker's
/// own section (e.g. `ledger-writer:`) of `config/payfleet.yaml`.
///
/// Keys in the worker section (all optional):
/// - `admin_host` (string, `127.0.0.1`), `admin_port` (int, per worker; partition N adds N; 0 = any free port)
/// - `partitions` (int, 1): number of partition queues; this instance owns `--partition N`
/// - `batch_size` (int, 200): prefetch and the most deliveries applied in one transaction
/// - `retry_delays` (list of durations, `[1s, 10s, 1m, 10m]`)
/// - `delivery_limit` (int, 20): broker redeliveries before the broker dead-letters by itself
/// - `processed_retention` (duration, `35d`): how long processed event ids are kept
/// - `effect_concurrency` (int): external effects performed at once; default 8, or what the handler
///   asks for when its effects only write local files (sandbox connectors: the whole batch)
/// - `state_dir` (string, the top-level `state_dir`): this worker's directory (production: one per
///   process, `/var/lib/payfleet/<worker>`, each owned by the process's own user)
/// - `state_file` (string): SQLite path, default `<state_dir>/<worker>[.pN].sqlite`
/// - `name` (string, the worker's name): queue-name stem, to run two fleets on one broker
public struct RuntimeConfiguration: Sendable {
    public var worker: String
    public var partition: Int
    public var amqp: AMQPConfiguration
    public var topology: WorkerTopology
    public var statePath: String
    public var adminHost: String
    public var adminPort: Int
    public var batchSize: Int
    public var processedRetentionMS: Int
    /// nil: not configured (`WorkerHandler.localEffectConcurrency`, else 8).
    public var effectConcurrency: Int?

    public init(
        worker: String, partition: Int = 0, amqp: AMQPConfiguration, topology: WorkerTopology, statePath: String,
        adminHost: String = "127.0.0.1", adminPort: Int = 0, batchSize: Int = RuntimeConfiguration.defaultBatchSize,
        processedRetentionMS: Int = 35 * 86_400_000, effectConcurrency: Int? = nil
    ) {
        self.worker = worker
        self.partition = partition
        self.amqp = amqp
        self.topology = topology
        self.statePath = statePath
        self.adminHost = adminHost
        self.adminPort = adminPort
        self.batchSize = batchSize
        self.processedRetentionMS = processedRetentionMS
        self.effectConcurrency = effectConcurrency
    }

    /// Every partition's state file: `statePath` for an unpartitioned worker, else
    /// `<name>.pN.sqlite` for each partition in `statePath`'s directory.
    public var partitionStatePaths: [String] {
        let n = topology.partitions
        guard n > 1 else { return [statePath] }
        let dir = (statePath as NSString).deletingLastPathComponent
        return (0..<n).map {
            (dir as NSString).appendingPathComponent(
                WorkerIdentity.stateFileName(name: worker, partition: $0, partitions: n))
        }
    }

    /// Reads the broker section: `url` or `url_file` (secret), `heartbeat` (duration, 30s),
    /// `ca_file`, `cert_file`, `key_file`, `verify_peer` (bool, true). `management_url` is read by the CLI.
    public static func readBroker(_ root: ConfigSection) throws(ConfigError) -> AMQPConfiguration {
        let b = try root.section("broker")
        let url = try b.secret("url") ?? "amqp://guest:guest@127.0.0.1:5672/"
        var amqp: AMQPConfiguration
        do { amqp = try AMQPConfiguration(url: url) } catch {
            throw ConfigError(key: b.dotted("url"), message: error.message)
        }
        amqp.heartbeatSeconds = try b.durationMS("heartbeat", default: amqp.heartbeatSeconds * 1000) / 1000
        amqp.caFile = try b.string("ca_file") ?? amqp.caFile
        amqp.certFile = try b.string("cert_file") ?? amqp.certFile
        amqp.keyFile = try b.string("key_file") ?? amqp.keyFile
        amqp.verifyPeer = try b.bool("verify_peer", default: amqp.verifyPeer)
        amqp.declareEventsExchange = try b.bool("declare_events_exchange", default: true)
        if let hosts = try b.stringList("hosts") {
            // A cluster: the URL gives user, password, vhost and TLS; these give the nodes.
            var nodes: [AMQPConfiguration.Endpoint] = []
            for (i, h) in hosts.enumerated() {
                guard let e = AMQPConfiguration.Endpoint.parse(h, defaultPort: amqp.port) else {
                    throw ConfigError(key: b.dotted("hosts") + "[\(i)]", message: "'\(h)' is not host or host:port")
                }
                nodes.append(e)
            }
            guard !nodes.isEmpty else { throw ConfigError(key: b.dotted("hosts"), message: "must list at least one node") }
            amqp.endpoints = nodes
            amqp.host = nodes[0].host
            amqp.port = nodes[0].port
        }
        b.ignore(["management_url", "management_url_file"])
        return amqp
    }

    /// Reads the runtime keys of `section` for the worker `identity`.
    public static func read(
        root: ConfigSection, section: ConfigSection, identity: WorkerIdentity, partition: Int
    ) throws(ConfigError) -> RuntimeConfiguration {
        try read(
            root: root, section: section, worker: identity.name, routingKeys: identity.routingKeys,
            partitionKey: identity.partitionKey, defaultAdminPort: identity.defaultAdminPort, partition: partition)
    }

    /// Reads the runtime keys of `section` for worker `worker`.
    public static func read(
        root: ConfigSection, section s: ConfigSection, worker: String, routingKeys: [String],
        partitionKey: WorkerTopology.PartitionKey, defaultAdminPort: Int, partition: Int
    ) throws(ConfigError) -> RuntimeConfiguration {
        let amqp = try readBroker(root)
        let worker = try s.string("name", default: worker)
        let stateDir = try s.string("state_dir", default: try root.stateDir())
        let partitions = try s.int("partitions", default: 1, range: 1...256)
        guard (0..<partitions).contains(partition) else {
            throw ConfigError(key: s.dotted("partitions"),
                              message: "instance partition \(partition) is outside 0..<\(partitions)")
        }
        var delays: [Int] = []
        if let list = try s.stringList("retry_delays") {
            for (i, d) in list.enumerated() {
                guard let ms = ConfigSection.parseDurationMS(d), ms > 0 else {
                    throw ConfigError(key: s.dotted("retry_delays") + "[\(i)]", message: "'\(d)' is not a duration")
                }
                delays.append(ms)
            }
        } else {
            delays = [1_000, 10_000, 60_000, 600_000]
        }
        let topo = WorkerTopology(
            name: worker, routingKeys: routingKeys, partitions: partitions, partitionKey: partitionKey,
            retryDelaysMS: delays, deliveryLimit: try s.int("delivery_limit", default: 20, range: 1...1000))
        let file = topo.stateFileName(partition: partition)
        let basePort = try s.int("admin_port", default: defaultAdminPort, range: 0...65535)
        return RuntimeConfiguration(
            worker: worker, partition: partition, amqp: amqp, topology: topo,
            statePath: try s.string("state_file", default: (stateDir as NSString).appendingPathComponent(file)),
            adminHost: try s.string("admin_host", default: "127.0.0.1"),
            adminPort: basePort == 0 ? 0 : basePort + partition,
            batchSize: try batchSize(s),
            processedRetentionMS: try s.durationMS("processed_retention", default: 35 * 86_400_000),
            effectConcurrency: s.has("effect_concurrency") ? try s.int("effect_concurrency", default: 8, range: 1...256) : nil)
    }

    /// `batch_size` when not configured.
    public static let defaultBatchSize = 200

    /// `<section>.batch_size` (200; 1…5,000): also read by a handler whose memory it bounds.
    public static func batchSize(_ s: ConfigSection) throws(ConfigError) -> Int {
        try s.int("batch_size", default: defaultBatchSize, range: 1...5000)
    }
}
