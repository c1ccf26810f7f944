import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetLedger
import PayfleetStore
import PayfleetWorker
import Testing

/// DESIGN §5a, row by row, through the handler and the real SQLite schema.
@Suite struct PostingTests {
    let acme = Merchant(id: "m_acme", timeZone: "Europe/London")

    @Test("invoice.issued: Receivable:<Customer> A / Income:Sales A")
    func invoiceIssued() async throws {
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: [acme]))
        try await h.apply([ledgerEvent("e1", .invoiceIssued, amount: 5000, customer: "cus_123", payment: nil, invoice: "inv_77")])
        #expect(try await h.postings("e1") == ["Assets:M-acme:Receivable:Cus-123": 5000, "Income:M-acme:Sales": -5000])
    }

    @Test("payment.succeeded naming an invoice: Clearing A−F, PaymentFees F / Receivable A")
    func paymentWithInvoice() async throws {
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: [acme]))
        try await h.apply([ledgerEvent("e1", .paymentSucceeded, amount: 1999, fee: 45, customer: "cus_123", invoice: "inv_77")])
        #expect(
            try await h.postings("e1") == [
                "Assets:M-acme:Clearing:Stripe": 1954, "Expenses:M-acme:PaymentFees": 45,
                "Assets:M-acme:Receivable:Cus-123": -1999,
            ])
    }

    @Test("payment.succeeded without invoice: credit Income:Sales; no fee leg when the fee is absent")
    func paymentWithoutInvoice() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("e1", .paymentSucceeded, amount: 1999, fee: 45),
            ledgerEvent("e2", .paymentSucceeded, amount: 1000, provider: "adyen"),
        ])
        #expect(
            try await h.postings("e1") == [
                "Assets:M-acme:Clearing:Stripe": 1954, "Expenses:M-acme:PaymentFees": 45, "Income:M-acme:Sales": -1999,
            ])
        #expect(try await h.postings("e2") == ["Assets:M-acme:Clearing:Adyen": 1000, "Income:M-acme:Sales": -1000])
    }

    @Test("payment.refunded: Receivable R if it names an invoice, else Income:Refunds R / Clearing R")
    func refunds() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("r1", .paymentRefunded, amount: 500, customer: "cus_9", payment: "pi_9", invoice: "inv_9"),
            ledgerEvent("r2", .paymentRefunded, amount: 700, provider: "phonepay", payment: "pi_8"),
        ])
        #expect(try await h.postings("r1") == ["Assets:M-acme:Receivable:Cus-9": 500, "Assets:M-acme:Clearing:Stripe": -500])
        #expect(try await h.postings("r2") == ["Income:M-acme:Refunds": 700, "Assets:M-acme:Clearing:Phonepay": -700])
    }

    @Test("payment.disputed: Disputes D, PaymentFees f / Clearing D+f")
    func disputed() async throws {
        let h = try await LedgerHarness()
        try await h.apply([ledgerEvent("d1", .paymentDisputed, amount: 3000, fee: 1500, payment: "pi_1")])
        #expect(
            try await h.postings("d1") == [
                "Expenses:M-acme:Disputes": 3000, "Expenses:M-acme:PaymentFees": 1500, "Assets:M-acme:Clearing:Stripe": -4500,
            ])
    }

    @Test("dispute.closed: won reverses the dispute (fee only when the event returns it); lost posts nothing")
    func disputeClosed() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("c1", .disputeClosed, amount: 3000, metadata: ["outcome": "won"]),
            ledgerEvent("c2", .disputeClosed, amount: 3000, fee: 1500, metadata: ["outcome": "won"]),
            ledgerEvent("c3", .disputeClosed, amount: 3000, metadata: ["outcome": "lost"]),
        ])
        #expect(try await h.postings("c1") == ["Assets:M-acme:Clearing:Stripe": 3000, "Expenses:M-acme:Disputes": -3000])
        #expect(
            try await h.postings("c2") == [
                "Assets:M-acme:Clearing:Stripe": 4500, "Expenses:M-acme:Disputes": -3000, "Expenses:M-acme:PaymentFees": -1500,
            ])
        #expect(try await h.postings("c3").isEmpty)
        #expect(try await h.scalar("SELECT COUNT(*) FROM ledger_events WHERE event_id = 'c3' AND txid IS NULL") == 1)
    }

    @Test("payout.paid: Bank A / Clearing A")
    func payout() async throws {
        let h = try await LedgerHarness()
        try await h.apply([ledgerEvent("p1", .payoutPaid, amount: 100_000, customer: nil, payment: nil)])
        #expect(try await h.postings("p1") == ["Assets:M-acme:Bank": 100_000, "Assets:M-acme:Clearing:Stripe": -100_000])
    }

    @Test("payment.failed: nothing posted, the event recorded")
    func failed() async throws {
        let h = try await LedgerHarness()
        try await h.apply([ledgerEvent("f1", .paymentFailed, amount: 1999)])
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 0)
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions") == 0)
        #expect(try await h.scalar("SELECT COUNT(*) FROM ledger_events WHERE event_id = 'f1' AND type = 'payment.failed'") == 1)
    }

    @Test("Minor units per ISO exponent: JPY 0, GBP 2, BHD 3 are stored as given, exported in major units")
    func exponents() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("j", .paymentSucceeded, amount: 1500, currency: "JPY", fee: 30),
            ledgerEvent("g", .paymentSucceeded, amount: 1999, currency: "GBP", fee: 45),
            ledgerEvent("b", .paymentSucceeded, amount: 1250, currency: "BHD", fee: 25),
        ])
        #expect(try await h.postings("j")["Assets:M-acme:Clearing:Stripe"] == 1470)
        #expect(try await h.postings("b")["Assets:M-acme:Clearing:Stripe"] == 1225)
        let bal = try h.balances().asDictionary
        #expect(bal["Income:M-acme:Sales JPY"] == -1500)
        #expect(bal["Income:M-acme:Sales GBP"] == -1999)
        #expect(bal["Income:M-acme:Sales BHD"] == -1250)
        let journal = try h.book().rows().map { "\($0.account) \($0.currency) \($0.amount)" }
        #expect(journal.contains("Assets:M-acme:Clearing:Stripe BHD 1225"))
        let hledger = PayfleetCLITestBridge.hledger(try h.book().rows())
        #expect(hledger.contains("Assets:M-acme:Clearing:Stripe") && hledger.contains("1.225 BHD"))
        #expect(hledger.contains("-19.99 GBP"))
        #expect(hledger.contains("-1500 JPY"))
        #expect(hledger.contains("1470 JPY"))
    }

    @Test("Names sanitized for hledger/ledger/beancount; ledger_name, time zone and cut-off from config")
    func namesAndDates() async throws {
        let tokyo = Merchant(id: "m_tokyo", timeZone: "Asia/Tokyo", cutoffMinutes: 120, ledgerName: "Tokyo Shop")
        let h = try await LedgerHarness(handler: LedgerHandler(merchants: [tokyo]))
        // 16:30 UTC is 01:30 on the 25th in Tokyo, before the 02:00 cut-off: business day the 24th.
        try await h.apply([
            ledgerEvent(
                "t1", .invoiceIssued, merchant: "m_tokyo", amount: 900, currency: "JPY", customer: "cus.o'brien@x",
                payment: nil, invoice: "inv 1", at: "2026-11-24T16:30:00Z"),
            ledgerEvent(
                "t2", .paymentSucceeded, merchant: "m_tokyo", amount: 900, currency: "JPY", provider: "my_psp",
                at: "2026-11-24T17:30:00Z"),
            // An unconfigured merchant: UTC day, name derived from the id.
            ledgerEvent("u1", .payoutPaid, merchant: "9lives_co", amount: 10, provider: "stripe", at: "2026-11-24T23:59:59Z"),
        ])
        #expect(try await h.postings("t1") == ["Assets:Tokyo-Shop:Receivable:Cus-o-brien-x": 900, "Income:Tokyo-Shop:Sales": -900])
        #expect(try await h.postings("t2")["Assets:Tokyo-Shop:Clearing:My-psp"] == 900)
        #expect(try await h.postings("u1") == ["Assets:9lives-co:Bank": 10, "Assets:9lives-co:Clearing:Stripe": -10])
        let dates = try await h.store.withConnection { db in
            try db.query("SELECT txid, date FROM transactions ORDER BY txid").map { "\($0.string(0)!)=\($0.string(1)!)" }
        }
        #expect(dates == ["t1=2026-11-24", "t2=2026-11-25", "u1=2026-11-24"])
        for b in try h.balances() { #expect(ChartOfAccounts.isValidAccount(b.account), "\(b.account)") }
    }

    @Test("Account names are configurable; invalid templates and unknown keys are start-up errors naming the key")
    func configuration() throws {
        let root = try ConfigSection.parse(
            yaml: """
                ledger-writer:
                  accounts:
                    clearing: "Assets:{merchant}:Processors:{provider}"
                    sales: "Income:{merchant}:Revenue"
                  unknown_customer: pending
                """)
        let h = try LedgerHandler(section: try root.section("ledger-writer"), merchants: [], logger: .init(label: "t"))
        try root.finish()
        let e = ledgerEvent("e1", .paymentSucceeded, amount: 100)
        #expect(try h.postings(for: e, customer: "cus_1").map(\.account) == ["Assets:M-acme:Processors:Stripe", "Income:M-acme:Revenue"])
        #expect(h.unknownCustomer == "Pending")

        let bad = try ConfigSection.parse(yaml: "ledger-writer:\n  accounts:\n    bank: \"Cash:{merchant}\"\n")
        let error = #expect(throws: ConfigError.self) {
            _ = try LedgerHandler(section: try bad.section("ledger-writer"), merchants: [], logger: .init(label: "t"))
        }
        #expect(error?.key == "ledger-writer.accounts.bank")
        let typo = try ConfigSection.parse(yaml: "ledger-writer:\n  accounts:\n    bnak: \"Assets:{merchant}:Bank\"\n")
        _ = try LedgerHandler(section: try typo.section("ledger-writer"), merchants: [], logger: .init(label: "t"))
        #expect(throws: ConfigError(key: "ledger-writer.accounts.bnak", message: "unknown key")) { try typo.finish() }
    }

    @Test("A refund before its payment, naming an invoice but no customer, converges to the customer's receivable")
    func refundBeforePayment() async throws {
        let events = [
            ledgerEvent("inv", .invoiceIssued, amount: 5000, customer: "cus_7", payment: nil, invoice: "inv_7"),
            ledgerEvent("pay", .paymentSucceeded, amount: 5000, fee: 100, customer: "cus_7", payment: "pi_7", invoice: "inv_7"),
            ledgerEvent("ref", .paymentRefunded, amount: 2000, customer: nil, payment: "pi_7", invoice: "inv_7"),
        ]
        let inOrder = try await LedgerHarness()
        try await inOrder.apply(events)
        let reversed = try await LedgerHarness()
        try await reversed.apply(events.reversed())
        let expected: [String: Int64] = [
            "Assets:M-acme:Receivable:Cus-7 GBP": 2000, "Income:M-acme:Sales GBP": -5000,
            "Assets:M-acme:Clearing:Stripe GBP": 2900, "Expenses:M-acme:PaymentFees GBP": 100,
        ]
        #expect(try inOrder.balances().asDictionary == expected)
        #expect(try reversed.balances().asDictionary == expected)
        // Reversed: the refund went to the unknown customer first and was reclassified once.
        #expect(try await reversed.scalar("SELECT COUNT(*) FROM transactions WHERE kind = 'reclass'") == 1)
        #expect(try await inOrder.scalar("SELECT COUNT(*) FROM transactions WHERE kind = 'reclass'") == 0)
    }

    @Test("Redelivery of any event changes nothing, even past the runtime's dedupe")
    func redelivery() async throws {
        let h = try await LedgerHarness()
        let e = ledgerEvent("e1", .paymentSucceeded, amount: 1999, fee: 45)
        try await h.apply([e])
        let before = try h.balances()
        // Straight into the handler, as if `processed` had been pruned.
        try await h.store.write { db in _ = try LedgerHandler().apply(e, db: db) }
        #expect(try h.balances() == before)
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 3)
    }

    @Test("An invalid event is a permanent error")
    func invalid() async throws {
        let h = try await LedgerHarness()
        var e = ledgerEvent("e1", .paymentRefunded, amount: 100)
        e.payment = nil
        await #expect(throws: HandlerError.self) { try await h.apply([e]) }
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 0)
    }
}

/// The export renderers, reached through the CLI library.
enum PayfleetCLITestBridge {
    static func hledger(_ rows: [LedgerBook.Row]) -> String { LedgerExportFormat.hledger.render(rows) }
}
