import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetIngest
import PayfleetTestKit
import Testing

/// Issue 19, what must be shown 2, on a running fleet: Stripe's webhooks carry only the id of
/// each charge's balance transaction; ingest fetches the fee from the (loopback) Stripe API and
/// posts it as `fee.assessed`; the workers book it; `payfleet settlement reconcile` then matches
/// Stripe's payout reconciliation and ending balance reports against those books. Every figure
/// expected comes from the test's own table of charges (Stripe's published charge, payout and
/// balance transaction objects with the table's amounts) — not from the code under test.
@Suite(.serialized)
struct FeeReconcileFleetTests {
    static let key = "sk_test_feeReconcileFleetKey"
    static let secret = "whsec_payfleetSandboxStripeSecret1"  // config/payfleet.yaml's sandbox secret

    /// One charge of the run: gross and Stripe's fee in pence, and the payout that settles it
    /// (nil: still in the balance on the report date).
    struct Charge {
        var n: Int
        var gross: Int64
        var fee: Int64
        var payout: String?
        var net: Int64 { gross - fee }
    }

    nonisolated(unsafe) static let fixtures: [String: Any] = {
        let path = TestEnvironment.repoRoot + "/Tests/PayfleetIngestTests/Fixtures/stripe-objects.json"
        return (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))) as? [String: Any] ?? [:]
    }()

    static func object(_ name: String) throws -> [String: Any] {
        try #require(fixtures[name] as? [String: Any], "Stripe fixture '\(name)' missing")
    }

    /// Stripe's `Stripe-Signature` header for `body`, computed by Stripe's own Python library
    /// (`stripe.WebhookSignature`); the scheme as Stripe documents it when the library is missing.
    static func signature(_ body: [UInt8], at t: Int64) -> String {
        let b64 = Data(body).base64EncodedString()
        let script = """
            import stripe, base64
            print(stripe.WebhookSignature._compute_signature('\(t).' + base64.b64decode('\(b64)').decode(), '\(secret)'))
            """
        if let v1 = python(script), v1.count == 64 { return "t=\(t),v1=\(v1)" }
        return StripeSignature.sign(payload: body, secret: secret, timestamp: t)
    }

    static func python(_ script: String) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func post(_ fleet: ProcessFleet, _ event: [String: Any], at t: Int64) async throws {
        let body = Array(try JSONSerialization.data(withJSONObject: event, options: [.sortedKeys]))
        var r = URLRequest(url: URL(string: fleet.ingestURL + "/webhooks/stripe")!)
        r.httpMethod = "POST"
        r.setValue(signature(body, at: t), forHTTPHeaderField: "Stripe-Signature")
        r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        r.httpBody = Data(body)
        let (data, response) = try await URLSession.shared.data(for: r)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 202 else { throw TestFailure("ingest answered \(status): \(String(decoding: data, as: UTF8.self))") }
    }

    /// A `YYYY-MM-DD HH:MM:SS` UTC time, as Stripe's report columns write it.
    static func reportTime(_ t: Int64) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }

    /// Pence as pounds ("12.05", "-0.40"), written from the integer.
    static func pounds(_ v: Int64) -> String {
        let a = abs(v)
        return (v < 0 ? "-" : "") + "\(a / 100)." + (a % 100 < 10 ? "0" : "") + "\(a % 100)"
    }

    /// Stripe's itemized payout reconciliation report (docs.stripe.com/reports/payout-reconciliation)
    /// over `charges`, one line per charge's balance transaction.
    static func report(_ charges: [Charge], tag: String, created: Int64) -> String {
        let header = [
            "automatic_payout_id", "automatic_payout_effective_at", "balance_transaction_id", "created_utc", "created",
            "available_on_utc", "available_on", "currency", "gross", "fee", "net", "reporting_category", "source_id",
            "description", "customer_facing_amount", "customer_facing_currency", "charge_id", "payment_intent_id",
            "payment_method_type", "card_brand",
        ]
        let at = reportTime(created)
        var lines = [header.joined(separator: ",")]
        for c in charges {
            let row: [String: String] = [
                "automatic_payout_id": c.payout ?? "", "automatic_payout_effective_at": c.payout == nil ? "" : at,
                "balance_transaction_id": "txn_fr\(tag)\(c.n)", "created_utc": at, "created": at, "available_on_utc": at,
                "available_on": at, "currency": "gbp", "gross": pounds(c.gross), "fee": pounds(c.fee), "net": pounds(c.net),
                "reporting_category": "charge", "source_id": "ch_fr\(tag)\(c.n)", "description": "Order \(c.n)",
                "customer_facing_amount": pounds(c.gross), "customer_facing_currency": "gbp", "charge_id": "ch_fr\(tag)\(c.n)",
                "payment_intent_id": "", "payment_method_type": "card", "card_brand": "visa",
            ]
            lines.append(header.map { row[$0] ?? "" }.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func int(_ v: Any?) -> Int64? { (v as? NSNumber)?.int64Value }

    @Test("A fleet run: fees fetched from each charge's balance transaction and booked; the payout report and the ending balance equal PaymentFees and Clearing to the penny; a planted fee and a missing line are reported and alert")
    func feesAndPayoutsAgainstTheReports() async throws {
        let bts = Locked<[String: [String: Any]]>([:])
        let server = LoopbackStripe(LoopbackStripe.eventsAPI(key: Self.key, events: { [] }, other: { req, _ in
            guard req.path.hasPrefix("/v1/balance_transactions/") else { return nil }
            return bts.current[String(req.path.dropFirst("/v1/balance_transactions/".count))].map { .json($0) }
        }))
        try await server.start()
        defer { server.stop() }
        let fleet = ProcessFleet("feerec")
        try fleet.useStripeAPI(server, key: Self.key)
        try await fleet.run { try await run($0, server: server, balanceTransactions: bts) }
    }

    func run(_ fleet: ProcessFleet, server: LoopbackStripe, balanceTransactions: Locked<[String: [String: Any]]>) async throws {
        let tag = fleet.tag.lowercased().filter { $0.isLetter || $0.isNumber }
        let payoutID = "po_fr\(tag)"
        let charges: [Charge] = [
            .init(n: 1, gross: 12_500, fee: 201, payout: payoutID),
            .init(n: 2, gross: 4_999, fee: 93, payout: payoutID),
            .init(n: 3, gross: 250, fee: 24, payout: payoutID),
            .init(n: 4, gross: 31_000, fee: 470, payout: nil),
        ]
        // The facts, by hand: what the books must hold after the run.
        let fees = charges.reduce(Int64(0)) { $0 + $1.fee }
        let paid = charges.filter { $0.payout != nil }.reduce(Int64(0)) { $0 + $1.net }
        let ending = charges.filter { $0.payout == nil }.reduce(Int64(0)) { $0 + $1.net }
        #expect(fees == 788 && paid == 17_431 && ending == 30_530)
        let created = Int64(Date().timeIntervalSince1970) - 120
        let date = String(Self.reportTime(created).prefix(10))

        for c in charges {
            var bt = try Self.object("balance_transaction")
            bt["id"] = "txn_fr\(tag)\(c.n)"
            bt["amount"] = c.gross
            bt["fee"] = c.fee
            bt["net"] = c.net
            bt["currency"] = "gbp"
            bt["source"] = "ch_fr\(tag)\(c.n)"
            bt["created"] = created
            bt["fee_details"] = [["amount": c.fee, "currency": "gbp", "description": "Stripe processing fees", "type": "stripe_fee"]]
            balanceTransactions.withLock { $0[bt["id"] as! String] = bt }
        }
        // The webhooks as Stripe sends them: the charge with its balance transaction's id only.
        var envelope = try Self.object("event")
        envelope["created"] = created
        for c in charges {
            var charge = try Self.object("charge")
            charge["id"] = "ch_fr\(tag)\(c.n)"
            charge["amount"] = c.gross
            charge["amount_captured"] = c.gross
            charge["currency"] = "gbp"
            charge["captured"] = true
            charge["created"] = created
            charge["balance_transaction"] = "txn_fr\(tag)\(c.n)"
            var e = envelope
            e["id"] = "evt_fr\(tag)\(c.n)"
            e["type"] = "charge.succeeded"
            e["data"] = ["object": charge]
            try await Self.post(fleet, e, at: Int64(Date().timeIntervalSince1970))
        }
        var payout = try Self.object("payout")
        payout["id"] = payoutID
        payout["amount"] = paid
        payout["currency"] = "gbp"
        payout["status"] = "paid"
        payout["created"] = created
        payout["arrival_date"] = created
        var pe = envelope
        pe["id"] = "evt_fr\(tag)po"
        pe["type"] = "payout.paid"
        pe["data"] = ["object": payout]
        try await Self.post(fleet, pe, at: Int64(Date().timeIntervalSince1970))

        // The books, read through the operator's own command.
        func balances() async throws -> [String: Int64] {
            let r = try await CLIRun.run(
                ["ledger", "balance", "--merchant", "m_acme", "--json", "--config", fleet.config], environment: [:], dir: fleet.dir)
            var out: [String: Int64] = [:]
            for o in r.json as? [[String: Any]] ?? [] where o["currency"] as? String == "GBP" {
                if let a = o["account"] as? String { out[a] = Self.int(o["balance"]) }
            }
            return out
        }
        func balance(_ suffix: String, in b: [String: Int64]) -> Int64? { b.first { $0.key.hasSuffix(suffix) }?.value }
        let booked = try await eventually(timeout: .seconds(90), every: .milliseconds(500)) {
            let b = try await balances()
            return balance(":PaymentFees", in: b) == fees && balance(":Clearing:Stripe", in: b) == ending
        }
        let books = try await balances()
        #expect(booked, "books: \(books); Stripe requests: \(server.requests.map(\.path))")
        // One fetch per balance transaction, each with the secret key.
        let fetched = server.requests.filter { $0.path.hasPrefix("/v1/balance_transactions/") }
        #expect(Set(fetched.map(\.path)).count == charges.count)
        #expect(fetched.allSatisfy { $0.headers["authorization"] == "Bearer \(Self.key)" })

        // Stripe's two reports for the day: the payout's lines, and what is still in the balance.
        let paidFile = fleet.dir + "/payout_reconciliation.csv", openFile = fleet.dir + "/ending_balance.csv"
        try Self.report(charges.filter { $0.payout != nil }, tag: tag, created: created).write(toFile: paidFile, atomically: true, encoding: .utf8)
        try Self.report(charges.filter { $0.payout == nil }, tag: tag, created: created).write(toFile: openFile, atomically: true, encoding: .utf8)
        func reconcile(_ files: [String]) async throws -> (json: [String: Any], status: Int32, stderr: String) {
            let r = try await CLIRun.run(
                ["settlement", "reconcile", "--json", "--date", date, "--provider", "stripe", "--merchant", "m_acme", "--config", fleet.config]
                    + files, environment: [:], dir: fleet.dir)
            return (r.json as? [String: Any] ?? [:], r.status, r.stderr)
        }
        func payoutRow(_ j: [String: Any]) -> [String: Any]? {
            (j["payouts"] as? [[String: Any]] ?? []).first { $0["payout"] as? String == payoutID }
        }
        let clean = try await reconcile([paidFile, openFile])
        #expect(clean.status == 0, "\(clean.json) \(clean.stderr)")
        let p = payoutRow(clean.json)
        #expect(p?["status"] as? String == "ok" && Self.int(p?["lines_net"]) == paid && Self.int(p?["ours"]) == paid, "\(clean.json)")
        let bal = (clean.json["balances"] as? [[String: Any]])?.first
        #expect(Self.int(bal?["provider"]) == ending && Self.int(bal?["ledger"]) == ending && bal?["status"] as? String == "ok", "\(clean.json)")
        #expect((clean.json["fee_mismatches"] as? [Any] ?? []).isEmpty)
        #expect((clean.json["missing_events"] as? [Any] ?? []).isEmpty)

        // Planted: Stripe's file says charge 1's fee was 2.11 (the books hold 2.01), and charge 2's
        // line is missing from the payout.
        var planted = charges
        planted[0].fee = 211
        planted.remove(at: 1)
        let badFile = fleet.dir + "/planted.csv"
        try Self.report(planted, tag: tag, created: created).write(toFile: badFile, atomically: true, encoding: .utf8)
        let bad = try await reconcile([badFile])
        #expect(bad.status == 1, "\(bad.json) \(bad.stderr)")
        #expect((bad.json["fee_mismatches"] as? [[String: Any]] ?? []).map { $0["reference"] as? String } == ["ch_fr\(tag)1"], "\(bad.json)")
        #expect(payoutRow(bad.json)?["status"] as? String == "mismatch")
        let mismatches = bad.json["mismatches"] as? [String: Int] ?? [:]
        #expect(mismatches["fee"] == 1 && mismatches["payout"] == 1, "\(mismatches)")

        // settlement-aggregator's alert metric, from the stored run (read every 15 s).
        let settlement = try #require(fleet.port("settlement-aggregator"))
        let alerted = await eventually(timeout: .seconds(40), every: .milliseconds(500)) {
            guard let url = URL(string: "http://127.0.0.1:\(settlement)/metrics"),
                let (data, _) = try? await URLSession.shared.data(from: url)
            else { return false }
            return String(decoding: data, as: UTF8.self).split(separator: "\n").contains {
                $0.hasPrefix("payfleet_reconciliation_mismatches{") && $0.contains("kind=\"fee\"") && $0.contains("merchant=\"m_acme\"")
                    && ($0.hasSuffix(" 1") || $0.hasSuffix(" 1.0"))
            }
        }
        #expect(alerted, "payfleet_reconciliation_mismatches{kind=\"fee\",merchant=\"m_acme\"} never reached 1")
        print("fee reconcile fleet: \(charges.count) charges, \(fetched.count) balance transactions fetched; PaymentFees \(fees), Clearing \(ending) after payout \(paid): reports agree; planted fee and missing line: \(mismatches)")
    }
}
