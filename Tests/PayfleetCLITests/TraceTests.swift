import Foundation
import Logging
import PayfleetCRMSync
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

@testable import PayfleetCLI

/// `FleetTrace` on files made here (no broker): what ingest keeps (redactions, an unpublished
/// row), every kind of id, and the refusals.
@Suite struct TraceTests {
    static func event(_ n: Int, payment: String, invoice: String? = nil, providerID: String) -> PaymentEvent {
        var e = EventFactory.payment(n, prefix: "trace")
        e.payment = PaymentEvent.Payment(id: payment, channel: "web", method: "card")
        e.invoiceID = invoice
        e.source = PaymentEvent.Source(provider: "stripe", eventID: providerID)
        e.id = PaymentEvent.canonicalID(provider: "stripe", eventID: providerID)
        return e
    }

    @Test("ingest's side: accepted with the masked fields, not yet published; found by event, payment, invoice and provider id")
    func ingestOnly() async throws {
        let dir = TestEnvironment.makeTempDir("trace-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let outbox = try await Outbox(path: dir + "/ingest.sqlite", logger: Logger(label: "test"))
        let e = Self.event(1, payment: "pi_unit1", invoice: "inv_unit1", providerID: "evt_1Unit")
        let other = Self.event(2, payment: "pi_unit2", providerID: "evt_2Unit")
        _ = try await outbox.accept(
            [.event(e), .event(other)], traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            redactions: [e.id: ["data.object.description", "data.object.metadata.note"]])
        let trace = FleetTrace(
            ingest: .init(process: "ingest", path: dir + "/ingest.sqlite"),
            workers: [.init(process: "ledger-writer", partition: 0, path: dir + "/ledger-writer.sqlite")])
        for (query, kind) in [(e.id, "event_id"), ("pi_unit1", "payment_id"), ("inv_unit1", "invoice_id"), ("evt_1Unit", "provider_event_id")] {
            let r = try trace.trace(query)
            #expect(r.matchedAs == [kind], "\(query)")
            #expect(r.events.map(\.id) == [e.id], "\(query)")
            #expect(r.steps.map(\.step) == ["accepted", "publish_pending"], "\(query)")
            #expect(r.steps[0].fields["redactions"] == .list([.string("data.object.description"), .string("data.object.metadata.note")]))
            #expect(r.steps[0].fields["traceparent"] == .string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
            #expect(r.events[0].amount == e.amount.value)
            #expect(r.events[0].paymentID == "pi_unit1")
            // The missing worker file is said, not an error.
            #expect(r.sources.first { $0.source.process == "ledger-writer" }?.present == false)
            #expect(r.text.contains("not found (not read): \(dir)/ledger-writer.sqlite"))
        }
        #expect(try trace.trace(other.id).steps[0].fields["redactions"] == .list([]))
        // The JSON shape's top-level keys (docs/operations.md).
        let o = try trace.trace("pi_unit1").jsonObject
        #expect(Set(o.keys) == ["query", "matched_as", "events", "steps", "sources"])
        // A second accept of the same event (a duplicate) writes no redaction for it.
        _ = try await outbox.accept([.event(other)], traceparent: "", redactions: [other.id: ["x"]])
        #expect(try trace.trace(other.id).steps[0].fields["redactions"] == .list([]))
    }

    @Test("An unknown id, an empty one and one with a control character: one-line refusals naming the problem")
    func refusals() async throws {
        let dir = TestEnvironment.makeTempDir("trace-refuse")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try await Outbox(path: dir + "/ingest.sqlite", logger: Logger(label: "test"))
        let trace = FleetTrace(ingest: .init(process: "ingest", path: dir + "/ingest.sqlite"), workers: [])
        #expect(throws: CLIFailure.self) { try trace.trace("pi_nothing") }
        do { _ = try trace.trace("pi_nothing") } catch {
            #expect("\(error)".contains("'pi_nothing'"))
            #expect("\(error)".contains(dir + "/ingest.sqlite"))
        }
        for bad in ["", "  ", "pi\u{1}x", String(repeating: "x", count: 256)] {
            do {
                _ = try trace.trace(bad)
                Issue.record("accepted \(bad.debugDescription)")
            } catch { #expect("\(error)".contains("1–255 characters without control characters")) }
        }
        // No file at all: refused, naming that nothing was read.
        let none = FleetTrace(ingest: .init(process: "ingest", path: dir + "/absent.sqlite"), workers: [])
        do { _ = try none.trace("evt_x") } catch { #expect("\(error)".contains("read: none")) }
    }

    @Test("The lookups use indexes: no full scan in any query plan")
    func queryPlans() async throws {
        let dir = TestEnvironment.makeTempDir("trace-plan")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try await Outbox(path: dir + "/ingest.sqlite", logger: Logger(label: "test"))
        _ = try await Store(path: dir + "/crm.sqlite", migrations: CRMSchema.migrations)
        _ = try await Store(path: dir + "/ledger.sqlite", migrations: LedgerSchema.migrations)
        _ = try await Store(path: dir + "/settlement.sqlite", migrations: SettlementSchema.migrations)
        func plan(_ path: String, _ sql: String, _ args: [SQLValue]) throws -> String {
            let db = try SQLiteConnection(path: path, readOnly: true)
            return try db.query("EXPLAIN QUERY PLAN " + sql, args).compactMap { $0.string(3) }.joined(separator: "; ")
        }
        let checks: [(String, String)] = [
            ("ingest.sqlite", "SELECT id, payment_id FROM outbox WHERE payment_id = ?"),
            ("ingest.sqlite", "SELECT id, payment_id FROM outbox WHERE invoice_id = ?"),
            ("ingest.sqlite", "SELECT id, payment_id FROM outbox WHERE provider_event_id = ?"),
            ("ingest.sqlite", "SELECT id FROM recorded WHERE event_id = ?"),
            ("crm.sqlite", "SELECT event_id, payment_id FROM crm_events WHERE merchant_id = ? AND payment_id = ?"),
            ("crm.sqlite", "SELECT event_id, payment_id FROM crm_events WHERE merchant_id = ? AND invoice_id = ?"),
            ("ledger.sqlite", "SELECT event_id, payment_id FROM ledger_events WHERE merchant_id = ? AND payment_id = ?"),
            ("ledger.sqlite", "SELECT event_id, payment_id FROM ledger_events WHERE merchant_id = ? AND invoice_id = ?"),
            ("settlement.sqlite", "SELECT event_id, payment_id FROM settlement_events WHERE merchant_id = ? AND payment_id = ?"),
        ]
        for (file, sql) in checks {
            let args: [SQLValue] = sql.contains("merchant_id = ?") ? ["m", "p"] : ["p"]
            let p = try plan(dir + "/" + file, sql, args)
            #expect(p.contains("USING INDEX") || p.contains("USING COVERING INDEX"), "\(file): \(sql): \(p)")
        }
        for (table, file, extra) in [
            ("crm_events", "crm.sqlite", ""), ("settlement_events", "settlement.sqlite", ""),
            ("ledger_events", "ledger.sqlite", " AND payment_id IS NOT NULL"), ("ledger_events", "ledger.sqlite", " AND invoice_id IS NOT NULL"),
        ] {
            let db = try SQLiteConnection(path: dir + "/" + file, readOnly: true)
            let p = try db.query("EXPLAIN QUERY PLAN SELECT (SELECT MIN(merchant_id) FROM \(table) WHERE merchant_id > ?\(extra))", ["a"])
                .compactMap { $0.string(3) }.joined(separator: "; ")
            #expect(p.contains("INDEX"), "\(table)\(extra): \(p)")
        }
    }
}

/// Figures for BENCHMARKS.md, opt-in (`PAYFLEET_TRACE_BENCH=1`): `payfleet trace` on a fleet
/// whose files hold 1,000,000 processed events each (ingest's outbox, crm-sync, ledger-writer,
/// settlement-aggregator, receipt-sender), through the real executable.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["PAYFLEET_TRACE_BENCH"] != nil))
struct TraceBenchmarkTests {
    @Test("trace one payment among 1,000,000 processed events per file")
    func traceAtAMillion() async throws {
        let n = 1_000_000
        let dir = TestEnvironment.makeTempDir("trace-bench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = dir + "/state"
        let config = dir + "/payfleet.yaml"
        try """
            broker:
              url: \(TestEnvironment.amqpURL)
            state_dir: \(state)
            merchants:
              - id: m_acme
                name: Acme
                timezone: Europe/London
                currencies: [GBP]
            crm-sync: {}
            ledger-writer: {}
            receipt-sender: {}
            settlement-aggregator: {}

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let t0 = ContinuousClock.now
        // Event i belongs to payment pi_bench<i / 3> (a payment, its refund, its dispute).
        let numbers = "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < \(n - 1))"
        let evt = "printf('evt_bench%07d', i)"
        let pay = "printf('pi_bench%07d', i / 3)"
        let processed = "\(numbers) INSERT INTO processed (event_id, processed_at, processed_ms) SELECT \(evt), 1795000000 + i / 100, 1795000000000 + i * 10 FROM c;"
        let outbox = try await Outbox(path: state + "/ingest.sqlite", logger: Logger(label: "bench"))
        try await outbox.store.write { db in
            try db.executeScript("""
                \(numbers) INSERT INTO outbox (id, type, merchant, customer, customer_key, traceparent, body, created_at, sent_at,
                    payment_id, invoice_id, provider_event_id)
                SELECT \(evt), 'payment.succeeded', 'm_acme', 'cus_1', 'cus_1', '', CAST('{}' AS BLOB), 1795000000 + i / 100,
                    1795000000 + i / 100, \(pay), NULL, printf('evt_1Bench%07d', i) FROM c;
                """)
        }
        let crm = try await Store(path: state + "/crm-sync.sqlite", migrations: CRMSchema.migrations + EffectJournal.migrations)
        try await crm.write { db in
            try db.executeScript(processed + """
                \(numbers) INSERT INTO crm_events (event_id, type, merchant_id, customer_id, own_customer, payment_id, currency, amount, occurred_at)
                SELECT \(evt), 'payment.succeeded', 'm_acme', 'cus_1', 1, \(pay), 'GBP', 100, 1795000000000 FROM c;
                \(numbers) INSERT INTO effect_journal (event_id, effect, state, attempts, created_at, updated_at)
                SELECT \(evt), CAST('{"customers":[]}' AS BLOB), 'done', 1, 1795000000, 1795000000 FROM c;
                """)
        }
        let ledger = try await Store(path: state + "/ledger-writer.sqlite", migrations: LedgerSchema.migrations)
        try await ledger.write { db in
            try db.executeScript(processed + """
                \(numbers) INSERT INTO ledger_events (event_id, type, merchant_id, provider, payment_id, currency, amount, occurred_at, business_day, outcome)
                SELECT \(evt), 'payment.succeeded', 'm_acme', 'stripe', \(pay), 'GBP', 100, '2026-11-18T10:00:00Z', '2026-11-18', 'posted' FROM c;
                """)
        }
        let settlement = try await Store(path: state + "/settlement-aggregator.sqlite", migrations: SettlementSchema.migrations)
        try await settlement.write { db in
            try db.executeScript(processed + """
                \(numbers) INSERT INTO settlement_events (event_id, type, merchant_id, provider, payment_id, currency, amount, fee, occurred_at, arrived_at, business_day)
                SELECT \(evt), 'payment.succeeded', 'm_acme', 'stripe', \(pay), 'GBP', 100, 0, '2026-11-18T10:00:00Z', '2026-11-18T10:00:01Z', '2026-11-18' FROM c;
                """)
        }
        let receipts = try await Store(path: state + "/receipt-sender.sqlite", migrations: EffectJournal.migrations)
        try await receipts.write { db in try db.executeScript(processed) }
        print("BENCH trace fill: 5 files × \(n) rows in \(ContinuousClock.now - t0)")

        let target = "pi_bench0166666"  // events 499998…500000
        let t1 = ContinuousClock.now
        let report = try FleetTrace.sources(configPath: config).trace(target)
        let inProcess = ContinuousClock.now - t1
        #expect(report.events.map(\.id) == ["evt_bench0499998", "evt_bench0499999", "evt_bench0500000"])
        #expect(report.steps.filter { $0.step == "processed" }.count == 3 * 4)
        let t2 = ContinuousClock.now
        let cli = try await CLIRun.run(["trace", target, "--json", "--config", config], environment: [:], dir: dir)
        let viaCLI = ContinuousClock.now - t2
        #expect(cli.status == 0, "\(cli.stderr)")
        let t3 = ContinuousClock.now
        let byEvent = try FleetTrace.sources(configPath: config).trace("evt_bench0750000")
        let eventTime = ContinuousClock.now - t3
        #expect(byEvent.events.count == 1)
        print("BENCH trace \(target) over 5 files × \(n) processed events: \(inProcess) in-process, \(viaCLI) through `payfleet trace --json` (process start included); by event id \(eventTime)")
        #expect(viaCLI < .seconds(2))
    }
}
