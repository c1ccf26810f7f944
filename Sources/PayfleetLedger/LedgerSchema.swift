import PayfleetStore

/// The ledger's tables. The invariants live in the database, so no code path (nor an operator
/// with `sqlite3`) can break them:
///
/// - **Balanced before commit.** Every `transactions` row has a deferred foreign key to its row
///   in `transaction_checks`, so a transaction without a check row fails at COMMIT. The check
///   row can only be inserted when the postings sum to zero per currency (and there are at
///   least two), and once it exists no posting can be added to that transaction.
/// - **Immutable.** Triggers refuse UPDATE and DELETE on `transactions`, `postings` and
///   `transaction_checks`; a correction is a new (reversing or reclassifying) transaction.
/// - **Integer minor units.** `postings.amount` must be an SQLite INTEGER (signed, debit positive).
public enum LedgerSchema {
    public static let migrations: [Migration] = [
        Migration(
            "ledger.1",
            """
            CREATE TABLE transactions (
                txid TEXT PRIMARY KEY,
                event_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('event', 'reclass')),
                merchant_id TEXT NOT NULL,
                date TEXT NOT NULL CHECK (date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
                description TEXT NOT NULL,
                FOREIGN KEY (txid) REFERENCES transaction_checks(txid) DEFERRABLE INITIALLY DEFERRED
            );
            CREATE INDEX transactions_event ON transactions(event_id);
            CREATE INDEX transactions_date ON transactions(date);

            CREATE TABLE postings (
                id INTEGER PRIMARY KEY,
                txid TEXT NOT NULL REFERENCES transactions(txid),
                account TEXT NOT NULL CHECK (account GLOB '[A-Z]*:[A-Z0-9]*'),
                currency TEXT NOT NULL CHECK (currency GLOB '[A-Z][A-Z][A-Z]'),
                amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer')
            );
            CREATE INDEX postings_txid ON postings(txid);
            CREATE INDEX postings_account ON postings(account, currency);

            -- The closing row of a transaction: insertable only when balanced.
            CREATE TABLE transaction_checks (
                txid TEXT PRIMARY KEY REFERENCES transactions(txid),
                postings INTEGER NOT NULL
            ) WITHOUT ROWID;

            CREATE TRIGGER transaction_checks_balanced BEFORE INSERT ON transaction_checks
            BEGIN
                SELECT RAISE(ABORT, 'ledger: transaction does not sum to zero per currency')
                WHERE EXISTS (
                    SELECT 1 FROM postings WHERE txid = NEW.txid GROUP BY currency HAVING SUM(amount) <> 0);
                SELECT RAISE(ABORT, 'ledger: a transaction needs at least two postings')
                WHERE (SELECT COUNT(*) FROM postings WHERE txid = NEW.txid) < 2;
                SELECT RAISE(ABORT, 'ledger: posting count does not match the check')
                WHERE (SELECT COUNT(*) FROM postings WHERE txid = NEW.txid) <> NEW.postings;
            END;

            CREATE TRIGGER postings_closed BEFORE INSERT ON postings
            WHEN EXISTS (SELECT 1 FROM transaction_checks WHERE txid = NEW.txid)
            BEGIN
                SELECT RAISE(ABORT, 'ledger: transaction is closed; post a new transaction');
            END;

            CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
            BEGIN SELECT RAISE(ABORT, 'ledger: postings are immutable; post a reversing transaction'); END;
            CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
            BEGIN SELECT RAISE(ABORT, 'ledger: postings are immutable; post a reversing transaction'); END;
            CREATE TRIGGER transactions_no_update BEFORE UPDATE ON transactions
            BEGIN SELECT RAISE(ABORT, 'ledger: transactions are immutable; post a reversing transaction'); END;
            CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions
            BEGIN SELECT RAISE(ABORT, 'ledger: transactions are immutable; post a reversing transaction'); END;
            CREATE TRIGGER transaction_checks_no_update BEFORE UPDATE ON transaction_checks
            BEGIN SELECT RAISE(ABORT, 'ledger: transaction checks are immutable'); END;
            CREATE TRIGGER transaction_checks_no_delete BEFORE DELETE ON transaction_checks
            BEGIN SELECT RAISE(ABORT, 'ledger: transaction checks are immutable'); END;

            -- Every event the worker saw, posted or not (payment.failed, a lost dispute).
            CREATE TABLE ledger_events (
                event_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                provider TEXT NOT NULL,
                payment_id TEXT,
                customer_id TEXT,
                invoice_id TEXT,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL,
                fee INTEGER,
                occurred_at TEXT NOT NULL,
                business_day TEXT NOT NULL,
                txid TEXT,
                outcome TEXT NOT NULL
            ) WITHOUT ROWID;

            -- What the worker learned about who a payment or invoice belongs to, from any event
            -- that named both: how a refund without a customer reaches one, whatever the order.
            CREATE TABLE customer_links (
                merchant_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('payment', 'invoice')),
                ref TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                PRIMARY KEY (merchant_id, kind, ref)
            ) WITHOUT ROWID;

            -- Receivable postings made to the unknown customer, until a link names the customer;
            -- then a reclassifying transaction moves them and `resolved_txid` records it.
            CREATE TABLE unresolved_receivables (
                txid TEXT NOT NULL,
                account TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                payment_id TEXT,
                invoice_id TEXT,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL,
                resolved_txid TEXT,
                PRIMARY KEY (txid, account, currency)
            ) WITHOUT ROWID;
            CREATE INDEX unresolved_payment ON unresolved_receivables(merchant_id, payment_id) WHERE resolved_txid IS NULL;
            CREATE INDEX unresolved_invoice ON unresolved_receivables(merchant_id, invoice_id) WHERE resolved_txid IS NULL;
            """)
    ]
}
