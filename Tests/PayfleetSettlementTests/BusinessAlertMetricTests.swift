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
            try DayClosing.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        #expect(late == ["m_lon": 3600])
        let early = try await store.withConnection { db in
            try DayClosing.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T01:59:00Z"))
        }
        #expect(early.isEmpty)
        // Closed at 03:00Z: nothing overdue then; the next day, an hour past its own due time.
        _ = try await store.write { db in
            try DayClosing.closeDue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        let after = try await store.withConnection { db in
            try DayClosing.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-21T03:00:00Z"))
        }
        #expect(after.isEmpty)
        let next = try await store.withConnection { db in
            try DayClosing.overdue(db, merchants: merchants, graceMS: grace, now: utc("2026-11-22T03:00:00Z"))
        }
        #expect(next == ["m_lon": 3600])
    }

    @Test("settlement reconcile --metrics-file: mismatches per kind, matched lines and the run time, replaced atomically")
    func reconcileMetricsFile() async throws {
        let (dir, file) = try await Fixtures.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let metrics = dir + "/payfleet-reconcile-stripe.prom"
        try "stale\n".write(toFile: metrics, atomically: true, encoding: .utf8)
        let base = ["settlement", "reconcile", "--date", "2026-11-20", "--provider", "stripe", "--state-file", file,
                    "--metrics-file", metrics]
        let bad = try ReconcileTests.run(base + [Fixtures.path("stripe-payout-reconciliation-bad.csv")])
        #expect(bad.status == 1)
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        // The bad file (ReconcileTests.stripe): one payment missing on each side, one fee
        // mismatch, four matched.
        let labels = #"provider="stripe",merchant="all",date="2026-11-20""#
        for line in [
            "payfleet_settlement_reconcile_mismatches{\(labels),kind=\"missing_ours\"} 1",
            "payfleet_settlement_reconcile_mismatches{\(labels),kind=\"missing_provider\"} 1",
            "payfleet_settlement_reconcile_mismatches{\(labels),kind=\"amount\"} 0",
            "payfleet_settlement_reconcile_mismatches{\(labels),kind=\"fee\"} 1",
            "payfleet_settlement_reconcile_matched{\(labels)} 4",
            "# TYPE payfleet_settlement_reconcile_mismatches gauge",
        ] {
            #expect(text.contains(line + "\n"), "missing \(line) in \(text)")
        }
        #expect(!text.contains("stale"))
        let run = text.split(separator: "\n").first { $0.hasPrefix("payfleet_settlement_reconcile_last_run_timestamp_seconds{") }
        let t = try #require(run.flatMap { $0.split(separator: " ").last }.flatMap { Int($0) })
        #expect(abs(t - Int(Date().timeIntervalSince1970)) < 60)
        let clean = try ReconcileTests.run(base + [Fixtures.path("stripe-payout-reconciliation-clean.csv")])
        #expect(clean.status == 0)
        #expect(try String(contentsOfFile: metrics, encoding: .utf8).contains("kind=\"fee\"} 0\n"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp.") }.isEmpty)

        // A directory that does not exist: one line naming the option and the file.
        do {
            _ = try ReconcileTests.run(
                Array(base.dropLast(2)) + ["--metrics-file", dir + "/no/such/dir/x.prom", Fixtures.path("stripe-payout-reconciliation-clean.csv")])
            Issue.record("wrote into a missing directory")
        } catch { #expect("\(error)".contains("--metrics-file: cannot write \(dir)/no/such/dir/x.prom")) }
    }
}
