import Foundation
import PayfleetCore
import PayfleetReceipts
import PayfleetWorker

/// `receipt-sender`: the shared worker runtime with the receipt handler (email / SMS receipts).
@main
struct ReceiptSenderMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = WorkerMain.usage(
        worker: "receipt-sender", defaultAdminPort: 9121,
        summary: """
            Email and SMS receipts, exactly once per payment.succeeded / payment.refunded: consumes
            payment events from its RabbitMQ queue; state in receipt-sender[.pN].sqlite.
            """)

    static func main() async {
        WorkerMain.exitOnHelp(usage)
        let routingKeys = Topology.fleet.first { $0.name == "receipt-sender" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "receipt-sender", routingKeys: routingKeys, partitionKey: .customer, defaultAdminPort: 9121
        ) { section, root, merchants, logger in
            try ReceiptHandler(section: section, root: root, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
