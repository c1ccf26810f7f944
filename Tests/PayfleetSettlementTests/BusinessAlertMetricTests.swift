import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The metrics behind PayfleetBusinessDayNotClosed and PayfleetReconciliationMismatch
/// (deploy/prometheus/alerts.yml), with figures computed by hand.
@Suite struct BusinessAlertMetricTests {
    @Test("A day open past cut-off + grace is overdue by the difference; a closed day or one not yet due is not")
    func overdueDays() async throws {
        let dir = TestEnvironment.makeTempDir("settle-overdue")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await LocalSettlement.store(dir)
        let merchants = Dictionary(uniqueKeysWithValues: SettlementStream.merchants.map { ($0.id, $0) })
        let h = SettlementHandler(merchants: SettlementStream.merchants)
        try await LocalSettlement.apply([
            event("o1", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 1999, currency: "GBP", fee: 50),
            event("o2", .paymentSucceeded, merchant: "m_lon", at: "2026-11-21T10:00:00Z", amount: 500, currency: "GBP", fee: 5),
        ], handler: h, store: store)
        // m_lon (Europe/London, cut-off 00:00): 2026-11-20 ends 2026-11-21T00:00Z, due with a 2 h
        // grace at 02:00Z; at 03:00Z it is 3600 s overdue. 2026-11-21 is due 2026-11-22T02:00Z.
        let grace = 7_200_000
        let late = try await store.withConnection { db in
            try BusinessDays.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        #expect(late == ["m_lon": 3600])
        let early = try await store.withConnection { db in
            try BusinessDays.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T01:59:00Z"))
        }
        #expect(early.isEmpty)
        // Closed at 03:00Z: nothing overdue then; the next day, an hour past its own due time.
        _ = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        let after = try await store.withConnection { db in
            try BusinessDays.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        #expect(after.isEmpty)
        let next = try await store.withConnection { db in
            try BusinessDays.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-22T03:00:00Z"))
        }
        #expect(next == ["m_lon": 3600])
    }
}
