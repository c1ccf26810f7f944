import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

func utc(_ s: String) -> Date { RFC3339.parse(s)! }

func event(
    _ id: String, _ type: PaymentEvent.EventType, merchant: String, at: String, amount: Int64, currency: String,
    fee: Int64? = nil, payment: String? = nil, provider: String = "stripe", metadata: [String: String] = [:]
) -> PaymentEvent {
    let cur = Currency(code: currency)!
    return PaymentEvent(
        id: PaymentEvent.canonicalID(provider: provider, eventID: id), type: type, occurredAt: utc(at), receivedAt: utc(at),
        source: .init(provider: provider, eventID: id), merchantID: merchant, customer: .init(id: "cus_1"),
        payment: .init(id: payment ?? "pi_\(id)"), amount: Money(value: amount, currency: cur),
        fee: fee.map { Money(value: $0, currency: cur) }, metadata: metadata)
}

@Suite struct SettlementBusinessDayTests {
    static let handler = SettlementHandler(merchants: SettlementStream.merchants)

    /// Hand-computed: (merchant, UTC instant, business day).
    static let cases: [(String, String, String)] = [
        // London, cut-off 00:00. Spring forward 2026-03-29 01:00 GMT → 02:00 BST.
        ("m_lon", "2026-03-28T23:59:59Z", "2026-03-28"),
        ("m_lon", "2026-03-29T00:00:00Z", "2026-03-29"),
        ("m_lon", "2026-03-29T01:30:00Z", "2026-03-29"),
        ("m_lon", "2026-03-29T22:59:59Z", "2026-03-29"),  // 23:59:59 BST
        ("m_lon", "2026-03-29T23:00:00Z", "2026-03-30"),  // 00:00 BST
        // Fall back 2026-10-25 02:00 BST → 01:00 GMT.
        ("m_lon", "2026-10-24T22:59:59Z", "2026-10-24"),
        ("m_lon", "2026-10-24T23:00:00Z", "2026-10-25"),
        ("m_lon", "2026-10-25T00:30:00Z", "2026-10-25"),  // 01:30 BST
        ("m_lon", "2026-10-25T01:30:00Z", "2026-10-25"),  // 01:30 GMT (the second one)
        ("m_lon", "2026-10-25T23:59:59Z", "2026-10-25"),
        ("m_lon", "2026-10-26T00:00:00Z", "2026-10-26"),
        // New York, cut-off 02:00. Spring forward 2026-03-08 02:00 EST → 03:00 EDT (07:00Z).
        ("m_nyc", "2026-03-08T04:59:59Z", "2026-03-07"),  // 23:59:59 EST on the 7th
        ("m_nyc", "2026-03-08T05:00:00Z", "2026-03-07"),  // midnight, before the cut-off
        ("m_nyc", "2026-03-08T06:59:59Z", "2026-03-07"),  // 01:59:59 EST
        ("m_nyc", "2026-03-08T07:00:00Z", "2026-03-08"),  // 03:00 EDT: the cut-off fell in the gap
        ("m_nyc", "2026-03-09T05:59:59Z", "2026-03-08"),  // 01:59:59 EDT
        ("m_nyc", "2026-03-09T06:00:00Z", "2026-03-09"),  // 02:00 EDT
        // Fall back 2026-11-01 02:00 EDT → 01:00 EST (06:00Z).
        ("m_nyc", "2026-11-01T05:30:00Z", "2026-10-31"),  // 01:30 EDT
        ("m_nyc", "2026-11-01T06:30:00Z", "2026-10-31"),  // 01:30 EST (the second one)
        ("m_nyc", "2026-11-01T06:59:59Z", "2026-10-31"),
        ("m_nyc", "2026-11-01T07:00:00Z", "2026-11-01"),  // 02:00 EST
        ("m_nyc", "2026-11-02T04:59:59Z", "2026-11-01"),  // 23:59:59 EST
        ("m_nyc", "2026-11-02T06:59:59Z", "2026-11-01"),
        ("m_nyc", "2026-11-02T07:00:00Z", "2026-11-02"),
    ]

    @Test("Events around midnight and across DST in Europe/London and America/New_York land on the right business day")
    func businessDays() async throws {
        let dir = TestEnvironment.makeTempDir("settle-days")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let events = Self.cases.enumerated().map { i, c in
            event("bd\(i)", .paymentSucceeded, merchant: c.0, at: c.1, amount: 100 + Int64(i), currency: c.0 == "m_lon" ? "GBP" : "USD")
        }
        try await LocalSettlement.apply(events, handler: Self.handler, store: store)
        let rows = try await store.withConnection { db in
            try db.query("SELECT event_id, business_day FROM settlement_events").reduce(into: [String: String]()) {
                $0[$1.string(0)!] = $1.string(1)!
            }
        }
        for (i, c) in Self.cases.enumerated() {
            #expect(rows[events[i].id] == c.2, "\(c.0) \(c.1)")
        }
        // Each event is counted on its day: 2026-03-07 in New York has three.
        let lines = try SettlementBook(files: [store.path]).report(date: "2026-03-07", merchant: "m_nyc")
        #expect(lines.count == 1 && lines[0].totals.count == 3)
    }

    @Test("A merchant's day ends at its next cut-off: 23 and 25 hour days across DST")
    func dayEnds() {
        let lon = SettlementStream.merchants[0], nyc = SettlementStream.merchants[1]
        #expect(BusinessDays.end(of: "2026-03-28", for: lon) == utc("2026-03-29T00:00:00Z"))
        #expect(BusinessDays.end(of: "2026-03-29", for: lon) == utc("2026-03-29T23:00:00Z"))  // 23 h
        #expect(BusinessDays.end(of: "2026-10-24", for: lon) == utc("2026-10-24T23:00:00Z"))
        #expect(BusinessDays.end(of: "2026-10-25", for: lon) == utc("2026-10-26T00:00:00Z"))  // 25 h
        #expect(BusinessDays.end(of: "2026-03-07", for: nyc) == utc("2026-03-08T07:00:00Z"))  // 02:00 is in the gap → 03:00 EDT
        #expect(BusinessDays.end(of: "2026-03-08", for: nyc) == utc("2026-03-09T06:00:00Z"))
        #expect(BusinessDays.end(of: "2026-10-31", for: nyc) == utc("2026-11-01T07:00:00Z"))
        #expect(BusinessDays.end(of: "2026-11-01", for: nyc) == utc("2026-11-02T07:00:00Z"))
    }
}

@Suite struct TotalsTests {
    static func dump(_ store: Store) async throws -> [String] {
        try await store.withConnection { db in
            try db.query("SELECT * FROM settlement_totals ORDER BY merchant_id, day, currency").map { "\($0.values)" }
        }
    }

    @Test("Totals equal the sums computed from the stream to the minor unit (GBP, EUR, USD, JPY, BHD), in any order, with duplicates")
    func totalsConverge() async throws {
        let dir = TestEnvironment.makeTempDir("settle-totals")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stream = SettlementStream(total: 3_000, seed: 7, prefix: "u")
        let types = Set(stream.events.map(\.type))
        for t in [PaymentEvent.EventType.refundFailed, .paymentReversed, .payoutFailed, .feeAssessed] {
            #expect(types.contains(t), "\(t.rawValue) in the stream")
        }
        let handler = SettlementHandler(merchants: SettlementStream.merchants)
        let a = try await LocalSettlement.store(dir, name: "a.sqlite")
        let b = try await LocalSettlement.store(dir, name: "b.sqlite")
        try await LocalSettlement.apply(stream.events, handler: handler, store: a)
        try await LocalSettlement.apply(Array(stream.events.reversed()) + stream.events, handler: handler, store: b)
        let da = try await Self.dump(a)
        let db = try await Self.dump(b)
        #expect(da == db)
        #expect(Set(stream.expected.keys.map(\.currency)) == ["GBP", "EUR", "USD", "JPY", "BHD"])

        let book = try SettlementBook(files: [a.path])
        var got: [SettlementStream.Key: SettlementStream.Totals] = [:]
        for day in SettlementStream.days + ["2026-03-06", "2026-03-27", "2026-10-23", "2026-10-30"] {
            got.merge(try LocalSettlement.parseReport(try SettlementReport.json(try book.report(date: day)))) { $1 }
        }
        #expect(got == stream.expected)
    }

    @Test("Bad input: an invalid event is a permanent error naming the field; bad settings name the key")
    func badInput() async throws {
        let dir = TestEnvironment.makeTempDir("settle-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        var e = event("r1", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 100, currency: "GBP")
        e.payment = nil
        do {
            try await LocalSettlement.apply([e], handler: SettlementHandler(), store: store)
            Issue.record("expected an error")
        } catch let he as HandlerError {
            #expect(he.kind == .permanent && he.message.contains("payment.id"), "\(he)")
        }
        let section = try ConfigSection.parse(yaml: "settlement-aggregator:\n  grace_period: soon\n").section("settlement-aggregator")
        #expect(throws: ConfigError.self) { try SettlementSettings.read(section, workerName: "x") }
        do {
            _ = try SettlementSettings.read(section, workerName: "x")
        } catch {
            #expect("\(error)".contains("grace_period"))
        }
        #expect(throws: SettlementError("--date: '2026-02-30' is not a date (YYYY-MM-DD)")) {
            try SettlementBook.checkDate("2026-02-30", option: "--date")
        }
        #expect(throws: SettlementError.self) { try SettlementBook(files: [dir + "/nothing.sqlite"]) }
    }
}

@Suite struct ClosingTests {
    @Test("Closing freezes a day once, writes one settlement.day_closed per currency; a late event becomes an adjustment in the report")
    func closeAndAdjust() async throws {
        let dir = TestEnvironment.makeTempDir("settle-close")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let merchants = Dictionary(uniqueKeysWithValues: SettlementStream.merchants.map { ($0.id, $0) })
        let h = SettlementHandler(merchants: SettlementStream.merchants)
        let day = [
            event("c1", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 1999, currency: "GBP", fee: 50),
            event("c2", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T11:00:00Z", amount: 4990, currency: "EUR", fee: 70),
        ]
        try await LocalSettlement.apply(day, handler: h, store: store)
        // The day ends at 2026-11-21T00:00Z; with a 2 h grace nothing closes at 01:59:59.
        let early = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: merchants, graceMS: 7_200_000, now: utc("2026-11-21T01:59:59Z"))
        }
        #expect(early.isEmpty)
        let closed = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: merchants, graceMS: 7_200_000, now: utc("2026-11-21T02:00:00Z"))
        }
        #expect(closed.count == 1 && closed[0].events.count == 2)
        let again = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: merchants, graceMS: 7_200_000, now: utc("2026-11-22T00:00:00Z"))
        }
        #expect(again.isEmpty)
        let outbox = try await store.withConnection { db in try db.query("SELECT body FROM settlement_outbox ORDER BY currency") }
        #expect(outbox.count == 2)
        let closedEvent = try EventCodec.decode(Data(outbox[1].blob(0)!))
        #expect(closedEvent.type == .settlementDayClosed && closedEvent.amount == Money(value: 1949, currency: Currency(code: "GBP")!))
        #expect(closedEvent.metadata["date"] == "2026-11-20" && closedEvent.metadata["gross"] == "1999")

        // Frozen: the database itself refuses to change a closed day's totals.
        await #expect(throws: SQLiteError.self) {
            try await store.write { db in try db.execute("UPDATE settlement_totals SET gross = 0 WHERE merchant_id = 'm_lon'") }
        }
        // A late refund for the closed day: an adjustment with its arrival time.
        let late = event("c3", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T23:30:00Z", amount: 500, currency: "GBP", payment: "pi_c1")
        try await LocalSettlement.apply([late], handler: h, store: store, now: utc("2026-11-21T09:00:00Z"))
        let lines = try SettlementBook(files: [store.path]).report(date: "2026-11-20")
        let gbp = try #require(lines.first { $0.currency == "GBP" })
        #expect(gbp.closed && gbp.totals.net == 1949 && gbp.totals.refunds == 0)
        #expect(gbp.adjustments.count == 1 && gbp.adjustments[0].arrivedAt == "2026-11-21T09:00:00Z")
        #expect(gbp.adjustmentsNet == -500 && gbp.adjusted.net == 1449)
        let json = try JSONSerialization.jsonObject(with: Data(try SettlementReport.json(lines).utf8)) as! [[String: Any]]
        let g = try #require(json.first { $0["currency"] as? String == "GBP" })
        #expect((g["adjustments"] as? NSNumber)?.int64Value == -500)
        #expect(SettlementReport.table(lines, date: "2026-11-20").contains("arrived 2026-11-21T09:00:00Z net -5.00"))
        // No close of the day again, no second outbox row.
        let n = try await store.withConnection { db in try db.queryOne("SELECT COUNT(*) FROM settlement_outbox")!.int(0)! }
        #expect(n == 2)
    }
}
