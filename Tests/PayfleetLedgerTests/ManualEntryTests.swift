import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetLedger
import PayfleetTestKit
import Testing

/// Issue 19 item 4: `payfleet ledger post | revert | statement`.
@Suite struct ManualEntryTests {
    func harness() async throws -> LedgerHarness {
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: LedgerStream.merchants))
        try await h.apply(ExportTests.fixture)
        return h
    }

    static let bankFee = [
        LedgerJournal.Leg(account: "Expenses:M-acme:BankFees", currency: "GBP", amount: 1250),
        LedgerJournal.Leg(account: "Assets:M-acme:Bank", currency: "GBP", amount: -1250),
    ]

    @Test("a balanced entry is posted into the merchant's file while the worker's store is open, and shows in balances")
    func post() async throws {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        let entry = try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "bank charge Nov", legs: Self.bankFee)
        #expect(entry.transactionID.hasPrefix("man_20261130_"))
        #expect(entry.file == h.path)
        let b = try h.balances(merchant: "m_acme").asDictionary
        #expect(b["Expenses:M-acme:BankFees GBP"] == 1250)
        #expect(b["Assets:M-acme:Bank GBP"] == -1250)
        #expect(try await h.scalar("SELECT COUNT(*) FROM manual_entries WHERE txid = ?", [.text(entry.transactionID)]) == 1)
        // The worker keeps booking into the same file afterwards.
        try await h.apply([ledgerEvent("evt_after", .paymentSucceeded, amount: 500, at: "2026-11-30T10:00:00Z")])
        #expect(try h.balances(merchant: "m_acme").asDictionary["Income:M-acme:Sales GBP"] == -5500)
    }

    @Test("--id makes a post idempotent: the same id is refused the second time, nothing written twice")
    func idempotentPost() async throws {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        let e = try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "fee", legs: Self.bankFee, id: "ticket-4711")
        #expect(e.transactionID == "man_ticket-4711")
        #expect(throws: CLIFailure.self) {
            try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "fee", legs: Self.bankFee, id: "ticket-4711")
        }
        #expect(throws: CLIFailure.self) {
            try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "fee", legs: Self.bankFee, id: "bad id")
        }
        #expect(try h.balances().asDictionary["Expenses:M-acme:BankFees GBP"] == 1250)
    }

    @Test("unbalanced, one-legged, malformed accounts and non-integer file amounts are refused")
    func refusals() async throws {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        #expect(throws: CLIFailure.self) {
            try journal.post(
                merchant: "m_acme", date: "2026-11-30", reason: "x",
                legs: [Self.bankFee[0], .init(account: "Assets:M-acme:Bank", currency: "GBP", amount: -1249)])
        }
        #expect(throws: CLIFailure.self) {
            try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "x", legs: [Self.bankFee[0]])
        }
        #expect(throws: CLIFailure.self) {
            try journal.post(
                merchant: "m_acme", date: "2026-11-30", reason: "x",
                legs: [.init(account: "Expenses:m acme", currency: "GBP", amount: 1), .init(account: "Assets:X", currency: "GBP", amount: -1)])
        }
        #expect(throws: CLIFailure.self) {
            try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "  ", legs: Self.bankFee)
        }
        let file = h.dir + "/legs.json"
        try #"[{"account": "Assets:M-acme:Bank", "currency": "GBP", "amount": 12.5}]"#.write(
            toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: CLIFailure.self) { try LedgerJournal.parseFile(file) }
        try #"{"postings": [{"account": "Assets:M-acme:Bank", "currency": "gbp", "amount": -300}, {"account": "Equity:M-acme:Opening", "currency": "GBP", "amount": 300}]}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try LedgerJournal.parseFile(file).map(\.amount) == [-300, 300])
        #expect(try LedgerJournal.parseLeg("Assets:Bahrain:Bank 1.250 BHD") == .init(account: "Assets:Bahrain:Bank", currency: "BHD", amount: 1250))
        #expect(throws: CLIFailure.self) { try LedgerJournal.parseLeg("Assets:Bahrain:Bank 1.2501 BHD") }
        // Nothing was written by the refusals.
        #expect(try await h.scalar("SELECT COUNT(*) FROM manual_entries") == 0)
    }

    @Test("the database itself refuses an unbalanced manual transaction (the same trigger as the worker's)")
    func databaseInvariant() async throws {
        let h = try await harness()
        let refused = try await h.store.write { db -> Bool in
            do {
                try db.transaction {
                    try db.execute(
                        "INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description) VALUES ('man_x', 'man_x', 'manual.entry', 'reclass', 'm_acme', '2026-11-30', 'x')")
                    try db.execute("INSERT INTO postings (txid, account, currency, amount) VALUES ('man_x', 'Assets:A', 'GBP', 5)")
                    try db.execute("INSERT INTO postings (txid, account, currency, amount) VALUES ('man_x', 'Assets:B', 'GBP', -4)")
                    try db.execute("INSERT INTO transaction_checks (txid, postings) VALUES ('man_x', 2)")
                }
                return false
            } catch { return true }
        }
        #expect(refused)
    }

    @Test("revert negates every posting in a new transaction, at most once; the original stays")
    func revert() async throws {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        let before = try h.balances().asDictionary
        let r = try journal.revert(transactionID: "evt_pay", date: "2026-12-01", reason: "booked twice upstream")
        #expect(r.transactionID == "evt_pay/revert")
        #expect(r.reverses == "evt_pay")
        #expect(try await h.postings("evt_pay/revert") == [
            "Assets:M-acme:Clearing:Stripe": -1954, "Expenses:M-acme:PaymentFees": -45, "Assets:M-acme:Receivable:Cus-123": 1999,
        ])
        #expect(try await h.postings("evt_pay").count == 3)
        let after = try h.balances().asDictionary
        #expect(after["Expenses:M-acme:PaymentFees GBP"] == nil)
        #expect(after["Assets:M-acme:Receivable:Cus-123 GBP"] == (before["Assets:M-acme:Receivable:Cus-123 GBP"] ?? 0) + 1999)
        #expect(throws: CLIFailure.self) {
            try journal.revert(transactionID: "evt_pay", date: "2026-12-01", reason: "again")
        }
        #expect(throws: CLIFailure.self) {
            try journal.revert(transactionID: "evt_nope", date: "2026-12-01", reason: "x")
        }
        // A manual entry can be reverted too.
        let m = try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "typo", legs: Self.bankFee)
        let mr = try journal.revert(transactionID: m.transactionID, date: "2026-11-30", reason: "typo undone")
        #expect(mr.legs.map(\.amount) == [-1250, 1250])
        #expect(try h.balances().asDictionary["Expenses:M-acme:BankFees GBP"] == nil)
    }

    @Test("statement: running balance per currency from the opening balance before --from")
    func statement() async throws {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        _ = try journal.post(
            merchant: "m_acme", date: "2026-11-25", reason: "payout",
            legs: [.init(account: "Assets:M-acme:Bank", currency: "GBP", amount: 1000),
                   .init(account: "Assets:M-acme:Clearing:Stripe", currency: "GBP", amount: -1000)])
        _ = try journal.revert(transactionID: "evt_pay", date: "2026-11-26", reason: "wrong")
        let all = try h.book().statement(account: "Assets:M-acme:Clearing:Stripe")
        #expect(all.opening.isEmpty)
        #expect(all.lines.map(\.amount) == [1954, -1000, -1954])
        #expect(all.lines.map(\.balance) == [1954, 954, -1000])
        let ranged = try h.book().statement(account: "Assets:M-acme:Clearing:Stripe", from: "2026-11-25", to: "2026-11-25")
        #expect(ranged.opening == ["GBP": 1954])
        #expect(ranged.lines.map(\.balance) == [954])
    }

    @Test("the CLI commands post, revert and print a statement; each post and revert is in the audit log")
    func commands() async throws {
        let h = try await harness()
        let audit = h.dir + "/audit.jsonl"
        let posted = try LedgerCommand.Post.parse([
            "--state-file", h.path, "--audit-log", audit, "--merchant", "m_acme", "--date", "2026-11-30",
            "--reason", "bank charge", "--posting", "Expenses:M-acme:BankFees 12.50 GBP",
            "--posting", "Assets:M-acme:Bank -12.50 GBP", "--json",
        ]).output()
        let o = try #require(try JSONSerialization.jsonObject(with: Data(posted.utf8)) as? [String: Any])
        let txid = try #require(o["transaction_id"] as? String)
        let reverted = try LedgerCommand.Revert.parse([
            txid, "--state-file", h.path, "--audit-log", audit, "--reason", "wrong account", "--date", "2026-12-01",
        ]).output()
        #expect(reverted.contains("\(txid)/revert"))
        let lines = try JSONLines.read(audit)
        #expect(lines.map { $0["action"] as? String } == ["ledger.post", "ledger.revert"])
        #expect(lines[0]["reason"] as? String == "bank charge")
        #expect((lines[1]["ids"] as? [String]) == ["\(txid)/revert"])
        #expect(lines[1]["reverses"] as? String == txid)
        let statement = try LedgerCommand.Statement.parse(["Assets:M-acme:Bank", "--state-file", h.path]).output()
        #expect(statement.contains("-12.50 GBP") && statement.contains("0.00 GBP"))
        let csv = try LedgerCommand.Export.parse(["--format", "csv", "--state-file", h.path]).render()
        #expect(csv.contains("2026-11-30,\(txid),\(txid),m_acme,Expenses:M-acme:BankFees,GBP,1250\n"))
        #expect(csv.contains("2026-12-01,\(txid)/revert,\(txid)/revert,m_acme,Expenses:M-acme:BankFees,GBP,-1250\n"))
    }

    /// The fixture plus manual entries and reversals (of a worker's and of a manual transaction).
    func withManualEntries() async throws -> LedgerHarness {
        let h = try await harness()
        let journal = try LedgerJournal(files: [h.path])
        let m = try journal.post(merchant: "m_acme", date: "2026-11-30", reason: "bank charge \"Nov\"; 50% off", legs: Self.bankFee)
        _ = try journal.revert(transactionID: m.transactionID, date: "2026-12-01", reason: "posted to the wrong bank")
        _ = try journal.revert(transactionID: "evt_jpy", date: "2026-12-01", reason: "test payment")
        _ = try journal.post(
            merchant: "m_bahrain", date: "2026-12-02", reason: "opening",
            legs: [.init(account: "Assets:Bahrain:Bank", currency: "BHD", amount: 10_000),
                   .init(account: "Equity:Bahrain:Opening", currency: "BHD", amount: -10_000)])
        return h
    }

    @Test(
        "hledger accepts the export with manual entries and reversals",
        .enabled(if: AccountingTools.hledger != nil, "hledger not installed (scripts/install-deps.sh)"))
    func realHledger() async throws {
        let hledger = try #require(AccountingTools.hledger)
        let h = try await withManualEntries()
        let file = h.dir + "/manual.journal"
        try LedgerExportFormat.hledger(try h.book().rows()).write(toFile: file, atomically: true, encoding: .utf8)
        let (status, out) = try AccountingTools.run(hledger, ["-f", file, "check", "--strict"])
        #expect(status == 0, "\(out)")
        let (bs, bal) = try AccountingTools.run(hledger, ["-f", file, "balance", "--flat", "-O", "csv", "acct:Equity:Bahrain"])
        #expect(bs == 0 && bal.contains("-10.000 BHD"), "\(bal)")
    }

    @Test(
        "bean-check accepts the export with manual entries and reversals",
        .enabled(if: AccountingTools.beanCheck != nil, "bean-check not installed (scripts/install-deps.sh)"))
    func realBeanCheck() async throws {
        let beanCheck = try #require(AccountingTools.beanCheck)
        let h = try await withManualEntries()
        let file = h.dir + "/manual.beancount"
        try LedgerExportFormat.beancount(try h.book().rows()).write(toFile: file, atomically: true, encoding: .utf8)
        let (status, out) = try AccountingTools.run(beanCheck, [file])
        #expect(status == 0, "\(out.prefix(2000))")
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(out.prefix(2000))")
    }
}
