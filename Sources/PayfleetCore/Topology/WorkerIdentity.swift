/// Who a Payfleet worker process is, in one place: its name (the executable and the default
/// queue-name stem), its config section, the event types it consumes, the key its partitions
/// split by, its default admin port and the name of its state file (DESIGN §4, §5a). The
/// executables, the runtime's configuration reader, the topology, `payfleet` and `payfleet dev`
/// all read it from here.
public enum WorkerIdentity: String, CaseIterable, Sendable {
    case crmSync = "crm-sync"
    case ledgerWriter = "ledger-writer"
    case receiptSender = "receipt-sender"
    case settlementAggregator = "settlement-aggregator"
    /// The runtime's demonstration worker (`payfleet-demo-worker`): every event type into a
    /// table; not part of the fleet.
    case demoWorker = "demo-worker"

    /// The fleet's workers, in the order `payfleet status`, `payfleet dev` and the topology use.
    public static let fleet: [WorkerIdentity] = [.crmSync, .ledgerWriter, .receiptSender, .settlementAggregator]

    /// The worker's name: the executable (`payfleet-demo-worker` for the demo) and the default
    /// of `<section>.name`, which names its queues and its state file.
    public var name: String { rawValue }

    /// The top-level section of `config/payfleet.yaml` the worker reads (`ledger-writer:`).
    public var configSection: String { rawValue }

    /// The routing keys (event types) its queue is bound to.
    public var routingKeys: [String] {
        switch self {
        case .crmSync:
            ["payment.succeeded", "payment.failed", "payment.refunded", "payment.disputed", "dispute.closed",
             "invoice.issued", "refund.failed", "payment.reversed"]
        case .ledgerWriter:
            ["payment.succeeded", "payment.failed", "payment.refunded", "payment.disputed", "dispute.closed",
             "invoice.issued", "payout.paid", "refund.failed", "payment.reversed", "payout.failed", "fee.assessed"]
        case .receiptSender:
            ["payment.succeeded", "payment.refunded"]
        case .settlementAggregator:
            ["payment.succeeded", "payment.failed", "payment.refunded", "payment.disputed", "dispute.closed",
             "payout.paid", "refund.failed", "payment.reversed", "payout.failed", "fee.assessed"]
        case .demoWorker:
            PaymentEvent.EventType.allCases.map(\.rawValue)
        }
    }

    /// What its partitions split by: a customer's history stays on one instance, a merchant's
    /// books on one instance.
    public var partitionKey: WorkerTopology.PartitionKey {
        switch self {
        case .crmSync, .receiptSender: .customer
        case .ledgerWriter, .settlementAggregator, .demoWorker: .merchant
        }
    }

    /// `<section>.admin_port` when the file does not set it; partition N listens on port + N.
    public var defaultAdminPort: Int {
        switch self {
        case .crmSync: 9101
        case .ledgerWriter: 9111
        case .receiptSender: 9121
        case .settlementAggregator: 9131
        case .demoWorker: 9190
        }
    }

    /// The worker's state file in its state directory: `<name>.sqlite`, or `<name>.pN.sqlite`
    /// for partition N of a partitioned worker.
    public func stateFileName(partition: Int, partitions: Int) -> String {
        Self.stateFileName(name: name, partition: partition, partitions: partitions)
    }

    /// The state file name for a worker named `name` (`<section>.name` may rename a worker).
    public static func stateFileName(name: String, partition: Int, partitions: Int) -> String {
        partitions > 1 ? "\(name).p\(partition).sqlite" : "\(name).sqlite"
    }
}

extension WorkerTopology {
    /// This worker's state file for `partition` (`<name>.sqlite`, or `<name>.pN.sqlite`).
    public func stateFileName(partition: Int) -> String {
        WorkerIdentity.stateFileName(name: name, partition: partition, partitions: partitions)
    }
}
