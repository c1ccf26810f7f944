/// Names and arguments of Payfleet's RabbitMQ topology (DESIGN §4), as plain data so the
/// processes declare it and the CLI exports it from one description.
public enum Topology {
    /// The topic exchange every event is published to (routing key = event type).
    public static let eventsExchange = "payfleet.events"
    /// settlement-aggregator's default `day_closed_queue`: the feed of its day closes, which the
    /// worker declares and binds itself (it is not part of its `Topology`).
    public static func dayClosedFeed(worker: String) -> String { "payfleet.\(worker).day_closed" }
    /// The partition-key headers every publisher to `payfleet.events` sets: a worker partitioned
    /// by customer hashes `x-partition-customer`, one partitioned by merchant
    /// `x-partition-merchant` (DESIGN §4 names one header; two are needed because the workers
    /// partition by different keys).
    public static func partitionHeaders(for event: PaymentEvent) -> [String: String] {
        partitionHeaders(customerKey: event.customerKey, merchantID: event.merchantID)
    }

    public static func partitionHeaders(customerKey: String, merchantID: String) -> [String: String] {
        [WorkerTopology.PartitionKey.customer.header: customerKey,
         WorkerTopology.PartitionKey.merchant.header: merchantID]
    }
}

/// What a worker's queues look like: routing keys, partitions, retry tiers, delivery limit.
public struct WorkerTopology: Sendable, Equatable {
    /// How a partitioned worker's events are spread: by customer or by merchant.
    public enum PartitionKey: String, Sendable {
        case customer, merchant
        /// The header the worker's consistent-hash exchange hashes.
        public var header: String { "x-partition-\(rawValue)" }
    }

    public var name: String
    public var routingKeys: [String]
    public var partitions: Int
    public var partitionKey: PartitionKey
    /// Retry tier delays in milliseconds, shortest first.
    public var retryDelaysMS: [Int]
    /// Broker-side redelivery limit on the main queue before it dead-letters by itself.
    public var deliveryLimit: Int

    public init(
        name: String, routingKeys: [String], partitions: Int = 1, partitionKey: PartitionKey = .merchant,
        retryDelaysMS: [Int] = [1_000, 10_000, 60_000, 600_000], deliveryLimit: Int = 20
    ) {
        self.name = name
        self.routingKeys = routingKeys
        self.partitions = max(1, partitions)
        self.partitionKey = partitionKey
        self.retryDelaysMS = retryDelaysMS
        self.deliveryLimit = deliveryLimit
    }

    public var isPartitioned: Bool { partitions > 1 }
    /// `payfleet.W`, or `payfleet.W.pN` when partitioned.
    public func queue(partition: Int) -> String {
        isPartitioned ? "payfleet.\(name).p\(partition)" : "payfleet.\(name)"
    }
    public var allQueues: [String] { (0..<partitions).map { queue(partition: $0) } }
    /// The consistent-hash exchange in front of the partition queues.
    public var partitionExchange: String { "payfleet.\(name).partition" }
    public var dlq: String { "payfleet.\(name).dlq" }

    /// `payfleet.W.retry.1s` (per partition when partitioned, so a retried event returns to
    /// the instance that owns its key).
    public func retryQueue(delayMS: Int, partition: Int) -> String {
        queue(partition: partition) + ".retry." + Self.label(ms: delayMS)
    }

    public static func label(ms: Int) -> String {
        if ms % 3_600_000 == 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Every queue with its arguments, and every binding, in a fixed order.
    public var declarations: (queues: [QueueSpec], exchanges: [ExchangeSpec], bindings: [BindingSpec]) {
        var queues: [QueueSpec] = []
        var exchanges: [ExchangeSpec] = []
        var bindings: [BindingSpec] = []
        queues.append(
            QueueSpec(name: dlq, arguments: ["x-queue-type": .string("quorum")]))
        if isPartitioned {
            exchanges.append(
                ExchangeSpec(name: partitionExchange, type: "x-consistent-hash",
                             arguments: ["hash-header": .string(partitionKey.header)]))
            for key in routingKeys {
                bindings.append(BindingSpec(source: Topology.eventsExchange, destination: partitionExchange,
                                            destinationType: .exchange, routingKey: key))
            }
        }
        for p in 0..<partitions {
            let q = queue(partition: p)
            var args: [String: AMQPArgument] = [
                "x-queue-type": .string("quorum"),
                "x-delivery-limit": .int(deliveryLimit),
                "x-dead-letter-exchange": .string(""),
                "x-dead-letter-routing-key": .string(dlq),
                "x-dead-letter-strategy": .string("at-least-once"),
                "x-overflow": .string("reject-publish"),
            ]
            if isPartitioned { args["x-single-active-consumer"] = .bool(true) }
            queues.append(QueueSpec(name: q, arguments: args))
            if isPartitioned {
                // Bound in a fixed order with equal weight: the key → queue mapping depends on it.
                bindings.append(BindingSpec(source: partitionExchange, destination: q, destinationType: .queue,
                                            routingKey: "1"))
            } else {
                for key in routingKeys {
                    bindings.append(BindingSpec(source: Topology.eventsExchange, destination: q,
                                                destinationType: .queue, routingKey: key))
                }
            }
            for delay in retryDelaysMS {
                queues.append(QueueSpec(name: retryQueue(delayMS: delay, partition: p), arguments: [
                    "x-queue-type": .string("quorum"),
                    "x-message-ttl": .int(delay),
                    "x-dead-letter-exchange": .string(""),
                    "x-dead-letter-routing-key": .string(q),
                    "x-dead-letter-strategy": .string("at-least-once"),
                    "x-overflow": .string("reject-publish"),
                ]))
            }
        }
        return (queues, exchanges, bindings)
    }
}

/// A queue argument value (the subset of AMQP field values Payfleet uses).
public enum AMQPArgument: Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
}

public struct QueueSpec: Sendable, Equatable {
    public var name: String
    public var arguments: [String: AMQPArgument]
    public init(name: String, arguments: [String: AMQPArgument]) {
        self.name = name
        self.arguments = arguments
    }
}

public struct ExchangeSpec: Sendable, Equatable {
    public var name: String
    public var type: String
    public var arguments: [String: AMQPArgument]
    public init(name: String, type: String, arguments: [String: AMQPArgument] = [:]) {
        self.name = name
        self.type = type
        self.arguments = arguments
    }
}

public struct BindingSpec: Sendable, Equatable {
    public enum DestinationType: String, Sendable { case queue, exchange }
    public var source: String
    public var destination: String
    public var destinationType: DestinationType
    public var routingKey: String
    public init(source: String, destination: String, destinationType: DestinationType, routingKey: String) {
        self.source = source
        self.destination = destination
        self.destinationType = destinationType
        self.routingKey = routingKey
    }
}

extension Topology {
    /// The fleet's workers (`WorkerIdentity.fleet`) as name / routing keys / partition key
    /// tuples, for callers written before `WorkerIdentity` (payfleet-bench).
    /// A RabbitMQ definitions document (the format `rabbitmqctl import_definitions` and the
    /// management API accept) for the events exchange and the given workers.
    public static func definitions(workers: [WorkerTopology], vhost: String = "/") -> [String: Any] {
        var exchanges: [[String: Any]] = [[
            "name": eventsExchange, "vhost": vhost, "type": "topic", "durable": true, "auto_delete": false,
            "internal": false, "arguments": [String: Any](),
        ]]
        var queues: [[String: Any]] = []
        var bindings: [[String: Any]] = []
        func json(_ a: [String: AMQPArgument]) -> [String: Any] {
            a.mapValues { v -> Any in
                switch v {
                case .string(let s): return s
                case .int(let i): return i
                case .bool(let b): return b
                }
            }
        }
        for w in workers {
            let d = w.declarations
            for e in d.exchanges {
                exchanges.append([
                    "name": e.name, "vhost": vhost, "type": e.type, "durable": true, "auto_delete": false,
                    "internal": false, "arguments": json(e.arguments),
                ])
            }
            for q in d.queues {
                queues.append(["name": q.name, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": json(q.arguments)])
            }
            for b in d.bindings {
                bindings.append([
                    "source": b.source, "vhost": vhost, "destination": b.destination,
                    "destination_type": b.destinationType.rawValue, "routing_key": b.routingKey, "arguments": [String: Any](),
                ])
            }
        }
        return ["rabbit_version": "3.10.8", "vhosts": [["name": vhost]], "exchanges": exchanges, "queues": queues, "bindings": bindings]
    }
}

/// Least-privilege broker users (DESIGN §4, deploy/rabbitmq): one user per process, with
/// RabbitMQ's configure / write / read permission patterns.
public struct BrokerPermission: Sendable, Equatable {
    public var user: String
    public var configure: String
    public var write: String
    public var read: String
}

extension Topology {
    static func escape(_ name: String) -> String {
        name.replacingOccurrences(of: ".", with: "\\.")
    }

    /// Ingest may declare and write `payfleet.events` only. A worker may declare, read and write
    /// its own queues and exchanges (`payfleet.W`, `.pN`, `.retry.*`, `.dlq`, `.partition`), read
    /// (bind from) `payfleet.events`, and write the default exchange, through which it republishes
    /// to its retry tiers and DLQ; workers in `publishers` (settlement-aggregator's
    /// `settlement.day_closed`) may also write `payfleet.events`. The operator user (the CLI:
    /// topology, DLQ replay) has everything.
    public static func permissions(workers: [WorkerTopology], publishers: Set<String> = [WorkerIdentity.settlementAggregator.name])
        -> [BrokerPermission]
    {
        let events = escape(eventsExchange)
        // No process may configure `payfleet.events` (configure allows deleting it): the
        // operator declares it, the processes only check for it (`broker.declare_events_exchange: false`).
        var out = [BrokerPermission(user: "payfleet-ingest", configure: "^$", write: "^\(events)$", read: "^$")]
        for w in workers {
            let own = "payfleet\\.\(escape(w.name))(\\..+)?"
            out.append(BrokerPermission(
                user: "payfleet-\(w.name)",
                configure: "^\(own)$",
                write: publishers.contains(w.name) ? "^(amq\\.default|\(events)|\(own))$" : "^(amq\\.default|\(own))$",
                read: "^(\(events)|\(own))$"))
        }
        out.append(BrokerPermission(user: "payfleet-operator", configure: ".*", write: ".*", read: ".*"))
        return out
    }

    /// `users` and `permissions` entries for a definitions file. Users have no password
    /// (`password_hash` empty: they cannot log in until one is set with
    /// `rabbitmqctl change_password`, which `deploy/install.sh` does from the credential files).
    public static func accessDefinitions(workers: [WorkerTopology], vhost: String = "/") -> [String: Any] {
        let perms = permissions(workers: workers)
        return [
            "users": perms.map { p -> [String: Any] in
                ["name": p.user, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                 "tags": p.user == "payfleet-operator" ? ["management"] : [String]()]
            },
            "permissions": perms.map { p -> [String: Any] in
                ["user": p.user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read]
            },
        ]
    }
}
