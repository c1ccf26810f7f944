import ArgumentParser
import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetSettlement
import PayfleetTestKit
import Testing

enum Fixtures {
    static func path(_ name: String) -> String {
        Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)!.path
    }

    /// What the worker recorded for the fixture files: Stripe (London, GBP and JPY) and Adyen
    /// (Bahrain, BHD and EUR), business day 2026-11-20, plus earlier payments the files refer to.
    static let events: [PaymentEvent] = [
        event("s1", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T09:15:01Z", amount: 1999, currency: "GBP", fee: 50, payment: "pi_3QAcme0001"),
        event("s2", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T13:40:10Z", amount: 12000, currency: "GBP", fee: 188, payment: "pi_3QAcme0002"),
        event("s3", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T23:59:29Z", amount: 1500, currency: "JPY", fee: 54, payment: "pi_3QAcme0003"),
        event("s4", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T16:02:45Z", amount: 2000, currency: "GBP", payment: "pi_3QAcme0002"),
        event("s5", .paymentSucceeded, merchant: "m_lon", at: "2026-11-19T11:04:59Z", amount: 4500, currency: "GBP", fee: 103, payment: "pi_3QAcme0004"),
        event("s6", .paymentDisputed, merchant: "m_lon", at: "2026-11-20T10:20:00Z", amount: 4500, currency: "GBP", fee: 1500, payment: "pi_3QAcme0004"),
        event("s7", .paymentFailed, merchant: "m_lon", at: "2026-11-20T12:00:00Z", amount: 999, currency: "GBP", payment: "pi_3QAcmeFail"),
        event("s8", .payoutPaid, merchant: "m_lon", at: "2026-11-20T06:00:00Z", amount: 50000, currency: "GBP", payment: "po_1QAcme"),
        event("a1", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T07:15:31Z", amount: 12345, currency: "BHD", fee: 195, payment: "8816000000000001", provider: "adyen"),
        event("a2", .paymentRefunded, merchant: "m_bah", at: "2026-11-20T14:42:08Z", amount: 2000, currency: "BHD", payment: "8816000000000001", provider: "adyen"),
        event("a3", .paymentSucceeded, merchant: "m_bah", at: "2026-11-18T09:00:00Z", amount: 30500, currency: "BHD", fee: 300, payment: "8816000000000002", provider: "adyen"),
        event("a4", .paymentDisputed, merchant: "m_bah", at: "2026-11-20T09:01:00Z", amount: 30500, currency: "BHD", payment: "8816000000000002", provider: "adyen"),
        event("a5", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T16:30:45Z", amount: 4990, currency: "EUR", fee: 58, payment: "8816000000000003", provider: "adyen"),
        event("a6", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T18:10:00Z", amount: 750, currency: "BHD", fee: 15, payment: "8816000000000004", provider: "adyen"),
    ]

    static func state() async throws -> (dir: String, file: String) {
        let dir = TestEnvironment.makeTempDir("settle-recon")
        let store = try await LocalSettlement.store(dir)
        try await LocalSettlement.apply(events, handler: SettlementHandler(merchants: SettlementStream.merchants), store: store)
        return (dir, store.path)
    }
}

@Suite struct ReconcileTests {
    static func run(_ args: [String]) async throws -> (text: String, status: Int32) {
        let command = try PayfleetCommand.parseAsRoot(args)
        return try await #require(command as? SettlementCommand.Reconcile).output()
    }

    static func failure(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "" } catch { return "\(error)" }
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    static func refs(_ o: [String: Any], _ key: String) -> [String] {
        (o[key] as? [[String: Any]] ?? []).map { "\($0["kind"]!) \($0["reference"]!)" }
    }

    @Test("Stripe payout reconciliation: a clean file matches and exits 0; a missing payment, an extra line and a fee mismatch exit 1")
    func stripe() async throws {
        let (dir, file) = try await Fixtures.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["settlement", "reconcile", "--date", "2026-11-20", "--provider", "stripe", "--state-file", file, "--json"]
        let clean = try await Self.run(base + [Fixtures.path("stripe-payout-reconciliation-clean.csv")])
        #expect(clean.status == 0, "\(clean.text)")
        let c = try Self.json(clean.text)
        #expect(Self.refs(c, "matched").count == 6)
        #expect(c["skipped_lines"] as? Int == 1)
        // JPY has no minor unit: "1500" in the file is 1500 in the event.
        let jpy = (c["matched"] as? [[String: Any]] ?? []).first { $0["currency"] as? String == "JPY" }
        #expect((jpy?["provider"] as? [String: Any])?["amount"] as? Int == 1500)

        let bad = try await Self.run(base + [Fixtures.path("stripe-payout-reconciliation-bad.csv")])
        #expect(bad.status == 1)
        let b = try Self.json(bad.text)
        #expect(Self.refs(b, "missing_provider") == ["payment pi_3QAcme0003"])
        #expect(Self.refs(b, "missing_ours") == ["payment pi_3QAcme9999"])
        #expect(Self.refs(b, "fee_mismatches") == ["payment pi_3QAcme0001"])
        #expect(Self.refs(b, "amount_mismatches").isEmpty)
        #expect(Self.refs(b, "matched").count == 4)
        let text = try await Self.run(Array(base.dropLast()) + [Fixtures.path("stripe-payout-reconciliation-bad.csv")]).text
        #expect(text.contains("NOT RECONCILED") && text.contains("pi_3QAcme0001  ours 19.99 GBP fee 0.50 GBP  provider 19.99 GBP fee 0.55 GBP"))
    }

    @Test("Adyen Settlement Details Report: BHD with three decimals converts exactly; injected problems are found")
    func adyen() async throws {
        let (dir, file) = try await Fixtures.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["settlement", "reconcile", "--date", "2026-11-20", "--provider", "adyen", "--state-file", file, "--json"]
        let clean = try await Self.run(base + [Fixtures.path("adyen-settlement-details-clean.csv")])
        #expect(clean.status == 0, "\(clean.text)")
        let c = try Self.json(clean.text)
        #expect(Self.refs(c, "matched").sorted() == [
            "dispute 8816000000000002", "payment 8816000000000001", "payment 8816000000000003", "payment 8816000000000004",
            "refund 8816000000000001",
        ])
        #expect(c["skipped_lines"] as? Int == 2)
        let bhd = (c["matched"] as? [[String: Any]] ?? []).first { $0["reference"] as? String == "8816000000000001" && $0["kind"] as? String == "payment" }
        #expect((bhd?["provider"] as? [String: Any])?["amount"] as? Int == 12345)
        #expect((bhd?["provider"] as? [String: Any])?["fee"] as? Int == 195)

        let bad = try await Self.run(base + [Fixtures.path("adyen-settlement-details-bad.csv")])
        #expect(bad.status == 1)
        let b = try Self.json(bad.text)
        #expect(Self.refs(b, "missing_provider") == ["payment 8816000000000004"])
        #expect(Self.refs(b, "missing_ours") == ["payment 8816000000000099"])
        #expect(Self.refs(b, "fee_mismatches") == ["payment 8816000000000003"])
    }

    @Test("The built payfleet binary exits 0 on a clean file and 1 on a file that does not reconcile")
    func binaryExitStatus() async throws {
        let binary = TestEnvironment.binDir + "/payfleet"
        try #require(FileManager.default.isExecutableFile(atPath: binary), "payfleet not built at \(binary)")
        let (dir, file) = try await Fixtures.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, expected) in [("stripe-payout-reconciliation-clean.csv", Int32(0)), ("stripe-payout-reconciliation-bad.csv", 1)] {
            let (status, out) = try Tool.run(binary, ["settlement", "reconcile", "--date", "2026-11-20", "--provider", "stripe",
                                                      "--state-file", file, Fixtures.path(name)])
            #expect(status == expected, "\(name): \(out)")
        }
        let (status, out) = try Tool.run(binary, ["settlement", "reconcile", "--date", "2026-11-20", "--provider", "paypal",
                                                  "--state-file", file, Fixtures.path("stripe-payout-reconciliation-clean.csv")])
        #expect(status != 0 && out.contains("paypal"))
    }

    @Test("Bad provider files: a missing column, an over-precise amount, an unknown currency, an unclosed quote each name the problem")
    func badFiles() throws {
        func stripeError(_ text: String) -> String {
            do { _ = try ProviderFile.stripe(text); return "" } catch { return "\(error)" }
        }
        let header = "currency,gross,fee,reporting_category,payment_intent_id\n"
        #expect(stripeError("currency,gross,reporting_category,payment_intent_id\n") == "stripe file: missing column 'fee'")
        #expect(stripeError(header + "jpy,1500.5,0,charge,pi_1\n") == "stripe file line 2: gross: '1500.5' has more decimal places than JPY allows")
        #expect(stripeError(header + "gbp,19.999,0,charge,pi_1\n") == "stripe file line 2: gross: '19.999' has more decimal places than GBP allows")
        #expect(stripeError(header + "xxx,1.00,0,charge,pi_1\n") == "stripe file line 2: currency 'xxx' is not an ISO 4217 code")
        #expect(stripeError(header + "gbp,1.00,0,charge,\"pi_1\n") == "CSV line 3: a quoted field is never closed")
        #expect(stripeError("") == "stripe file: empty")
        do {
            _ = try ProviderFile.adyen("Psp Reference,Type,Gross Currency,Gross Debit (GC),Gross Credit (GC)\nX,Settled,BHD,,1.2345\n")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "adyen file line 2: Gross Credit (GC): '1.2345' has more decimal places than BHD allows")
        }
        // Exact conversion, BHD: 12.345 → 12345 fils; Adyen fee columns summed.
        let ok = try ProviderFile.adyen(
            "Psp Reference,Type,Gross Currency,Gross Debit (GC),Gross Credit (GC),Net Currency,Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC)\n"
                + "P1,Settled,BHD,,12.345,BHD,0.120,0.010,0.005,0.060\n")
        #expect(ok.lines == [ProviderLine(line: 2, kind: .payment, reference: "P1", currency: "BHD", amount: 12345, fee: 195)])
    }

    @Test("CLI bad input: an impossible --date and a missing state file fail with one line naming them")
    func badCLI() throws {
        let r = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-13-01", "--state-file", "/nonexistent.sqlite"])
        let report = try #require(r as? SettlementCommand.Report)
        #expect(Self.failure { try report.render() } == "--date: '2026-13-01' is not a date (YYYY-MM-DD)")
        let r2 = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--state-file", "/nonexistent.sqlite"])
        #expect(Self.failure { try (r2 as! SettlementCommand.Report).render() }.contains("no settlement state found"))
        #expect(throws: (any Error).self) { try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--format", "pdf"]) }
    }
}

/// Runs a program and returns its exit status and combined output.
enum Tool {
    static func run(_ path: String, _ args: [String], timeout: TimeInterval = 120) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        // Output to a file, so a chatty child never blocks on a full pipe.
        let log = NSTemporaryDirectory() + "tool-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: log) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            p.terminate()
            usleep(500_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        try? handle.close()
        return (p.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// The first of `names` found on PATH.
    static func find(_ names: [String]) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for n in names {
            for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(n)") {
                return "\(dir)/\(n)"
            }
        }
        return nil
    }
}

@Suite struct PartitionMergeTests {
    @Test("With partitions: 2 the CLI reads settlement-aggregator.p0/.p1.sqlite from the config and merges them")
    func mergesPartitions() async throws {
        let dir = TestEnvironment.makeTempDir("settle-parts")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = SettlementHandler(merchants: SettlementStream.merchants)
        let p0 = try await LocalSettlement.store(dir + "/state", name: "settlement-aggregator.p0.sqlite")
        let p1 = try await LocalSettlement.store(dir + "/state", name: "settlement-aggregator.p1.sqlite")
        try await LocalSettlement.apply(
            [event("p0a", .paymentSucceeded, merchant: "m_lon", at: "2026-11-20T10:00:00Z", amount: 1999, currency: "GBP", fee: 50)],
            handler: h, store: p0)
        try await LocalSettlement.apply(
            [event("p1a", .paymentSucceeded, merchant: "m_bah", at: "2026-11-20T10:00:00Z", amount: 12_345, currency: "BHD", fee: 195),
             event("p1b", .paymentSucceeded, merchant: "m_tyo", at: "2026-11-20T10:00:00Z", amount: 1500, currency: "JPY", fee: 54)],
            handler: h, store: p1)
        let config = dir + "/payfleet.yaml"
        try """
            state_dir: \(dir)/state
            broker:
              url: amqp://guest:guest@127.0.0.1:1/
            settlement-aggregator:
              partitions: 2

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let c = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--json", "--config", config])
        let got = try LocalSettlement.parseReport(try (c as! SettlementCommand.Report).render())
        #expect(Set(got.keys.map { "\($0.merchant) \($0.currency)" }) == ["m_lon GBP", "m_bah BHD", "m_tyo JPY"])
        #expect(got[.init(merchant: "m_bah", currency: "BHD", day: "2026-11-20")]?.gross == Int64(12_345))
        let table = try (PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--config", config]) as! SettlementCommand.Report).render()
        #expect(table.contains("12.345") && table.contains("19.99") && table.contains("1500"))
    }
}
