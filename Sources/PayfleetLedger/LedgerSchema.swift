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
            """),
        // Reversals (DESIGN §5a): a failed refund credits what its refund debited, a reversed
        // payment debits what its payment credited, whatever the arrival order.
        Migration(
            "ledger.2",
            """
            -- The account each original leg used: what a refund (by metadata.refund_id) debited,
            -- what a payment (by payment.id) credited; the first event of a ref wins. `role` says
            -- which chart entry it was, so a receivable follows its customer once known.
            CREATE TABLE booked_originals (
                merchant_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('refund', 'payment')),
                ref TEXT NOT NULL,
                event_id TEXT NOT NULL,
                txid TEXT NOT NULL,
                account TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('receivable', 'refunds', 'sales')),
                customer_id TEXT,
                payment_id TEXT,
                invoice_id TEXT,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL,
                PRIMARY KEY (merchant_id, kind, ref)
            ) WITHOUT ROWID;

            -- Every reversal's undoing leg: where it is now (`account`, signed `amount` in
            -- `currency`) and whether it was booked against its original's account (`matched`).
            -- A reversal that arrives before its original is booked at once on the account its
            -- own facts name (never parked, never lost) with matched = 0; when the original
            -- arrives, a reclassifying transaction (txid `<reversal>/match`) moves the leg to the
            -- original's account if it differs.
            CREATE TABLE reversals (
                event_id TEXT PRIMARY KEY,
                merchant_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('refund', 'payment')),
                ref TEXT NOT NULL,
                txid TEXT NOT NULL,
                account TEXT NOT NULL,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL,
                matched INTEGER NOT NULL CHECK (matched IN (0, 1)),
                match_txid TEXT
            ) WITHOUT ROWID;
            CREATE INDEX reversals_waiting ON reversals(merchant_id, kind, ref) WHERE matched = 0;
            CREATE INDEX reversals_txid ON reversals(txid);
            CREATE INDEX reversals_match_txid ON reversals(match_txid);

            -- Payments booked before this migration: their credit is the one negative posting.
            -- (Refunds cannot be backfilled: their refund_id was not kept; a failed refund of
            -- one of them is booked on the account its own facts name.)
            INSERT OR IGNORE INTO booked_originals (merchant_id, kind, ref, event_id, txid, account, role, customer_id,
                payment_id, invoice_id, currency, amount)
            SELECT e.merchant_id, 'payment', e.payment_id, e.event_id, e.txid, p.account,
                   CASE WHEN e.invoice_id IS NOT NULL THEN 'receivable' ELSE 'sales' END, e.customer_id, e.payment_id,
                   e.invoice_id, p.currency, -p.amount
            FROM ledger_events e JOIN postings p ON p.txid = e.txid AND p.amount < 0
            WHERE e.type = 'payment.succeeded' AND e.payment_id IS NOT NULL
            ORDER BY e.occurred_at, e.event_id;
            """),
        // Issue 15 item 13: which `<Customer>` segment each customer id of a merchant holds,
        // unique both ways, so two ids that sanitize alike never share a receivable. Customers
        // booked before this table are claimed by `LedgerHandler.claimExistingCustomerAccounts`.
        Migration(
            "ledger.3",
            """
            CREATE TABLE customer_accounts (
                merchant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                segment TEXT NOT NULL,
                PRIMARY KEY (merchant_id, customer_id),
                UNIQUE (merchant_id, segment)
            ) WITHOUT ROWID;
            """),
        // Issue 19 item 4: manual journal entries (`payfleet ledger post | revert`). The entry is
        // an ordinary `reclass` transaction (same balance trigger, same immutability); this table
        // says who posted it, why, and what it reverses (a transaction is reverted at most once).
        Migration(
            "ledger.4",
            """
            CREATE TABLE manual_entries (
                txid TEXT PRIMARY KEY REFERENCES transactions(txid),
                action TEXT NOT NULL CHECK (action IN ('post', 'revert')),
                reverses TEXT UNIQUE REFERENCES transactions(txid),
                reason TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
                user TEXT NOT NULL,
                created_at TEXT NOT NULL,
                CHECK ((action = 'revert') = (reverses IS NOT NULL))
            ) WITHOUT ROWID;
            CREATE TRIGGER manual_entries_no_update BEFORE UPDATE ON manual_entries
            BEGIN SELECT RAISE(ABORT, 'ledger: manual entries are immutable'); END;
            CREATE TRIGGER manual_entries_no_delete BEFORE DELETE ON manual_entries
            BEGIN SELECT RAISE(ABORT, 'ledger: manual entries are immutable'); END;
            """),
        // Issue 18 (`payfleet trace ID`): a payment's or an invoice's events by index (crm-sync and
        // settlement-aggregator have theirs since crm.1 / settlement.2).
        Migration(
            "ledger.5",
            """
            CREATE INDEX ledger_events_payment ON ledger_events(merchant_id, payment_id) WHERE payment_id IS NOT NULL;
            CREATE INDEX ledger_events_invoice ON ledger_events(merchant_id, invoice_id) WHERE invoice_id IS NOT NULL;
            """),
    ]
}
