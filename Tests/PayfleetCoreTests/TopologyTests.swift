import Foundation
import PayfleetCore
import Testing

struct TopologyTests {
    @Test func queuesTiersAndDLQOfOneWorker() {
        let t = WorkerTopology(name: "ledger-writer", routingKeys: ["payment.succeeded"], retryDelaysMS: [1000, 60_000])
        let d = t.declarations
        #expect(d.queues.map(\.name) == [
            "payfleet.ledger-writer.dlq", "payfleet.ledger-writer", "payfleet.ledger-writer.retry.1s",
            "payfleet.ledger-writer.retry.1m",
        ])
        let main = d.queues[1].arguments
        #expect(main["x-queue-type"] == .string("quorum"))
        #expect(main["x-dead-letter-strategy"] == .string("at-least-once"))
        #expect(main["x-overflow"] == .string("reject-publish"))
        #expect(main["x-dead-letter-routing-key"] == .string("payfleet.ledger-writer.dlq"))
        #expect(d.queues[2].arguments["x-message-ttl"] == .int(1000))
        #expect(d.queues[2].arguments["x-dead-letter-routing-key"] == .string("payfleet.ledger-writer"))
        #expect(d.bindings.map(\.routingKey) == ["payment.succeeded"])
    }

    @Test func partitionsRouteThroughAConsistentHashExchangeInAFixedOrder() {
        let t = WorkerTopology(name: "crm-sync", routingKeys: ["a", "b"], partitions: 3, partitionKey: .customer)
        let d = t.declarations
        #expect(d.exchanges.first?.type == "x-consistent-hash")
        #expect(d.exchanges.first?.arguments["hash-header"] == .string("x-partition-customer"))
        let toPartitions = d.bindings.filter { $0.source == t.partitionExchange }.map(\.destination)
        #expect(toPartitions == ["payfleet.crm-sync.p0", "payfleet.crm-sync.p1", "payfleet.crm-sync.p2"])
        #expect(d.queues.first { $0.name == "payfleet.crm-sync.p1" }?.arguments["x-single-active-consumer"] == .bool(true))
        #expect(t.retryQueue(delayMS: 10_000, partition: 2) == "payfleet.crm-sync.p2.retry.10s")
    }

    @Test func definitionsFileHasEveryQueueOnce() throws {
        let workers = WorkerIdentity.fleet.map { WorkerTopology(name: $0.name, routingKeys: $0.routingKeys) }
        let defs = Topology.definitions(workers: workers)
        let data = try JSONSerialization.data(withJSONObject: defs)
        let back = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let queues = (back["queues"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(queues.count == Set(queues).count)
        #expect(queues.count == 4 * 6)
        #expect((back["exchanges"] as! [[String: Any]]).contains { $0["name"] as? String == "payfleet.events" && $0["type"] as? String == "topic" })
    }
}
