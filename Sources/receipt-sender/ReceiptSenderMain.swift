import Foundation
import PayfleetCore
import PayfleetReceipts
import PayfleetWorker

/// `receipt-sender`: the shared worker runtime with the receipt handler (email / SMS receipts).
@main
struct ReceiptSenderMain {
    static func main() async {
        let routingKeys = Topology.fleet.first { $0.name == "receipt-sender" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "receipt-sender", routingKeys: routingKeys, partitionKey: .customer, defaultAdminPort: 9121
        ) { section, root, merchants, logger in
            try ReceiptHandler(section: section, root: root, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
