import Foundation
import PayfleetAMQP
import PayfleetCLI
import PayfleetCore
import PayfleetSettlement
import PayfleetTestKit
import Testing

extension WorkerProcess {
    /// One `settlement-aggregator` process under test with the stream's merchants.
    static func settlement(prefix: String, section: [String], _ body: (WorkerProcess) async throws -> Void) async throws {
        var o = Options.worker("settlement-aggregator", prefix: prefix)
        o.topLevelYAML = SettlementStream.merchantsYAML
        o.sectionYAML = section
        let fleet = try WorkerProcess(o)
        var failure: Error?
        do { try await body(fleet) } catch { failure = error }
        await fleet.cleanup()
        // The day-closed feed queue is the worker's own, beside the runtime's topology.
        if ProcessInfo.processInfo.environment["PAYFLEET_TEST_KEEP"] == nil, let s = try? await AMQPSession.connect(fleet.amqp) {
            let feed = fleet.feedQueue
            _ = try? await s.declare { try $0.delete(queue: feed) }
            await s.close()
        }
        if let failure { throw failure }
    }

    var feedQueue: String { "payfleet.\(name).day_closed" }

    func report(_ date: String) throws -> String {
        let c = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", date, "--json", "--config", configPath])
        return try (c as! SettlementCommand.Report).render()
    }
}

@Suite(.serialized) struct SettlementIntegrationTests {
    @Test("settlement-aggregator process: a 2,500-event stream with duplicates in any order; report totals equal the stream's sums to the minor unit")
    func totalsThroughWorker() async throws {
        try await WorkerProcess.settlement(prefix: "settle", section: ["grace_period: 3650d", "close_interval: 1s"]) { fleet in
            let stream = SettlementStream(total: 2_500, seed: 2026, prefix: fleet.name)
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(stream.events, via: pub)
            pub.close()
            try fleet.start()
            let done = try await eventually(timeout: .seconds(180)) { try fleet.count("settlement_events") >= stream.uniqueCount }
            #expect(done, "log: \(fleet.process?.log.suffix(2000) ?? "")")
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.queue) == 0 })
            #expect(try fleet.count("settlement_events") == stream.uniqueCount)

            let dates = Set(stream.expected.keys.map(\.day)).sorted()
            var got: [SettlementStream.Key: SettlementStream.Totals] = [:]
            for d in dates { got.merge(try LocalSettlement.parseReport(try fleet.report(d))) { $1 } }
            #expect(got == stream.expected)
            for cur in ["JPY", "BHD"] {
                let keys = stream.expected.keys.filter { $0.currency == cur }
                #expect(!keys.isEmpty && keys.allSatisfy { got[$0] == stream.expected[$0] }, "\(cur)")
            }
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)

            // The built binary prints the same report.
            let binary = TestEnvironment.binDir + "/payfleet"
            if FileManager.default.isExecutableFile(atPath: binary), let d = dates.first {
                let (status, out) = try Tool.run(binary, ["settlement", "report", "--date", d, "--json", "--config", fleet.configPath])
                #expect(status == 0, "\(out)")
                #expect(try LocalSettlement.parseReport(out) == stream.expected.filter { $0.key.day == d })
            }
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }

    @Test("Day close: totals frozen, settlement.day_closed published to payfleet.events once (also across restarts), a late event becomes an adjustment in the report")
    func dayCloseThroughWorker() async throws {
        try await WorkerProcess.settlement(prefix: "settle-close", section: ["grace_period: 3650d", "close_interval: 100ms"]) { fleet in
            let n = fleet.name
            let day = [
                event("\(n)-1", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 1999, currency: "GBP", fee: 50),
                event("\(n)-2", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T23:59:59Z", amount: 12_000, currency: "GBP", fee: 188),
                event("\(n)-3", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T12:00:00Z", amount: 4990, currency: "EUR", fee: 70),
                event("\(n)-4", .paymentSucceeded, merchant: "m_nyc", at: "2026-11-21T06:59:59Z", amount: 2500, currency: "USD", fee: 103),
                event("\(n)-5", .paymentRefunded, merchant: "m_nyc", at: "2026-11-20T15:00:00Z", amount: 500, currency: "USD", payment: "pi_x"),
            ]
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(day, via: pub)
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.count("settlement_events") == 5 })
            #expect(try fleet.count("settlement_days") == 0)
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)

            // Restart with a 1 s grace: both merchants' 2026-11-20 close (three currencies).
            try fleet.writeConfig(sectionYAML: ["grace_period: 1s", "close_interval: 100ms"])
            try fleet.start()
            let published = try await eventually(timeout: .seconds(60)) {
                try fleet.count("settlement_outbox", where: "published_at IS NOT NULL") == 3
            }
            #expect(published, "log: \(fleet.process?.log.suffix(3000) ?? "")")
            #expect(try fleet.count("settlement_days") == 2)
            #expect(await fleet.metric("payfleet_settlement_days_closed_total") == 2)
            #expect(await fleet.metric("payfleet_settlement_day_closed_published_total") == 3)
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.feedQueue) == 3 })
            let before = try LocalSettlement.parseReport(try fleet.report("2026-11-20"))
            let gbpKey = SettlementStream.Key(merchant: "m_lon", currency: "GBP", day: "2026-11-20")
            let gbpBefore = try #require(before[gbpKey])
            #expect(gbpBefore.net == Int64(1999 + 12_000 - 50 - 188))

            // A late refund for the closed London day.
            try await fleet.publish(
                [event("\(n)-late", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T18:00:00Z", amount: 1000, currency: "GBP", payment: "pi_\(n)-1")],
                via: pub)
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.count("settlement_adjustments") == 1 })
            let json = try fleet.report("2026-11-20")
            let after = try LocalSettlement.parseReport(json)
            #expect(after[gbpKey] == before[gbpKey], "closed totals are never rewritten")
            let lines = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
            let gbp = try #require(lines.first { $0["currency"] as? String == "GBP" })
            #expect((gbp["adjustments"] as? NSNumber)?.int64Value == -1000)
            #expect(gbp["closed"] as? Bool == true)
            let items = gbp["adjustment_items"] as? [[String: Any]] ?? []
            #expect(items.count == 1 && (items.first?["arrived_at"] as? String)?.isEmpty == false)

            // Restart again: nothing is closed or published a second time.
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(30)) { await fleet.admin("/readyz")?.status == 200 })
            try await Task.sleep(for: .seconds(1))  // ten close rounds
            #expect(try fleet.count("settlement_outbox") == 3)
            #expect(try await fleet.depth(fleet.feedQueue) == 3)

            // The feed holds each close once: distinct ids, one per merchant and currency.
            let s = try await AMQPSession.connect(fleet.amqp)
            var closes: [PaymentEvent] = []
            while let m = try await s.get(queue: fleet.feedQueue) {
                closes.append(try EventCodec.decode(Data(m.message.body)))
                try await s.ack(m.deliveryTag)
            }
            await s.close()
            #expect(closes.count == 3 && Set(closes.map(\.id)).count == 3)
            #expect(Set(closes.map { "\($0.merchantID) \($0.amount.currency.code) \($0.metadata["date"] ?? "")" })
                == ["m_lon GBP 2026-11-20", "m_lon EUR 2026-11-20", "m_nyc USD 2026-11-20"])
            #expect(closes.allSatisfy { $0.type == .settlementDayClosed })
            pub.close()
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }
}

@Suite(.serialized) struct DayCloserBrokerTests {
    @Test("An unroutable settlement.day_closed stays in the outbox (mandatory publish) and goes out once a queue is bound")
    func outboxSurvivesUnroutable() async throws {
        let dir = TestEnvironment.makeTempDir("settle-outbox")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let h = SettlementHandler(merchants: SettlementStream.merchants)
        let merchant = "m_outbox_\(UInt32.random(in: 0...999_999))"
        try await LocalSettlement.apply(
            [event("\(merchant)-1", .paymentSucceeded, merchant: merchant, at: "2026-11-20T10:00:00Z", amount: 750, currency: "BHD", fee: 15)],
            handler: h, store: store)
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        // No feed queue: nothing is bound to settlement.day_closed on this broker.
        let closer = DayCloser(
            store: store, amqp: amqp, merchants: [:], settings: SettlementSettings(graceMS: 0, closeIntervalMS: 100, dayClosedQueue: nil),
            logger: .init(label: "test"))
        defer { closer.relay.publisher.close() }
        #expect(await closer.relay.publisher.waitUntilConnected())
        let first = await closer.tick()
        #expect(first.closed == 1 && first.published == 0)
        let pending = try await store.withConnection { db in
            try db.queryOne("SELECT COUNT(*) FROM settlement_outbox WHERE published_at IS NULL")!.int(0)!
        }
        #expect(pending == 1)

        try await withEventsQueue(amqp, prefix: "settle-feed", keys: ["settlement.day_closed"]) { s, queue in
            let second = await closer.tick()
            #expect(second.closed == 0 && second.published == 1)
            let third = await closer.tick()
            #expect(third.published == 0)
            let depth = try await s.inspect(queue: queue).messages
            #expect(depth == 1)
            let m = try #require(try await s.get(queue: queue))
            let e = try EventCodec.decode(Data(m.message.body))
            #expect(e.merchantID == merchant && e.amount.value == 735 && e.type == .settlementDayClosed)
            #expect(m.message.headers["x-payfleet-merchant"]?.stringValue == merchant)
            try await s.ack(m.deliveryTag)
        }
    }
}
