import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetLedger
import PayfleetTestKit
import Testing

/// Where the real accounting tools are (`scripts/install-deps.sh` installs them): hledger from
/// Debian, bean-check from PyPI's beancount in `.payfleet/tools` (or on PATH, or `$PAYFLEET_BEAN_CHECK`).
enum AccountingTools {
    static func find(_ name: String, extra: [String] = []) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let candidates = extra + path.split(separator: ":").map { "\($0)/\(name)" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
    static var hledger: String? {
        find("hledger", extra: ProcessInfo.processInfo.environment["PAYFLEET_HLEDGER"].map { [$0] } ?? [])
    }
    static var beanCheck: String? {
        find(
            "bean-check",
            extra: (ProcessInfo.processInfo.environment["PAYFLEET_BEAN_CHECK"].map { [$0] } ?? [])
                + [TestEnvironment.repoRoot + "/.payfleet/tools/bin/bean-check"])
    }

    /// Runs a tool; (exit status, stdout + stderr).
    static func run(_ tool: String, _ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

@Suite struct ExportTests {
    static let fixture: [PaymentEvent] = [
        ledgerEvent("evt_inv", .invoiceIssued, amount: 5000, customer: "cus_123", payment: nil, invoice: "inv_77"),
        ledgerEvent("evt_pay", .paymentSucceeded, amount: 1999, fee: 45, customer: "cus_123", invoice: "inv_77"),
        ledgerEvent(
            "evt_jpy", .paymentSucceeded, merchant: "m_tokyo", amount: 1500, currency: "JPY", fee: 30, provider: "adyen",
            at: "2026-11-25T03:00:00Z"),
        ledgerEvent(
            "evt_bhd", .paymentRefunded, merchant: "m_bahrain", amount: 1250, currency: "BHD", payment: "pi_b",
            at: "2026-11-26T09:00:00Z"),
        ledgerEvent("evt_fail", .paymentFailed, amount: 100),
    ]

    /// The fixture applied; the harness owns (and on release deletes) the SQLite file.
    func harness() async throws -> LedgerHarness {
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: LedgerStream.merchants))
        try await h.apply(Self.fixture)
        return h
    }

    @Test("CSV: the DESIGN §6 columns, signed minor units, one line per posting in date order")
    func csv() async throws {
        let h = try await harness()
        let csv = LedgerExportFormat.csv(try h.book().rows())
        #expect(
            csv == """
                date,transaction_id,event_id,merchant_id,account,currency,amount
                2026-11-24,evt_inv,evt_inv,m_acme,Assets:M-acme:Receivable:Cus-123,GBP,5000
                2026-11-24,evt_inv,evt_inv,m_acme,Income:M-acme:Sales,GBP,-5000
                2026-11-24,evt_pay,evt_pay,m_acme,Assets:M-acme:Clearing:Stripe,GBP,1954
                2026-11-24,evt_pay,evt_pay,m_acme,Expenses:M-acme:PaymentFees,GBP,45
                2026-11-24,evt_pay,evt_pay,m_acme,Assets:M-acme:Receivable:Cus-123,GBP,-1999
                2026-11-25,evt_jpy,evt_jpy,m_tokyo,Assets:Tokyo-Shop:Clearing:Adyen,JPY,1470
                2026-11-25,evt_jpy,evt_jpy,m_tokyo,Expenses:Tokyo-Shop:PaymentFees,JPY,30
                2026-11-25,evt_jpy,evt_jpy,m_tokyo,Income:Tokyo-Shop:Sales,JPY,-1500
                2026-11-26,evt_bhd,evt_bhd,m_bahrain,Income:Bahrain:Refunds,BHD,1250
                2026-11-26,evt_bhd,evt_bhd,m_bahrain,Assets:Bahrain:Clearing:Stripe,BHD,-1250

                """)
        let ranged = LedgerExportFormat.csv(try h.book().rows(from: "2026-11-25", to: "2026-11-25"))
        #expect(ranged.split(separator: "\n").count == 4)
        #expect(ranged.contains("evt_jpy") && !ranged.contains("evt_bhd") && !ranged.contains("evt_inv"))
    }

    @Test("hledger journal: declarations, major units with ISO exponents, ids as tags")
    func hledgerText() async throws {
        let h = try await harness()
        let text = LedgerExportFormat.hledger(try h.book().rows())
        #expect(text.contains("decimal-mark .\n"))
        #expect(text.contains("commodity 1000.000 BHD\n"))
        #expect(text.contains("commodity 1000.00 GBP\n"))
        #expect(text.contains("commodity 1000. JPY\n"))
        #expect(text.contains("account Assets:Tokyo-Shop:Clearing:Adyen\n"))
        #expect(text.contains("2026-11-24 * payment.succeeded pi_1 invoice inv_77  ; event_id:evt_pay, merchant_id:m_acme, transaction_id:evt_pay\n"))
        let lines = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("Assets:M-acme:Clearing:Stripe 19.54 GBP"))
        #expect(lines.contains("Assets:M-acme:Receivable:Cus-123 -19.99 GBP"))
        #expect(lines.contains("Assets:Tokyo-Shop:Clearing:Adyen 1470 JPY"))
        #expect(lines.contains("Income:Bahrain:Refunds 1.250 BHD"))
        #expect(!text.contains("evt_fail"))
    }

    @Test("beancount: open directives before first use, quoted narration, metadata, major units")
    func beancountText() async throws {
        let h = try await harness()
        let text = LedgerExportFormat.beancount(try h.book().rows())
        #expect(text.contains("2026-11-24 open Assets:M-acme:Receivable:Cus-123\n"))
        #expect(text.contains("2026-11-26 open Income:Bahrain:Refunds\n"))
        #expect(text.contains("2026-11-25 * \"payment.succeeded pi_1\"\n  event_id: \"evt_jpy\"\n"))
        #expect(text.contains("  Income:Bahrain:Refunds  1.250 BHD\n"))
        #expect(text.contains("  Assets:M-acme:Clearing:Stripe  19.54 GBP\n"))
        #expect(text.contains("  Income:Tokyo-Shop:Sales  -1500 JPY\n"))
    }

    /// A 3,000-event stream exported and handed to the real tools.
    func streamExport() async throws -> (LedgerHarness, [LedgerBook.Balance], LedgerBook) {
        let stream = LedgerStream(total: 3_000, seed: 99, prefix: "x")
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: LedgerStream.merchants))
        var rng = SplitMix64(seed: 3)
        try await h.apply(stream.events.shuffled(using: &rng))
        let book = try h.book()
        return (h, try book.balances(), book)
    }

    @Test(
        "hledger accepts the export (check --strict) and computes the same balances, totalling zero",
        .enabled(if: AccountingTools.hledger != nil, "hledger not installed: apt-get install hledger (scripts/install-deps.sh)"))
    func realHledger() async throws {
        let hledger = try #require(AccountingTools.hledger)
        let (h, balances, book) = try await streamExport()
        let file = h.dir + "/export.journal"
        try LedgerExportFormat.hledger(try book.rows()).write(toFile: file, atomically: true, encoding: .utf8)
        let (checkStatus, checkOut) = try AccountingTools.run(hledger, ["-f", file, "check", "--strict"])
        #expect(checkStatus == 0, "\(checkOut)")
        for currency in Set(balances.map(\.currency)).sorted() {
            let (status, out) = try AccountingTools.run(
                hledger, ["-f", file, "balance", "--flat", "-O", "csv", "cur:\(currency)"])
            #expect(status == 0, "\(out)")
            var seen: [String: Int64] = [:]
            var total: Int64?
            for line in out.split(separator: "\n").dropFirst() {
                let cells = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
                guard cells.count == 2 else { continue }
                let amountText = cells[1].replacingOccurrences(of: " \(currency)", with: "")
                let minor = try amountText == "0" ? 0 : Money(major: amountText, currency: Currency(code: currency)!).value
                if cells[0] == "total" { total = minor } else if minor != 0 { seen[cells[0]] = minor }
            }
            let ours = Dictionary(uniqueKeysWithValues: balances.filter { $0.currency == currency }.map { ($0.account, $0.balance) })
            #expect(seen == ours, "\(currency): hledger \(seen) vs ledger \(ours)")
            #expect(total == 0, "\(currency) total \(String(describing: total))")
        }
    }

    @Test(
        "bean-check accepts the beancount export",
        .enabled(if: AccountingTools.beanCheck != nil, "bean-check not installed: pip install beancount (scripts/install-deps.sh)"))
    func realBeanCheck() async throws {
        let beanCheck = try #require(AccountingTools.beanCheck)
        let (h, _, book) = try await streamExport()
        let file = h.dir + "/export.beancount"
        try LedgerExportFormat.beancount(try book.rows()).write(toFile: file, atomically: true, encoding: .utf8)
        let (status, out) = try AccountingTools.run(beanCheck, [file])
        #expect(status == 0, "\(out.prefix(2000))")
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(out.prefix(2000))")
    }
}
