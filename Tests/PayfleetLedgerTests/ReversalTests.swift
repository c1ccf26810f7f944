import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetStore
import PayfleetWorker
import Testing

/// Every ordering of `items` (small arrays only).
func permutations<T>(_ items: [T]) -> [[T]] {
    guard items.count > 1 else { return [items] }
    var out: [[T]] = []
    for (i, x) in items.enumerated() {
        var rest = items
        rest.remove(at: i)
        for p in permutations(rest) { out.append([x] + p) }
    }
    return out
}

/// DESIGN §5a's reversal and late-fee rows (refund.failed, payment.reversed, payout.failed,
/// fee.assessed) through the handler and the real SQLite schema. Every expected balance is
/// worked out by hand from the table, never from the code under test.
@Suite struct ReversalPostingTests {
    @Test("refund.failed R: Clearing R / what the refund debited (Income:Refunds) R")
    func refundFailedPlain() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("pay", .paymentSucceeded, amount: 5000, fee: 100, payment: "pi_1"),
            ledgerEvent("ref", .paymentRefunded, amount: 2000, payment: "pi_1", metadata: ["refund_id": "re_1"]),
            ledgerEvent("rf", .refundFailed, amount: 2000, payment: "pi_1", metadata: ["refund_id": "re_1"]),
        ])
        #expect(try await h.postings("rf") == ["Assets:M-acme:Clearing:Stripe": 2000, "Income:M-acme:Refunds": -2000])
        // Clearing 4900 − 2000 + 2000; Refunds 2000 − 2000 = 0 (zero balances are not listed).
        #expect(
            try h.balances().asDictionary == [
                "Assets:M-acme:Clearing:Stripe GBP": 4900, "Expenses:M-acme:PaymentFees GBP": 100,
                "Income:M-acme:Sales GBP": -5000,
            ])
    }

    /// An invoice paid, part refunded (the refund names the invoice but no customer), then the
    /// refund fails; the failure names neither invoice nor customer, so only the recorded
    /// refund says it was the customer's receivable.
    static let invoiceStory = [
        ledgerEvent("inv", .invoiceIssued, amount: 5000, customer: "cus_7", payment: nil, invoice: "inv_7"),
        ledgerEvent("pay", .paymentSucceeded, amount: 5000, fee: 100, customer: "cus_7", payment: "pi_7", invoice: "inv_7"),
        ledgerEvent(
            "ref", .paymentRefunded, amount: 2000, customer: nil, payment: "pi_7", invoice: "inv_7",
            metadata: ["refund_id": "re_7"]),
        ledgerEvent("rf", .refundFailed, amount: 2000, customer: nil, payment: "pi_7", metadata: ["refund_id": "re_7"]),
    ]
    /// Receivable 5000 − 5000 + 2000 − 2000 = 0; Sales −5000; Clearing 4900 − 2000 + 2000; fees 100.
    static let invoiceStoryBalances: [String: Int64] = [
        "Income:M-acme:Sales GBP": -5000, "Assets:M-acme:Clearing:Stripe GBP": 4900,
        "Expenses:M-acme:PaymentFees GBP": 100,
    ]

    @Test("refund.failed credits the customer's receivable when the refund debited it, found by metadata.refund_id")
    func refundFailedReceivable() async throws {
        let h = try await LedgerHarness()
        try await h.apply(Self.invoiceStory)
        #expect(try await h.postings("rf") == ["Assets:M-acme:Clearing:Stripe": 2000, "Assets:M-acme:Receivable:Cus-7": -2000])
        #expect(try h.balances().asDictionary == Self.invoiceStoryBalances)
    }

    @Test("refund.failed before its refund (and the refund before its payment): all 24 orders end in the same books")
    func refundFailedAnyOrder() async throws {
        for order in permutations(Self.invoiceStory) {
            let h = try await LedgerHarness()
            try await h.apply(order, batch: 1)
            let names = order.map(\.id).joined(separator: ",")
            #expect(try h.balances().asDictionary == Self.invoiceStoryBalances, "order \(names)")
            // Nothing left on the unknown customer, nothing waiting.
            #expect(
                try await h.scalar(
                    "SELECT COUNT(*) FROM reversals WHERE matched = 0") == 0, "order \(names)")
        }
    }

    @Test("A refund.failed whose refund never arrives is booked on the account its own facts name (nothing parked)")
    func refundFailedAlone() async throws {
        let h = try await LedgerHarness()
        try await h.apply([ledgerEvent("rf", .refundFailed, amount: 700, payment: "pi_x", metadata: ["refund_id": "re_x"])])
        #expect(try h.balances().asDictionary == ["Assets:M-acme:Clearing:Stripe GBP": 700, "Income:M-acme:Refunds GBP": -700])
        #expect(try await h.scalar("SELECT COUNT(*) FROM reversals WHERE matched = 0") == 1)
        // The refund arrives: it debited Income:Refunds too, so no move is needed.
        try await h.apply([
            ledgerEvent("ref", .paymentRefunded, amount: 700, payment: "pi_x", metadata: ["refund_id": "re_x"])
        ])
        #expect(try h.balances().asDictionary.isEmpty)
        #expect(try await h.scalar("SELECT COUNT(*) FROM reversals WHERE matched = 0") == 0)
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions WHERE txid LIKE '%/match'") == 0)
    }

    @Test("payment.reversed A fee F: what the payment credited (Income:Sales) A / Clearing A−F, PaymentFees F")
    func paymentReversedPlain() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("pay", .paymentSucceeded, amount: 5000, fee: 100, payment: "pi_2"),
            ledgerEvent("rev", .paymentReversed, amount: 5000, fee: 100, payment: "pi_2"),
        ])
        #expect(
            try await h.postings("rev") == [
                "Income:M-acme:Sales": 5000, "Assets:M-acme:Clearing:Stripe": -4900, "Expenses:M-acme:PaymentFees": -100,
            ])
        // Everything undone.
        #expect(try h.balances().asDictionary.isEmpty)
    }

    static let reversedInvoiceStory = [
        ledgerEvent("inv", .invoiceIssued, amount: 5000, customer: "cus_8", payment: nil, invoice: "inv_8"),
        ledgerEvent("pay", .paymentSucceeded, amount: 5000, fee: 100, customer: "cus_8", payment: "pi_8", invoice: "inv_8"),
        ledgerEvent("rev", .paymentReversed, amount: 5000, fee: 100, customer: nil, payment: "pi_8"),
    ]
    /// The invoice is owed again: Receivable 5000 − 5000 + 5000; Sales −5000; Clearing 4900 − 4900; fees 100 − 100.
    static let reversedInvoiceBalances: [String: Int64] = [
        "Assets:M-acme:Receivable:Cus-8 GBP": 5000, "Income:M-acme:Sales GBP": -5000,
    ]

    @Test("payment.reversed debits the receivable the payment credited; before its payment too, in all 6 orders")
    func paymentReversedReceivableAnyOrder() async throws {
        let inOrder = try await LedgerHarness()
        try await inOrder.apply(Self.reversedInvoiceStory)
        #expect(
            try await inOrder.postings("rev") == [
                "Assets:M-acme:Receivable:Cus-8": 5000, "Assets:M-acme:Clearing:Stripe": -4900,
                "Expenses:M-acme:PaymentFees": -100,
            ])
        for order in permutations(Self.reversedInvoiceStory) {
            let h = try await LedgerHarness()
            try await h.apply(order, batch: 1)
            #expect(try h.balances().asDictionary == Self.reversedInvoiceBalances, "order \(order.map(\.id))")
        }
        // Reversal first: booked on Income:Sales (its own facts name no invoice), then moved once.
        let first = try await LedgerHarness()
        try await first.apply([Self.reversedInvoiceStory[2]])
        #expect(
            try first.balances().asDictionary == [
                "Income:M-acme:Sales GBP": 5000, "Assets:M-acme:Clearing:Stripe GBP": -4900,
                "Expenses:M-acme:PaymentFees GBP": -100,
            ])
        try await first.apply(Array(Self.reversedInvoiceStory[0...1]))
        #expect(try await first.postings("rev/match") == ["Assets:M-acme:Receivable:Cus-8": 5000, "Income:M-acme:Sales": -5000])
        #expect(try first.balances().asDictionary == Self.reversedInvoiceBalances)
    }

    @Test("payout.failed A: Clearing A / Bank A")
    func payoutFailed() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("po", .payoutPaid, amount: 100_000, customer: nil, payment: nil, metadata: ["payout_id": "po_1"]),
            ledgerEvent("pf", .payoutFailed, amount: 100_000, customer: nil, payment: nil, metadata: ["payout_id": "po_1"]),
        ])
        #expect(try await h.postings("pf") == ["Assets:M-acme:Clearing:Stripe": 100_000, "Assets:M-acme:Bank": -100_000])
        #expect(try h.balances().asDictionary.isEmpty)
    }

    @Test("fee.assessed F: PaymentFees F / Clearing F, dated with its own business day")
    func feeAssessed() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("pay", .paymentSucceeded, amount: 1999, fee: 45, payment: "pi_3", at: "2026-11-24T10:00:00Z"),
            ledgerEvent("fa", .feeAssessed, amount: 30, provider: "adyen", payment: "pi_3", at: "2026-11-26T08:00:00Z"),
        ])
        #expect(try await h.postings("fa") == ["Expenses:M-acme:PaymentFees": 30, "Assets:M-acme:Clearing:Adyen": -30])
        #expect(
            try h.balances().asDictionary == [
                "Assets:M-acme:Clearing:Stripe GBP": 1954, "Assets:M-acme:Clearing:Adyen GBP": -30,
                "Expenses:M-acme:PaymentFees GBP": 75, "Income:M-acme:Sales GBP": -1999,
            ])
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions WHERE txid = 'fa' AND date = '2026-11-26'") == 1)
    }

    @Test("Replaying every reversal (runtime dedupe bypassed too) never doubles money")
    func replay() async throws {
        let events = Self.invoiceStory + Self.reversedInvoiceStory.map { e -> PaymentEvent in
            var e = e
            e.id += "-b"
            return e
        } + [
            ledgerEvent("pf", .payoutFailed, amount: 900, customer: nil, payment: nil),
            ledgerEvent("fa", .feeAssessed, amount: 30, customer: nil, payment: "pi_7"),
        ]
        let h = try await LedgerHarness()
        // Reversals first, so the matching moves happen too.
        try await h.apply(events.reversed())
        let before = try h.balances()
        let transactions = try await h.scalar("SELECT COUNT(*) FROM transactions")
        #expect(try await h.apply(events) == 0)
        let handler = h.handler
        try await h.store.write { db in
            for e in events { _ = try handler.apply(e, db: db) }
        }
        #expect(try h.balances() == before)
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions") == transactions)
    }
}

@Suite struct OverflowTests {
    @Test("An amount whose sum overflows Int64 is a permanent AmountOverflow error, nothing posted, no trap")
    func overflowIsPermanent() async throws {
        let h = try await LedgerHarness()
        let cases = [
            ledgerEvent("d", .paymentDisputed, amount: .max, fee: 1, payment: "pi_1"),
            ledgerEvent("w", .disputeClosed, amount: .max, fee: 1, payment: "pi_1", metadata: ["outcome": "won"]),
        ]
        for e in cases {
            do {
                try await h.apply([e])
                Issue.record("expected an error for \(e.id)")
            } catch let error as HandlerError {
                #expect(error.kind == .permanent && error.errorClass == "AmountOverflow", "\(error)")
            }
        }
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 0)
        // The largest amount that fits still books.
        try await h.apply([ledgerEvent("big", .paymentDisputed, amount: .max - 1, fee: 1, payment: "pi_1")])
        #expect(try await h.postings("big")["Assets:M-acme:Clearing:Stripe"] == .min + 1)
    }

    @Test("SQLite's 'integer overflow' from a SUM becomes a permanent error, not a transient retry")
    func sqliteSumOverflow() async throws {
        let h = try await LedgerHarness()
        // A trigger that SUMs past Int64 on the worker's own write: the real SQLite error.
        try await h.store.withConnection { db in
            try db.executeScript(
                """
                CREATE TRIGGER test_overflow BEFORE INSERT ON ledger_events WHEN NEW.event_id = 'boom'
                BEGIN SELECT SUM(x) FROM (SELECT 9223372036854775807 AS x UNION ALL SELECT 1); END;
                """)
        }
        do {
            try await h.apply([ledgerEvent("boom", .paymentSucceeded, amount: 100)])
            Issue.record("expected an error")
        } catch let error as HandlerError {
            #expect(error.kind == .permanent && error.errorClass == "AmountOverflow", "\(error)")
        }
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 0)
    }
}

@Suite struct CustomerAccountTests {
    /// Hashes: SHA-256 of "payfleet.ledger.customer:<id>", Crockford base32, first 16
    /// characters, computed with Python's hashlib outside the code under test.
    static let hash = [
        "cus_1": "25MJS1Y54WFM52EP", "cus-1": "6EYN34HA4A93X3BN", "cus.1": "2R227VSDBMGTN75X",
        "Cus_1": "Q04PEMZTESE2H1BR", "unidentified": "RYJYE8VY75N9FZB3",
    ]

    static func invoices(_ ids: [String]) -> [PaymentEvent] {
        ids.enumerated().map { i, c in
            ledgerEvent("i-\(c)", .invoiceIssued, amount: 100 + Int64(i), customer: c, payment: nil, invoice: "inv_\(c)")
        }
    }

    @Test("cus_1, cus-1, cus.1, Cus_1 are four receivables: the first keeps the plain name, later ones a hash suffix")
    func injective() async throws {
        let h = try await LedgerHarness()
        try await h.apply(Self.invoices(["cus_1", "cus-1", "cus.1", "Cus_1", "unidentified"]))
        #expect(
            try h.balances().asDictionary == [
                "Assets:M-acme:Receivable:Cus-1 GBP": 100,
                "Assets:M-acme:Receivable:Cus-1--\(Self.hash["cus-1"]!) GBP": 101,
                "Assets:M-acme:Receivable:Cus-1--\(Self.hash["cus.1"]!) GBP": 102,
                "Assets:M-acme:Receivable:Cus-1--\(Self.hash["Cus_1"]!) GBP": 103,
                // A real customer named like the unknown customer never shares its account.
                "Assets:M-acme:Receivable:Unidentified--\(Self.hash["unidentified"]!) GBP": 104,
                "Income:M-acme:Sales GBP": -510,
            ])
        for b in try h.balances() { #expect(ChartOfAccounts.isValidAccount(b.account), "\(b.account)") }
        // Later events of each customer (a payment naming the invoice, a refund reaching the
        // customer only through the payment) stay on that customer's own account.
        try await h.apply([
            ledgerEvent("p", .paymentSucceeded, amount: 101, customer: "cus-1", payment: "pi_c", invoice: "inv_cus-1"),
            ledgerEvent("r", .paymentRefunded, amount: 1, customer: nil, payment: "pi_c", invoice: "inv_cus-1"),
        ])
        let bal = try h.balances().asDictionary
        #expect(bal["Assets:M-acme:Receivable:Cus-1--\(Self.hash["cus-1"]!) GBP"] == 1)
        #expect(bal["Assets:M-acme:Receivable:Cus-1 GBP"] == 100)
    }

    @Test("Which of two colliding ids keeps the plain name is whichever came first; an id that collides with none keeps its old name")
    func firstComerKeepsThePlainName() async throws {
        let h = try await LedgerHarness()
        try await h.apply(Self.invoices(["cus-1", "cus_1", "shopper-42"]))
        let bal = try h.balances().asDictionary
        #expect(bal["Assets:M-acme:Receivable:Cus-1 GBP"] == 100)
        #expect(bal["Assets:M-acme:Receivable:Cus-1--\(Self.hash["cus_1"]!) GBP"] == 101)
        #expect(bal["Assets:M-acme:Receivable:Shopper-42 GBP"] == 102)
    }

    @Test("Customers booked before the table existed are claimed in the order they appeared, so they keep their accounts")
    func existingCustomersKeepTheirAccounts() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("old", .invoiceIssued, amount: 100, customer: "cus-9", payment: nil, invoice: "inv_9",
                        at: "2026-11-01T10:00:00Z")
        ])
        // As if the ledger predated `customer_accounts`: no claims recorded.
        try await h.store.withConnection { db in _ = try db.execute("DELETE FROM customer_accounts") }
        let handler = h.handler
        try await h.store.write { db in
            try handler.claimExistingCustomerAccounts(db)
            try handler.claimExistingCustomerAccounts(db)  // idempotent
        }
        try await h.apply([ledgerEvent("new", .invoiceIssued, amount: 5, customer: "cus_9", payment: nil, invoice: "inv_9b")])
        let bal = try h.balances().asDictionary
        #expect(bal["Assets:M-acme:Receivable:Cus-9 GBP"] == 100)
        #expect(bal["Assets:M-acme:Receivable:Cus-9--KJ101FNTMG939TF8 GBP"] == 5)  // hashlib, as above
        #expect(try await h.scalar("SELECT COUNT(*) FROM customer_accounts") == 2)
    }

    @Test("The same customer id at two merchants is two receivables; two merchants on one ledger name is a start-up error")
    func perMerchant() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("a", .invoiceIssued, merchant: "m_a", amount: 100, customer: "42", payment: nil, invoice: "inv"),
            ledgerEvent("b", .invoiceIssued, merchant: "m_b", amount: 200, customer: "42", payment: nil, invoice: "inv"),
        ])
        let bal = try h.balances().asDictionary
        #expect(bal["Assets:M-a:Receivable:42 GBP"] == 100 && bal["Assets:M-b:Receivable:42 GBP"] == 200)
        let root = try ConfigSection.parse(yaml: "ledger-writer:\n  unknown_customer: Unidentified\n")
        let error = #expect(throws: ConfigError.self) {
            _ = try LedgerHandler(
                section: try root.section("ledger-writer"), merchants: [Merchant(id: "m_a"), Merchant(id: "m-a")],
                logger: .init(label: "t"))
        }
        #expect(error?.key == "merchants[1].ledger_name")
        let merged = try ConfigSection.parse(yaml: "ledger-writer:\n  accounts:\n    receivable: \"Assets:Receivable:{customer}\"\n")
        let templateError = #expect(throws: ConfigError.self) {
            _ = try LedgerHandler(section: try merged.section("ledger-writer"), merchants: [], logger: .init(label: "t"))
        }
        #expect(templateError?.key == "ledger-writer.accounts.receivable")
    }
}
