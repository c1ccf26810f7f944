import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// DESIGN §5a for settlement's reversals and late fees: refund.failed lowers `refunds`,
/// payment.reversed lowers `gross` and `count` (and `fees` by the fee it returns),
/// payout.failed lowers `payouts`, fee.assessed adds to `fees` of the payment's business day;
/// on a closed day each becomes an adjustment. Expected figures are worked out by hand.
@Suite struct SettlementReversalTests {
    static let merchants = Dictionary(uniqueKeysWithValues: SettlementStream.merchants.map { ($0.id, $0) })
    static let handler = SettlementHandler(merchants: SettlementStream.merchants)

    /// m_lon (Europe/London; November is GMT, so the business day is the UTC date).
    static let story = [
        event("pa", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T09:00:00Z", amount: 5000, currency: "GBP", fee: 100, payment: "pi_a"),
        event("ra", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 2000, currency: "GBP", payment: "pi_a",
              metadata: ["refund_id": "re_a"]),
        event("rfa", .refundFailed, merchant: "m_lon", at: "2026-11-20T11:00:00Z", amount: 2000, currency: "GBP", payment: "pi_a",
              metadata: ["refund_id": "re_a"]),
        event("pb", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T12:00:00Z", amount: 3000, currency: "GBP", fee: 50, payment: "pi_b"),
        event("rvb", .paymentReversed, merchant: "m_lon", at: "2026-11-20T13:00:00Z", amount: 3000, currency: "GBP", fee: 50, payment: "pi_b"),
        // A fee learnt two days later counts on the payment's day (2026-11-20).
        event("fa", .feeAssessed, merchant: "m_lon", at: "2026-11-22T08:00:00Z", amount: 30, currency: "GBP", payment: "pi_a"),
        event("po", .payoutPaid, merchant: "m_lon", at: "2026-11-20T14:00:00Z", amount: 10_000, currency: "GBP", payment: nil,
              metadata: ["payout_id": "po_1"]),
        event("pf", .payoutFailed, merchant: "m_lon", at: "2026-11-20T15:00:00Z", amount: 10_000, currency: "GBP", payment: nil,
              metadata: ["payout_id": "po_1"]),
    ]

    /// count 1 + 1 − 1 = 1; gross 5000 + 3000 − 3000 = 5000; refunds 2000 − 2000 = 0;
    /// fees 100 + 50 − 50 + 30 = 130; payouts 10000 − 10000 = 0; net 5000 − 0 − 0 − 130 = 4870.
    static func expectStoryDay(_ store: Store, _ label: String) throws {
        let lines = try SettlementBook(files: [store.path]).report(date: "2026-11-20", merchant: "m_lon")
        #expect(lines.count == 1, "\(label)")
        guard let t = lines.first?.totals else { return }
        #expect(t.count == 1 && t.gross == 5000 && t.refunds == 0 && t.fees == 130 && t.payouts == 0, "\(label): \(t)")
        #expect(t.net == 4870, "\(label)")
        #expect(try SettlementBook(files: [store.path]).report(date: "2026-11-22", merchant: "m_lon").isEmpty, "\(label)")
    }

    @Test("Each reversal on an open day lowers its figure; fee.assessed lands on its payment's day")
    func openDay() async throws {
        let dir = TestEnvironment.makeTempDir("settle-rev")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        try await LocalSettlement.apply(Self.story, handler: Self.handler, store: store, now: utc("2026-11-22T09:00:00Z"))
        try Self.expectStoryDay(store, "in order")
    }

    @Test("Out of order (reversals and the fee before their originals), and replayed: the same totals")
    func anyOrderAndReplay() async throws {
        let dir = TestEnvironment.makeTempDir("settle-rev-order")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reversed = try await LocalSettlement.store(dir, name: "reversed.sqlite")
        try await LocalSettlement.apply(Self.story.reversed(), handler: Self.handler, store: reversed, now: utc("2026-11-22T09:00:00Z"))
        try Self.expectStoryDay(reversed, "reversed")
        // The fee waited for its payment and was booked once when it came.
        let waiting = try await reversed.withConnection { db in
            try db.queryOne("SELECT COUNT(*) FROM settlement_pending_fees WHERE resolved_at IS NULL")!.int(0)!
        }
        #expect(waiting == 0)
        // Replayed past the runtime's dedupe: nothing changes.
        let handler = Self.handler
        try await reversed.write { db in
            for e in Self.story { try handler.apply(e, db: db, now: utc("2026-11-22T10:00:00Z")) }
        }
        try Self.expectStoryDay(reversed, "replayed")
    }

    @Test("A fee whose payment never arrives is booked on its own day when that day comes due")
    func orphanFee() async throws {
        let dir = TestEnvironment.makeTempDir("settle-orphan")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let fee = event("fx", .feeAssessed, merchant: "m_lon", at: "2026-11-22T08:00:00Z", amount: 30, currency: "GBP", payment: "pi_gone")
        try await LocalSettlement.apply([fee], handler: Self.handler, store: store, now: utc("2026-11-22T08:00:01Z"))
        #expect(try SettlementBook(files: [store.path]).report(date: "2026-11-22").isEmpty)
        // 2026-11-22 ends at 2026-11-23T00:00Z; with a 2 h grace it is due at 02:00.
        let closed = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: Self.merchants, graceMS: 7_200_000, now: utc("2026-11-23T02:00:00Z"))
        }
        #expect(closed.count == 1 && closed[0].day == "2026-11-22")
        let lines = try SettlementBook(files: [store.path]).report(date: "2026-11-22")
        #expect(lines.count == 1 && lines[0].totals.fees == 30 && lines[0].totals.net == -30 && lines[0].closed)
        // The payment turning up later does not count the fee a second time.
        try await LocalSettlement.apply(
            [event("px", .paymentSucceeded, merchant: "m_lon", at: "2026-11-21T10:00:00Z", amount: 1000, currency: "GBP", payment: "pi_gone")],
            handler: Self.handler, store: store, now: utc("2026-11-23T03:00:00Z"))
        let day21 = try SettlementBook(files: [store.path]).report(date: "2026-11-21")
        #expect(day21.count == 1 && day21[0].totals.fees == 0 && day21[0].totals.gross == 1000)
        #expect(try SettlementBook(files: [store.path]).report(date: "2026-11-22")[0].adjusted.fees == 30)
    }

    @Test("On a closed day refund.failed, payment.reversed, fee.assessed and payout.failed become adjustments; the totals stay frozen")
    func closedDayAdjustments() async throws {
        let dir = TestEnvironment.makeTempDir("settle-rev-closed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let originals = Self.story.filter { ["pa", "ra", "pb", "po"].contains($0.source.eventID) }
        try await LocalSettlement.apply(originals, handler: Self.handler, store: store, now: utc("2026-11-20T16:00:00Z"))
        let closed = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: Self.merchants, graceMS: 7_200_000, now: utc("2026-11-21T02:00:00Z"))
        }
        #expect(closed.count == 1)
        let late = Self.story.filter { ["rfa", "rvb", "fa", "pf"].contains($0.source.eventID) }
        try await LocalSettlement.apply(late, handler: Self.handler, store: store, now: utc("2026-11-22T09:00:00Z"))
        let lines = try SettlementBook(files: [store.path]).report(date: "2026-11-20", merchant: "m_lon")
        let day = try #require(lines.first)
        // Frozen at close: count 2, gross 8000, refunds 2000, fees 150, payouts 10000, net 8000 − 2000 − 150 = 5850.
        #expect(day.closed && day.totals.count == 2 && day.totals.gross == 8000 && day.totals.refunds == 2000)
        #expect(day.totals.fees == 150 && day.totals.payouts == 10_000 && day.totals.net == 5850)
        #expect(day.adjustments.count == 4)
        var byType: [String: SettlementDelta] = [:]
        for a in day.adjustments {
            byType[a.type] = a.delta
            #expect(a.arrivedAt == "2026-11-22T09:00:00Z")
        }
        #expect(byType["refund.failed"]?.refunds == -2000 && byType["refund.failed"]?.net == 2000)
        #expect(byType["payment.reversed"]?.gross == -3000 && byType["payment.reversed"]?.count == -1)
        #expect(byType["payment.reversed"]?.fees == -50 && byType["payment.reversed"]?.net == -2950)
        #expect(byType["fee.assessed"]?.fees == 30 && byType["fee.assessed"]?.net == -30)
        #expect(byType["payout.failed"]?.payouts == -10_000 && byType["payout.failed"]?.net == 0)
        // 2000 − 2950 − 30 + 0 = −980; adjusted net 5850 − 980 = 4870, as if all had been on time.
        #expect(day.adjustmentsNet == -980 && day.adjustedNet == 4870)
        #expect(day.adjusted.count == 1 && day.adjusted.gross == 5000 && day.adjusted.fees == 130)
    }

    @Test("Sums beyond Int64 are permanent AmountOverflow errors; a close never traps on net")
    func overflow() async throws {
        let dir = TestEnvironment.makeTempDir("settle-overflow")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let h = Self.handler
        func expectOverflow(_ e: PaymentEvent, now: Date = utc("2026-11-20T16:00:00Z")) async throws {
            do {
                try await store.write { db in try h.apply(e, db: db, now: now) }
                Issue.record("expected AmountOverflow for \(e.source.eventID)")
            } catch let error as HandlerError {
                #expect(error.kind == .permanent && error.errorClass == "AmountOverflow", "\(error)")
            }
        }
        let half = Int64.max / 2 + 1
        try await LocalSettlement.apply(
            [event("o1", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T09:00:00Z", amount: half, currency: "GBP")],
            handler: h, store: store, now: utc("2026-11-20T16:00:00Z"))
        // gross would pass Int64.max.
        try await expectOverflow(event("o2", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: half, currency: "GBP"))
        // refunds would go to −half, and net = gross − refunds would pass Int64.max.
        try await expectOverflow(
            event("o3", .refundFailed, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: half, currency: "GBP",
                  metadata: ["refund_id": "re_o"]))
        let t = try SettlementBook(files: [store.path]).report(date: "2026-11-20")[0].totals
        #expect(t.gross == half && t.refunds == 0 && t.count == 1)

        // SQLite's own 'integer overflow' (a SUM) on the worker's write is permanent, not transient.
        try await store.withConnection { db in
            try db.executeScript(
                """
                CREATE TRIGGER test_overflow BEFORE INSERT ON settlement_events WHEN NEW.event_id LIKE '%'
                    AND NEW.amount = 7
                BEGIN SELECT SUM(x) FROM (SELECT 9223372036854775807 AS x UNION ALL SELECT 1); END;
                """)
        }
        try await expectOverflow(event("o4", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T11:00:00Z", amount: 7, currency: "GBP"))

        // A stored day whose net does not fit (written around the checks): the close leaves it
        // open and reports it instead of trapping; other days still close.
        try await store.withConnection { db in
            try db.execute(
                "INSERT INTO settlement_totals (merchant_id, currency, day, gross, refunds) VALUES ('m_nyc', 'USD', '2026-11-19', ?, -1)",
                [.int(.max)])
        }
        let problems = ProblemLog()
        let closed = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: Self.merchants, graceMS: 0, now: utc("2026-11-25T00:00:00Z")) {
                problems.append($0)
            }
        }
        #expect(closed.map(\.day) == ["2026-11-20"])
        #expect(problems.items.count == 1 && problems.items[0].contains("2026-11-19"))
    }
}

/// Collects the closer's problem reports.
final class ProblemLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ s: String) { lock.withLock { stored.append(s) } }
    var items: [String] { lock.withLock { stored } }
}
