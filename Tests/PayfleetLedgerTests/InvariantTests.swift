import Foundation
import PayfleetLedger
import PayfleetStore
import Testing

/// The database itself refuses what would break the books (issue 4, "what must be shown" 3).
@Suite struct InvariantTests {
    func seeded() async throws -> LedgerHarness {
        let h = try await LedgerHarness()
        try await h.apply([ledgerEvent("e1", .paymentSucceeded, amount: 1999, fee: 45)])
        return h
    }

    func expectRefused(_ h: LedgerHarness, _ sql: String, containing text: String) async throws {
        let error = await #expect(throws: SQLiteError.self) {
            try await h.store.write { db in try db.executeScript(sql) }
        }
        #expect(error?.isConstraint == true, "\(String(describing: error))")
        #expect(error?.message.contains(text) == true, "\(String(describing: error))")
    }

    @Test("UPDATE and DELETE on postings fail at the database level")
    func postingsImmutable() async throws {
        let h = try await seeded()
        try await expectRefused(h, "UPDATE postings SET amount = amount + 1", containing: "immutable")
        try await expectRefused(h, "DELETE FROM postings", containing: "immutable")
        try await expectRefused(h, "UPDATE transactions SET date = '2020-01-01'", containing: "immutable")
        try await expectRefused(h, "DELETE FROM transactions", containing: "immutable")
        try await expectRefused(h, "DELETE FROM transaction_checks", containing: "immutable")
        #expect(try await h.postings("e1") == [
            "Assets:M-acme:Clearing:Stripe": 1954, "Expenses:M-acme:PaymentFees": 45, "Income:M-acme:Sales": -1999,
        ])
    }

    @Test("An unbalanced transaction is refused by the database")
    func unbalancedRefused() async throws {
        let h = try await seeded()
        try await expectRefused(
            h,
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                VALUES ('x', 'x', 'payment.succeeded', 'event', 'm_acme', '2026-11-24', 'bad');
            INSERT INTO postings (txid, account, currency, amount) VALUES ('x', 'Assets:A:Bank', 'GBP', 100);
            INSERT INTO postings (txid, account, currency, amount) VALUES ('x', 'Income:A:Sales', 'GBP', -99);
            INSERT INTO transaction_checks (txid, postings) VALUES ('x', 2);
            """, containing: "does not sum to zero")
        // Zero overall but not per currency.
        try await expectRefused(
            h,
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                VALUES ('y', 'y', 'payment.succeeded', 'event', 'm_acme', '2026-11-24', 'bad');
            INSERT INTO postings (txid, account, currency, amount) VALUES ('y', 'Assets:A:Bank', 'GBP', 100);
            INSERT INTO postings (txid, account, currency, amount) VALUES ('y', 'Income:A:Sales', 'EUR', -100);
            INSERT INTO transaction_checks (txid, postings) VALUES ('y', 2);
            """, containing: "does not sum to zero")
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions") == 1)
    }

    @Test("A transaction never checked cannot commit; a closed transaction takes no more postings")
    func uncheckedAndClosed() async throws {
        let h = try await seeded()
        // Without its check row the deferred foreign key fails at COMMIT.
        let error = await #expect(throws: SQLiteError.self) {
            try await h.store.write { db in
                try db.executeScript(
                    """
                    INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                        VALUES ('z', 'z', 'payment.succeeded', 'event', 'm_acme', '2026-11-24', 'unchecked');
                    INSERT INTO postings (txid, account, currency, amount) VALUES ('z', 'Assets:A:Bank', 'GBP', 100);
                    """)
            }
        }
        #expect(error?.isConstraint == true)
        #expect(try await h.scalar("SELECT COUNT(*) FROM transactions WHERE txid = 'z'") == 0)
        try await expectRefused(
            h, "INSERT INTO postings (txid, account, currency, amount) VALUES ('e1', 'Assets:A:Bank', 'GBP', 0)",
            containing: "closed")
        // A single-posting transaction is refused too, as is a non-integer amount.
        try await expectRefused(
            h,
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                VALUES ('w', 'w', 'payment.succeeded', 'event', 'm_acme', '2026-11-24', 'one leg');
            INSERT INTO postings (txid, account, currency, amount) VALUES ('w', 'Assets:A:Bank', 'GBP', 0);
            INSERT INTO transaction_checks (txid, postings) VALUES ('w', 1);
            """, containing: "at least two")
        try await expectRefused(
            h,
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                VALUES ('v', 'v', 'payment.succeeded', 'event', 'm_acme', '2026-11-24', 'double');
            INSERT INTO postings (txid, account, currency, amount) VALUES ('v', 'Assets:A:Bank', 'GBP', 19.99);
            """, containing: "CHECK")
    }

    @Test("A correction is a new reversing transaction; the original stays")
    func correctionByReversal() async throws {
        let h = try await seeded()
        try await h.store.write { db in
            try db.executeScript(
                """
                INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
                    VALUES ('e1/reversal', 'e1', 'payment.succeeded', 'reclass', 'm_acme', '2026-11-25', 'reversal of e1');
                INSERT INTO postings (txid, account, currency, amount)
                    SELECT 'e1/reversal', account, currency, -amount FROM postings WHERE txid = 'e1';
                INSERT INTO transaction_checks (txid, postings) VALUES ('e1/reversal', 3);
                """)
        }
        #expect(try h.balances().isEmpty)
        #expect(try await h.scalar("SELECT COUNT(*) FROM postings") == 6)
    }
}
