import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Prometheus
import Testing

/// Issue 16 item 2: ingest's outbox and settlement's day closes go through the one
/// `OutboxRelay` (PayfleetWorker) against the private broker — one header set, confirms,
/// `mandatory`: an unroutable event of either stays in its outbox and goes out once routable.
@Suite(.serialized) struct OneRelayTests {
    @Test("A day close and an ingest event through the one relay: the same header set, unroutable → kept and retried, then confirmed and marked sent")
    func bothOutboxesThroughOneRelay() async throws {
        let dir = TestEnvironment.makeTempDir("one-relay")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        // A type nothing else on the broker binds: unroutable until this test binds it.
        let ingestType = "x.one_relay." + TestEnvironment.uniqueName("one-relay")
        let merchant = "m_onerelay_\(UInt32.random(in: 0...999_999))"
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

        // Ingest: one row in its real outbox (ingest.sqlite), published by its relay.
        let outbox = try await Outbox(path: dir + "/ingest.sqlite", logger: Logger(label: "test"))
        try await outbox.store.write { db in
            try db.execute(
                """
                INSERT INTO outbox (id, type, merchant, customer, customer_key, traceparent, body, created_at)
                VALUES ('evt_one_relay', ?, ?, 'cus_42', 'cus_42', ?, ?, ?)
                """,
                [.text(ingestType), .text(merchant), .text(traceparent), .blob(Array("{}".utf8)),
                 .int(Int64(Date().timeIntervalSince1970))])
        }
        let metrics = IngestMetrics()
        let relay = OutboxRelay(outbox: outbox, amqp: amqp, batchSize: 10, metrics: metrics, logger: Logger(label: "test-relay"))
        defer { relay.publisher.close() }

        // Settlement: one due day in its store, closed and published by the day closer's relay.
        let store = try await LocalSettlement.store(dir)
        try await LocalSettlement.apply(
            [event("\(merchant)-1", .paymentSucceeded, merchant: merchant, at: "2026-11-20T10:00:00Z", amount: 1_000, currency: "EUR", fee: 30)],
            handler: SettlementHandler(merchants: SettlementStream.merchants), store: store)
        let registry = PrometheusCollectorRegistry()
        let closer = DayCloser(
            store: store, amqp: amqp, merchants: [:],
            settings: SettlementSettings(graceMS: 0, closeIntervalMS: 100, dayClosedQueue: nil), logger: .init(label: "test"),
            registry: registry)
        defer { closer.relay.publisher.close() }
        #expect(await relay.publisher.waitUntilConnected())
        #expect(await closer.relay.publisher.waitUntilConnected())

        // Nothing bound: both refused by the broker (mandatory), neither dropped.
        let refusedIngest = await relay.round()
        #expect(refusedIngest.sent == 0 && refusedIngest.refused == 1 && !refusedIngest.connectionFailed)
        let refusedClose = await closer.tick()
        #expect(refusedClose.closed == 1 && refusedClose.published == 0)
        #expect(try await outbox.pendingCount() == 1)
        #expect(try await outbox.pending(limit: 10, nowMS: Int64.max).first?.attempts == 1)
        let closesPending = try await store.withConnection { db in
            try db.queryOne("SELECT COUNT(*) FROM settlement_outbox WHERE published_at IS NULL")!.int(0)!
        }
        #expect(closesPending == 1)

        try await withEventsQueue(amqp, prefix: "one-relay", keys: [ingestType, "settlement.day_closed"]) { s, queue in
            // The refused ingest row waits for its own retry (1 s), then goes out; the day close
            // goes out on the closer's next round.
            var ingestSent = 0
            let deadline = ContinuousClock.now + .seconds(10)
            while ingestSent == 0, ContinuousClock.now < deadline {
                ingestSent += await relay.round().sent
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(ingestSent == 1)
            let second = await closer.tick()
            #expect(second.closed == 0 && second.published == 1)
            // Confirmed, then marked sent in each store.
            #expect(try await outbox.pendingCount() == 0)
            let closesLeft = try await store.withConnection { db in
                try db.queryOne("SELECT COUNT(*) FROM settlement_outbox WHERE published_at IS NULL")!.int(0)!
            }
            #expect(closesLeft == 0)
            #expect(try await s.inspect(queue: queue).messages == 2)

            var got: [String: AMQPMessage] = [:]
            while let m = try await s.get(queue: queue) {
                got[m.message.type ?? ""] = m.message
                try await s.ack(m.deliveryTag)
            }
            let fromIngest = try #require(got[ingestType])
            let dayClose = try #require(got["settlement.day_closed"])
            // One header set: the event's schema, merchant and both partition keys on each; the
            // customer and the trace only where the event has them (the quorum queue adds its
            // delivery count).
            func keys(_ m: AMQPMessage) -> Set<String> { Set(m.headers.keys).subtracting(["x-delivery-count"]) }
            #expect(keys(dayClose) == ["x-payfleet-schema", "x-payfleet-merchant", "x-partition-customer", "x-partition-merchant"])
            #expect(keys(fromIngest) == [
                "x-payfleet-schema", "x-payfleet-merchant", "x-partition-customer", "x-partition-merchant",
                "x-payfleet-customer", "traceparent",
            ])
            for m in [dayClose, fromIngest] {
                #expect(m.headers["x-payfleet-schema"]?.stringValue == "payfleet.event/v1")
                #expect(m.headers["x-payfleet-merchant"]?.stringValue == merchant)
                #expect(m.headers["x-partition-merchant"]?.stringValue == merchant)
                #expect(m.persistent)
                #expect(m.timestamp != nil)
            }
            // A day close has no customer: its customer partition key is the merchant.
            #expect(dayClose.headers["x-partition-customer"]?.stringValue == merchant)
            #expect(fromIngest.headers["x-partition-customer"]?.stringValue == "cus_42")
            #expect(fromIngest.headers["x-payfleet-customer"]?.stringValue == "cus_42")
            #expect(fromIngest.headers["traceparent"]?.stringValue == traceparent)
            #expect(fromIngest.messageID == "evt_one_relay" && fromIngest.appID == "ingest")
            #expect(dayClose.appID == "settlement-aggregator")
            let closed = try EventCodec.decode(Data(dayClose.body))
            #expect(dayClose.messageID == closed.id)
            #expect(closed.merchantID == merchant && closed.amount.value == 970 && closed.amount.currency.code == "EUR")
            // Counted as before: ingest's and settlement's own published counters.
            #expect(metrics.text().contains("payfleet_ingest_published_total 1"))
            #expect(registry.emitToString().contains("payfleet_settlement_day_closed_published_total 1"))
        }
    }
}
