import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetWorker

/// `crm-sync`: the shared worker runtime with the CRM handler (DESIGN §5a, §6).
@main
struct CRMSyncMain {
    static func main() async {
        let routingKeys = Topology.fleet.first { $0.name == "crm-sync" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "crm-sync", routingKeys: routingKeys, partitionKey: .customer, defaultAdminPort: 9101
        ) { section, root, _, logger in
            try CRMHandler(section: section, root: root, logger: logger)
        }
        exit(code)
    }
}
