import Foundation
import PayfleetCore
import Testing

/// The one description of each worker, against the values DESIGN §4 and the shipped
/// configuration name (written out here, not read from the code under test).
struct WorkerIdentityTests {
    @Test func fleetNamesSectionsAndAdminPorts() {
        #expect(WorkerIdentity.fleet.map(\.name) == ["crm-sync", "ledger-writer", "receipt-sender", "settlement-aggregator"])
        #expect(WorkerIdentity.fleet.map(\.configSection) == WorkerIdentity.fleet.map(\.name))
        #expect(WorkerIdentity.fleet.map(\.defaultAdminPort) == [9101, 9111, 9121, 9131])
        #expect(WorkerIdentity.demoWorker.name == "demo-worker")
        #expect(WorkerIdentity.demoWorker.defaultAdminPort == 9190)
        #expect(!WorkerIdentity.fleet.contains(.demoWorker))
    }

    @Test func partitionKeysAndRoutingKeys() {
        #expect(WorkerIdentity.crmSync.partitionKey == .customer)
        #expect(WorkerIdentity.receiptSender.partitionKey == .customer)
        #expect(WorkerIdentity.ledgerWriter.partitionKey == .merchant)
        #expect(WorkerIdentity.settlementAggregator.partitionKey == .merchant)
        #expect(WorkerIdentity.receiptSender.routingKeys == ["payment.succeeded", "payment.refunded"])
        #expect(Set(WorkerIdentity.ledgerWriter.routingKeys).isSuperset(of: ["payout.paid", "fee.assessed", "invoice.issued"]))
        #expect(!WorkerIdentity.settlementAggregator.routingKeys.contains("invoice.issued"))
        #expect(!WorkerIdentity.crmSync.routingKeys.contains("payout.paid"))
        #expect(WorkerIdentity.demoWorker.routingKeys.count == PaymentEvent.EventType.allCases.count)
    }

    @Test func stateFileNames() {
        #expect(WorkerIdentity.ledgerWriter.stateFileName(partition: 0, partitions: 1) == "ledger-writer.sqlite")
        #expect(WorkerIdentity.ledgerWriter.stateFileName(partition: 2, partitions: 3) == "ledger-writer.p2.sqlite")
        #expect(WorkerIdentity.stateFileName(name: "books", partition: 0, partitions: 2) == "books.p0.sqlite")
        let t = WorkerTopology(name: "crm-x", routingKeys: [], partitions: 4)
        #expect(t.stateFileName(partition: 3) == "crm-x.p3.sqlite")
        #expect(WorkerTopology(name: "crm-x", routingKeys: []).stateFileName(partition: 0) == "crm-x.sqlite")
    }

    @Test func stateDirDefault() throws {
        #expect(try ConfigSection.parse(yaml: "log_level: info\n").stateDir() == ".payfleet/dev/state")
        #expect(try ConfigSection.parse(yaml: "state_dir: /srv/p\n").stateDir() == "/srv/p")
    }
}
