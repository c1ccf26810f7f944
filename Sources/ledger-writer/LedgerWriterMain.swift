import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetWorker

/// `ledger-writer`: the shared worker runtime with the ledger handler (DESIGN §5a).
@main
struct LedgerWriterMain {
    static func main() async {
        let routingKeys = Topology.fleet.first { $0.name == "ledger-writer" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "ledger-writer", routingKeys: routingKeys, partitionKey: .merchant, defaultAdminPort: 9111
        ) { section, _, merchants, logger in
            try LedgerHandler(section: section, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
