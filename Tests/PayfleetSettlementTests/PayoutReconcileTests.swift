import ArgumentParser
import Foundation
import Logging
import PayfleetCLI
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import Prometheus
import Testing

/// Report files built from the providers' documented columns. Every amount is written from an
/// integer in minor units by the test's own formatter, so the expected figures are sums of the
/// same integers (the file facts), never the code under test.
enum PayoutFiles {
    /// Stripe's itemized payout reconciliation report columns (docs.stripe.com/reports/payout-reconciliation).
    static let stripeHeader = [
        "automatic_payout_id", "automatic_payout_effective_at", "balance_transaction_id", "created_utc", "created",
        "available_on_utc", "available_on", "currency", "gross", "fee", "net", "reporting_category", "source_id",
        "description", "customer_facing_amount", "customer_facing_currency", "customer_id", "customer_email", "charge_id",
        "payment_intent_id", "charge_created_utc", "invoice_id", "payment_method_type", "card_brand", "card_funding",
        "card_country", "statement_descriptor", "dispute_reason", "connected_account_id",
    ]
    /// Adyen's Settlement Details Report columns (docs.adyen.com, Settlement details report).
    static let adyenHeader = [
        "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference", "Payment Method", "Creation Date",
        "TimeZone", "Type", "Modification Reference", "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)",
        "Exchange Rate", "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)",
        "Scheme Fees (NC)", "Interchange (NC)", "Payment Method Variant", "Modification Merchant Reference", "Batch Number",
    ]

    /// Minor units as a major-unit decimal with `exponent` places ("-20.00", "12.345", "1500").
    static func major(_ v: Int64, _ exponent: Int) -> String {
        guard exponent > 0 else { return "\(v)" }
        var p: Int64 = 1
        for _ in 0..<exponent { p *= 10 }
        let a = abs(v)
        let frac = String(a % p)
        return (v < 0 ? "-" : "") + "\(a / p)." + String(repeating: "0", count: exponent - frac.count) + frac
    }

    static func csv(_ header: [String], _ rows: [[String: String]]) -> String {
        func field(_ s: String) -> String { s.contains(",") ? "\"\(s)\"" : s }
        return ([header.joined(separator: ",")] + rows.map { r in header.map { field(r[$0] ?? "") }.joined(separator: ",") })
            .joined(separator: "\n") + "\n"
    }

    struct StripeLine {
        var bt: String
        var created: String
        var category: String
        var gross: Int64
        var fee: Int64
        var payout: String?
        var effective: String?
        var paymentIntent: String?
        var source: String
        var net: Int64 { gross - fee }
    }

    static func stripe(_ lines: [StripeLine]) -> String {
        csv(stripeHeader, lines.map { l in
            [
                "automatic_payout_id": l.payout ?? "", "automatic_payout_effective_at": l.effective ?? "",
                "balance_transaction_id": l.bt, "created_utc": l.created, "created": l.created, "available_on_utc": l.created,
                "available_on": l.created, "currency": "gbp", "gross": major(l.gross, 2), "fee": major(l.fee, 2),
                "net": major(l.net, 2), "reporting_category": l.category, "source_id": l.source,
                "description": "Order, \(l.bt)", "customer_facing_amount": major(l.gross, 2), "customer_facing_currency": "gbp",
                "customer_id": "cus_T", "customer_email": "t@example.com", "charge_id": l.source.hasPrefix("ch_") ? l.source : "",
                "payment_intent_id": l.paymentIntent ?? "", "payment_method_type": "card", "card_brand": "visa",
            ]
        })
    }

    struct AdyenLine {
        var psp: String
        var type: String
        var created: String
        /// Gross credit (> 0) or debit (< 0) in BHD fils.
        var gross: Int64
        /// commission, markup, scheme fees, interchange.
        var fees: [Int64]
        var batch: String
        var payout: Int64? = nil
        var net: Int64 { gross - fees.reduce(0, +) }
    }

    static func adyen(_ lines: [AdyenLine]) -> String {
        csv(adyenHeader, lines.map { l in
            var r: [String: String] = [
                "Company Account": "GulfTradingCo", "Merchant Account": "GulfTradingECOM", "Creation Date": l.created,
                "TimeZone": "AST", "Type": l.type, "Net Currency": "BHD", "Exchange Rate": "1", "Batch Number": l.batch,
            ]
            if let p = l.payout {
                r["Net Debit (NC)"] = major(p, 3)
                return r
            }
            r["Psp Reference"] = l.psp
            r["Modification Reference"] = l.type == "Settled" ? l.psp : l.psp + "R"
            r["Merchant Reference"] = "ORDER-\(l.psp.suffix(4))"
            r["Payment Method"] = "visa"
            r["Gross Currency"] = "BHD"
            if l.gross >= 0 { r["Gross Credit (GC)"] = major(l.gross, 3) } else { r["Gross Debit (GC)"] = major(-l.gross, 3) }
            if l.net >= 0 { r["Net Credit (NC)"] = major(l.net, 3) } else { r["Net Debit (NC)"] = major(-l.net, 3) }
            for (i, c) in ["Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)"].enumerated() {
                r[c] = major(l.fees[i], 3)
            }
            r["Payment Method Variant"] = "visacredit"
            return r
        })
    }
}

/// A ledger-writer and a settlement-aggregator state in one directory, fed through each
/// worker's own batch step, as the fleet's workers would apply the events.
struct LocalBooks {
    let dir: String
    let settlement: Store
    let ledger: Store
    var settlementPath: String { settlement.path }
    var ledgerPath: String { ledger.path }

    static func make(_ name: String) async throws -> LocalBooks {
        let dir = TestEnvironment.makeTempDir(name)
        let settlement = try await LocalSettlement.store(dir, name: "settlement-aggregator.sqlite")
        let ledger = try await Store(
            path: dir + "/ledger-writer.sqlite",
            migrations: HandlerHarness.migrations(LedgerHandler(merchants: SettlementStream.merchants)))
        return LocalBooks(dir: dir, settlement: settlement, ledger: ledger)
    }

    func apply(_ events: [PaymentEvent]) async throws {
        try await LocalSettlement.apply(events, handler: SettlementHandler(merchants: SettlementStream.merchants), store: settlement)
        let h = try await HandlerHarness(handler: LedgerHandler(merchants: SettlementStream.merchants), store: ledger)
        try await h.apply(events, batch: max(1, events.count))
    }

    func balance(_ account: String, _ currency: String, asOf: String? = nil) throws -> Int64 {
        try LedgerBook(files: [ledgerPath]).balances(asOf: asOf).first { $0.account == account && $0.currency == currency }?.balance ?? 0
    }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}

@Suite struct PayoutReconcileTests {
    static func reconcile(_ args: [String]) async throws -> (json: [String: Any], status: Int32) {
        let command = try #require(try PayfleetCommand.parseAsRoot(["settlement", "reconcile", "--json"] + args) as? SettlementCommand.Reconcile)
        let (text, status) = try await command.output()
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        return (json, status)
    }

    static func payout(_ j: [String: Any], _ id: String) -> [String: Any]? {
        (j["payouts"] as? [[String: Any]] ?? []).first { $0["payout"] as? String == id }
    }

    static func int(_ v: Any?) -> Int64? { (v as? NSNumber)?.int64Value }

    // Stripe: merchant m_lon (GBP). Payout po_T1 (effective 2026-11-23) settles four balance
    // transactions; po_T2 (effective 2026-11-25) and an unpaid line are in flight on 2026-11-23.
    static let stripeLines: [PayoutFiles.StripeLine] = [
        .init(bt: "txn_T1", created: "2026-11-20 09:00:01", category: "charge", gross: 10_000, fee: 170, payout: "po_T1",
              effective: "2026-11-23 00:00:00", paymentIntent: "pi_TA", source: "ch_TA"),
        .init(bt: "txn_T2", created: "2026-11-20 10:00:01", category: "charge", gross: 5_000, fee: 95, payout: "po_T1",
              effective: "2026-11-23 00:00:00", paymentIntent: "pi_TB", source: "ch_TB"),
        .init(bt: "txn_T3", created: "2026-11-21 09:00:01", category: "refund", gross: -2_000, fee: 0, payout: "po_T1",
              effective: "2026-11-23 00:00:00", paymentIntent: "pi_TA", source: "re_TA"),
        .init(bt: "txn_T4", created: "2026-11-21 12:00:01", category: "dispute", gross: -5_000, fee: 1_500, payout: "po_T1",
              effective: "2026-11-23 00:00:00", paymentIntent: "pi_TB", source: "du_TB"),
        .init(bt: "txn_T5", created: "2026-11-22 15:00:01", category: "charge", gross: 3_000, fee: 72, payout: "po_T2",
              effective: "2026-11-25 00:00:00", paymentIntent: "pi_TC", source: "ch_TC"),
        .init(bt: "txn_T6", created: "2026-11-23 11:00:01", category: "charge", gross: 4_000, fee: 88, payout: nil,
              effective: nil, paymentIntent: "pi_TD", source: "ch_TD"),
    ]

    /// The books' side: webhooks (pi_TB's fee came later from its balance transaction, as the
    /// Stripe fee fetcher posts it) and the payout.paid of po_T1 for the sum of its lines.
    static func stripeEvents(payout: Int64) -> [PaymentEvent] {
        [
            event("sA", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T09:00:00Z", amount: 10_000, currency: "GBP", fee: 170, payment: "pi_TA"),
            event("sB", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 5_000, currency: "GBP", payment: "pi_TB"),
            event("txn_T2:fee", .feeAssessed, merchant: "m_lon", at: "2026-11-20T10:00:05Z", amount: 95, currency: "GBP", payment: "pi_TB"),
            event("sR", .paymentRefunded, merchant: "m_lon", at: "2026-11-21T09:00:00Z", amount: 2_000, currency: "GBP", payment: "pi_TA"),
            event("sD", .paymentDisputed, merchant: "m_lon", at: "2026-11-21T12:00:00Z", amount: 5_000, currency: "GBP", fee: 1_500, payment: "pi_TB"),
            event("sP", .payoutPaid, merchant: "m_lon", at: "2026-11-23T06:00:00Z", amount: payout, currency: "GBP", payment: nil,
                  metadata: ["payout_id": "po_T1"]),
            event("sC", .paymentSucceeded, merchant: "m_lon", at: "2026-11-22T15:00:00Z", amount: 3_000, currency: "GBP", fee: 72, payment: "pi_TC"),
            event("sE", .paymentSucceeded, merchant: "m_lon", at: "2026-11-23T11:00:00Z", amount: 4_000, currency: "GBP", fee: 88, payment: "pi_TD"),
        ]
    }

    @Test("Stripe payout reconciliation: po_T1 equals its four lines, in-flight lines are expected, Clearing equals the ending balance, PaymentFees the file's fees; stored and shown in every report format")
    func stripeClean() async throws {
        let lines = Self.stripeLines
        let po1 = lines.filter { $0.payout == "po_T1" }.reduce(Int64(0)) { $0 + $1.net }
        let ending = lines.filter { $0.payout != "po_T1" }.reduce(Int64(0)) { $0 + $1.net }
        let fees = lines.reduce(Int64(0)) { $0 + $1.fee }
        #expect(po1 == 6_235 && ending == 6_840 && fees == 1_925)  // the file facts, by hand
        let books = try await LocalBooks.make("payout-stripe")
        defer { try? FileManager.default.removeItem(atPath: books.dir) }
        try await books.apply(Self.stripeEvents(payout: po1))
        // Two files, as Stripe gives them: the payout reconciliation and the ending balance reconciliation.
        let paid = try books.write("payout_reconciliation.csv", PayoutFiles.stripe(lines.filter { $0.payout == "po_T1" }))
        let open = try books.write("ending_balance.csv", PayoutFiles.stripe(lines.filter { $0.payout != "po_T1" }))

        let (j, status) = try await Self.reconcile([
            "--date", "2026-11-23", "--provider", "stripe", "--state-file", books.settlementPath, "--ledger-file", books.ledgerPath,
            paid, open,
        ])
        #expect(status == 0, "\(j)")
        #expect(j["merchant_id"] as? String == "m_lon")
        let p1 = try #require(Self.payout(j, "po_T1"))
        #expect(p1["status"] as? String == "ok" && Self.int(p1["lines_net"]) == po1 && Self.int(p1["ours"]) == po1 && p1["lines"] as? Int == 4)
        #expect(Self.payout(j, "po_T2")?["status"] as? String == "expected")
        #expect((j["expected"] as? [[String: Any]] ?? []).map { $0["id"] as? String } == ["txn_T5", "txn_T6"])
        let bal = try #require((j["balances"] as? [[String: Any]])?.first)
        #expect(bal["account"] as? String == "Assets:M-lon:Clearing:Stripe")
        #expect(Self.int(bal["provider"]) == ending && Self.int(bal["ledger"]) == ending && bal["status"] as? String == "ok")
        #expect((j["missing_events"] as? [Any])?.isEmpty == true)
        // The books equal the provider's file to the minor unit.
        #expect(try books.balance("Expenses:M-lon:PaymentFees", "GBP") == fees)
        #expect(try books.balance("Assets:M-lon:Clearing:Stripe", "GBP", asOf: "2026-11-23") == ending)

        // Stored beside the settlement state and shown by the settlement report.
        let results = books.dir + "/reconciliation.sqlite"
        #expect(j["results_file"] as? String == results)
        let runs = try ReconciliationStore.latest(path: results, date: "2026-11-23")
        #expect(runs.count == 1 && runs.first?.allMatch == true && runs.first?.merchantID == "m_lon")
        func report(_ format: String) throws -> String {
            let c = try PayfleetCommand.parseAsRoot(
                ["settlement", "report", "--date", "2026-11-23", "--state-file", books.settlementPath, "--format", format])
            return try (c as! SettlementCommand.Report).render()
        }
        let days = try #require(try JSONSerialization.jsonObject(with: Data(try report("json").utf8)) as? [[String: Any]])
        let rec = try #require((days.first { $0["merchant_id"] as? String == "m_lon" }?["reconciliation"] as? [[String: Any]])?.first)
        #expect(rec["all_match"] as? Bool == true && rec["provider"] as? String == "stripe")
        #expect((rec["payouts"] as? [[String: Any]] ?? []).contains { $0["reference"] as? String == "po_T1" && $0["status"] as? String == "ok" })
        let csv = try report("csv")
        #expect(csv.hasPrefix("merchant_id,currency,date,count,gross,refunds,disputes,fees,net,adjustments,adjusted_net,failed_count,payouts,closed,reconciliation,reconciliation_mismatches\n"))
        #expect(csv.contains(",ok,0\n"))
        #expect(try report("table").contains("stripe m_lon run 1"))
        let html = try report("html")
        #expect(html.contains("<section id=\"reconciliation\">") && html.contains("stripe — m_lon: reconciled"))
    }

    @Test("Stripe planted mismatch: one altered fee and one missing payout line are reported, stored, and set payfleet_reconciliation_mismatches")
    func stripePlanted() async throws {
        let po1 = Self.stripeLines.filter { $0.payout == "po_T1" }.reduce(Int64(0)) { $0 + $1.net }
        let books = try await LocalBooks.make("payout-stripe-bad")
        defer { try? FileManager.default.removeItem(atPath: books.dir) }
        try await books.apply(Self.stripeEvents(payout: po1))
        var lines = Self.stripeLines
        lines[0].fee = 190  // altered: the books hold 170
        lines.remove(at: 2)  // the refund's line is missing from po_T1
        let badPayout = lines.filter { $0.payout == "po_T1" }.reduce(Int64(0)) { $0 + $1.net }
        #expect(badPayout == 6_235 - 20 + 2_000)
        let file = try books.write("bad.csv", PayoutFiles.stripe(lines))
        let (j, status) = try await Self.reconcile([
            "--date", "2026-11-23", "--provider", "stripe", "--state-file", books.settlementPath, "--ledger-file", books.ledgerPath, file,
        ])
        #expect(status == 1)
        #expect((j["fee_mismatches"] as? [[String: Any]] ?? []).map { $0["reference"] as? String } == ["pi_TA"])
        let p1 = try #require(Self.payout(j, "po_T1"))
        #expect(p1["status"] as? String == "mismatch" && Self.int(p1["lines_net"]) == badPayout && Self.int(p1["ours"]) == po1)
        let bal = try #require((j["balances"] as? [[String: Any]])?.first)
        #expect(bal["status"] as? String == "mismatch")
        // The refund the file lacks is what only the books know.
        #expect(Self.int(bal["books_only"]) == -2_000)
        let mismatches = try #require(j["mismatches"] as? [String: Int])
        #expect(mismatches == ["missing_ours": 0, "missing_provider": 0, "amount": 0, "fee": 1, "payout": 1, "balance": 1])

        // settlement-aggregator's gauge, from the stored run.
        let registry = PrometheusCollectorRegistry()
        let metrics = ReconciliationMetrics(path: books.dir + "/reconciliation.sqlite", registry: registry, logger: Logger(label: "t"))
        let store = try await ReconciliationStore.open(path: books.dir + "/reconciliation.sqlite", logger: Logger(label: "t"))
        try await metrics.refresh(store)
        let text = registry.emitToString()
        for (kind, value) in [("fee", 1), ("payout", 1), ("balance", 1), ("amount", 0), ("missing_ours", 0)] {
            let line = text.split(separator: "\n").first {
                $0.hasPrefix("payfleet_reconciliation_mismatches{") && $0.contains("kind=\"\(kind)\"")
                    && $0.contains("merchant=\"m_lon\"") && $0.contains("provider=\"stripe\"")
            }
            // Gauges are doubles in the text format ("1.0").
            #expect(line.map { $0.hasSuffix(" \(value)") || $0.hasSuffix(" \(value).0") } == true, "\(kind): \(text)")
        }
    }

    // Adyen: merchant m_bah (BHD, three decimals). Batch 412 is paid out on 2026-11-22 by its
    // MerchantPayout line; batch 413 has no payout yet.
    static let adyenLines: [PayoutFiles.AdyenLine] = [
        .init(psp: "8816000000000001", type: "Settled", created: "2026-11-20 10:15:31", gross: 12_345, fees: [120, 10, 5, 60], batch: "412"),
        .init(psp: "8816000000000004", type: "Settled", created: "2026-11-20 11:00:00", gross: 750, fees: [10, 1, 1, 3], batch: "412"),
        .init(psp: "8816000000000001", type: "Refunded", created: "2026-11-20 17:42:08", gross: -2_000, fees: [50, 0, 0, 0], batch: "412"),
        .init(psp: "8816000000000005", type: "Settled", created: "2026-11-21 13:00:00", gross: 5_000, fees: [40, 5, 5, 20], batch: "413"),
    ]

    static func adyenFile(_ lines: [PayoutFiles.AdyenLine], payout: Int64?) -> String {
        var all = lines
        if let payout {
            all.append(.init(psp: "", type: "MerchantPayout", created: "2026-11-22 01:00:00", gross: 0, fees: [], batch: "412", payout: payout))
        }
        return PayoutFiles.adyen(all)
    }

    static let adyenEvents: [PaymentEvent] = [
        event("a1", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T07:15:00Z", amount: 12_345, currency: "BHD", payment: "8816000000000001", provider: "adyen"),
        event("a4", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T08:00:00Z", amount: 750, currency: "BHD", payment: "8816000000000004", provider: "adyen"),
        event("a1r", .paymentRefunded, merchant: "m_bah", at: "2026-11-20T14:42:00Z", amount: 2_000, currency: "BHD", payment: "8816000000000001", provider: "adyen"),
        event("a5", .paymentSucceeded, merchant: "m_bah", at: "2026-11-21T10:00:00Z", amount: 5_000, currency: "BHD", payment: "8816000000000005", provider: "adyen"),
    ]

    /// The canonical events in ingest's outbox, as the relay would publish them.
    static func outboxEvents(_ path: String) throws -> [PaymentEvent] {
        let db = try SQLiteConnection(path: path, readOnly: true)
        return try db.query("SELECT body FROM outbox ORDER BY seq").map { try EventCodec.decode(Data($0.blob(0) ?? [])) }
    }

    @Test("Adyen --post: commission, markup, scheme fees and interchange posted once each as fee.assessed and the batch payout as payout.paid; after the workers apply them PaymentFees and Clearing equal the report")
    func adyenPost() async throws {
        let lines = Self.adyenLines
        let batch412 = lines.filter { $0.batch == "412" }.reduce(Int64(0)) { $0 + $1.net }
        let fees = lines.reduce(Int64(0)) { $0 + $1.fees.reduce(0, +) }
        let unpaid = lines.filter { $0.batch == "413" }.reduce(Int64(0)) { $0 + $1.net }
        #expect(batch412 == 10_835 && fees == 330 && unpaid == 4_930)
        let books = try await LocalBooks.make("payout-adyen")
        defer { try? FileManager.default.removeItem(atPath: books.dir) }
        try await books.apply(Self.adyenEvents)
        let file = try books.write("settlement_detail_report_batch_412.csv", Self.adyenFile(lines, payout: batch412))
        let ingest = books.dir + "/ingest.sqlite"
        _ = try await Outbox(path: ingest, logger: Logger(label: "t"))  // the state file a running ingest keeps
        let args = ["--date", "2026-11-22", "--provider", "adyen", "--merchant", "m_bah", "--state-file", books.settlementPath,
                    "--ledger-file", books.ledgerPath, "--ingest-state-file", ingest, "--post", file]

        let (first, status) = try await Self.reconcile(args)
        #expect(status == 0, "\(first)")
        let posted = first["posted"] as? [[String: Any]] ?? []
        let nonZeroFees = lines.reduce(0) { $0 + $1.fees.filter { $0 > 0 }.count }
        #expect(posted.count == nonZeroFees + 1 && posted.allSatisfy { $0["duplicate"] as? Bool == false })
        let events = try Self.outboxEvents(ingest)
        #expect(events.count == nonZeroFees + 1)
        let feeEvents = events.filter { $0.type == .feeAssessed }
        #expect(feeEvents.reduce(Int64(0)) { $0 + $1.amount.value } == fees)
        #expect(Set(feeEvents.map { $0.source.eventID }).contains("8816000000000001:fee:commission:412"))
        #expect(feeEvents.first { $0.source.eventID == "8816000000000001:fee:commission:412" }?.amount.value == 120)
        #expect(feeEvents.allSatisfy { $0.source.provider == "adyen" && $0.payment?.id?.hasPrefix("881600000000000") == true })
        let payout = try #require(events.first { $0.type == .payoutPaid })
        #expect(payout.amount.value == batch412 && payout.metadata["payout_id"] == "412")

        // Reconciling the same report again posts nothing new.
        let (second, status2) = try await Self.reconcile(args)
        #expect(status2 == 0)
        #expect((second["posted"] as? [[String: Any]] ?? []).allSatisfy { $0["duplicate"] as? Bool == true })
        #expect(try Self.outboxEvents(ingest).count == nonZeroFees + 1)

        // The workers apply what the relay publishes; the books then equal the report.
        try await books.apply(events)
        #expect(try books.balance("Expenses:M-bah:PaymentFees", "BHD") == fees)
        #expect(try books.balance("Assets:M-bah:Clearing:Adyen", "BHD", asOf: "2026-11-22") == unpaid)
        #expect(try books.balance("Assets:M-bah:Bank", "BHD") == batch412)
        let (third, status3) = try await Self.reconcile(args)
        #expect(status3 == 0, "\(third)")
        let p = try #require(Self.payout(third, "412"))
        #expect(p["status"] as? String == "ok" && Self.int(p["provider"]) == batch412 && Self.int(p["ours"]) == batch412)
        #expect(Self.payout(third, "413")?["status"] as? String == "expected")
        let bal = try #require((third["balances"] as? [[String: Any]])?.first)
        #expect(Self.int(bal["ledger"]) == unpaid && bal["status"] as? String == "ok")
        // Settlement: each fee on its payment's business day (Bahrain), once.
        let c = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--state-file", books.settlementPath, "--json"])
        let day = try LocalSettlement.parseReport(try (c as! SettlementCommand.Report).render())
        let day20Fees = lines.filter { $0.created.hasPrefix("2026-11-20") }.reduce(Int64(0)) { $0 + $1.fees.reduce(0, +) }
        #expect(day[.init(merchant: "m_bah", currency: "BHD", day: "2026-11-20")]?.fees == day20Fees)
    }

    @Test("Adyen planted mismatch after posting: an altered commission, a line missing from batch 412 and a line no event explains are reported as mismatches and missing events")
    func adyenPlanted() async throws {
        let lines = Self.adyenLines
        let batch412 = lines.filter { $0.batch == "412" }.reduce(Int64(0)) { $0 + $1.net }
        let books = try await LocalBooks.make("payout-adyen-bad")
        defer { try? FileManager.default.removeItem(atPath: books.dir) }
        try await books.apply(Self.adyenEvents)
        let ingest = books.dir + "/ingest.sqlite"
        _ = try await Outbox(path: ingest, logger: Logger(label: "t"))  // the state file a running ingest keeps
        let good = try books.write("good.csv", Self.adyenFile(lines, payout: batch412))
        let base = ["--date", "2026-11-22", "--provider", "adyen", "--merchant", "m_bah", "--state-file", books.settlementPath,
                    "--ledger-file", books.ledgerPath, "--ingest-state-file", ingest]
        _ = try await Self.reconcile(base + ["--post", good])
        try await books.apply(try Self.outboxEvents(ingest))

        var bad = lines
        bad[0].fees[0] = 130  // commission altered: the books hold 120
        bad.remove(at: 1)  // 8816000000000004 missing from batch 412
        bad.append(.init(psp: "8816000000000099", type: "Settled", created: "2026-11-21 09:00:00", gross: 5_000, fees: [60, 10, 10, 20], batch: "412"))
        let badFile = try books.write("bad.csv", Self.adyenFile(bad, payout: batch412))
        let (j, status) = try await Self.reconcile(base + [badFile])
        #expect(status == 1)
        #expect((j["fee_mismatches"] as? [[String: Any]] ?? []).map { $0["reference"] as? String } == ["8816000000000001"])
        let p = try #require(Self.payout(j, "412"))
        let badLines = bad.filter { $0.batch == "412" }.reduce(Int64(0)) { $0 + $1.net }
        #expect(p["status"] as? String == "mismatch" && Self.int(p["lines_net"]) == badLines && Self.int(p["provider"]) == batch412)
        let missing = j["missing_events"] as? [[String: Any]] ?? []
        #expect(missing.contains {
            $0["reference"] as? String == "8816000000000099" && $0["event"] as? String == "payment.succeeded"
                && $0["provider_event"] as? String == "AUTHORISATION"
        })
        let m = try #require(j["mismatches"] as? [String: Int])
        #expect(m["fee"] == 1 && m["payout"] == 1 && m["missing_ours"] == 1)
        let runs = try ReconciliationStore.latest(path: books.dir + "/reconciliation.sqlite", date: "2026-11-22")
        #expect(runs.first?.allMatch == false && runs.first?.items.contains { $0.section == "missing_event" && $0.reference == "8816000000000099" } == true)
    }

    @Test("Bad payout files: net that is not gross − fee, a missing Batch Number column, an unparseable date, --post for Stripe; each names the problem")
    func badInput() async throws {
        func error(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "" } catch { return "\(error)" }
        }
        let h = PayoutFiles.stripeHeader.joined(separator: ",")
        var row = Array(repeating: "", count: PayoutFiles.stripeHeader.count)
        func set(_ k: String, _ v: String) { row[PayoutFiles.stripeHeader.firstIndex(of: k)!] = v }
        set("balance_transaction_id", "txn_1"); set("currency", "gbp"); set("gross", "10.00"); set("fee", "0.30")
        set("net", "9.80"); set("reporting_category", "charge"); set("created", "2026-11-20 10:00:00")
        #expect(error { try PayoutReport.stripe(h + "\n" + row.joined(separator: ",") + "\n") }
            == "stripe file line 2: net 9.80 is not gross 10.00 − fee 0.30")
        set("net", "9.70"); set("created", "20/11/2026")
        #expect(error { try PayoutReport.stripe(h + "\n" + row.joined(separator: ",") + "\n") }
            == "stripe file line 2: created '20/11/2026' is not a date")
        let adyen = PayoutFiles.adyenHeader.filter { $0 != "Batch Number" }.joined(separator: ",") + "\n"
        #expect(error { try PayoutReport.adyen(adyen) } == "adyen file: missing column 'Batch Number'")

        let books = try await LocalBooks.make("payout-bad-input")
        defer { try? FileManager.default.removeItem(atPath: books.dir) }
        let file = try books.write("s.csv", PayoutFiles.stripe(Array(Self.stripeLines.prefix(1))))
        let c = try PayfleetCommand.parseAsRoot(
            ["settlement", "reconcile", "--date", "2026-11-23", "--provider", "stripe", "--state-file", books.settlementPath, "--post", file])
        do {
            _ = try await (c as! SettlementCommand.Reconcile).output()
            Issue.record("expected --post to be refused for Stripe")
        } catch {
            #expect("\(error)".hasPrefix("--post: only Adyen"))
        }
        // Nothing was stored for the refused run.
        #expect(!FileManager.default.fileExists(atPath: books.dir + "/reconciliation.sqlite"))
    }
}
