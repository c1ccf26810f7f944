import PayfleetStore

/// The settlement-aggregator's tables.
///
/// - `settlement_events`: every event the worker saw (the reconciliation side "ours"), with the
///   business day it belongs to and, for a late event, the adjustment it became.
/// - `settlement_totals`: running totals per merchant / currency / business day. Every column is
///   a sum of per-event deltas, so the totals converge whatever the arrival order; once the
///   merchant's day is closed, triggers refuse any change (frozen).
/// - `settlement_days`: closed (merchant, day) pairs.
/// - `settlement_adjustments`: events that arrived after their day closed, with their deltas and
///   arrival time; the report lists them against the day instead of rewriting it.
/// - `settlement_pending_fees`: `fee.assessed` events whose payment is not known yet; booked on
///   the payment's day when it arrives, or on their own day when that day comes due first.
/// - `settlement_outbox`: `settlement.day_closed` events written in the closing transaction and
///   published (with confirm) afterwards, so a crash never loses nor duplicates a close.
public enum SettlementSchema {
    public static let migrations: [Migration] = [
        Migration(
            "settlement.1",
            """
            CREATE TABLE settlement_events (
                event_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                provider TEXT NOT NULL,
                payment_id TEXT,
                psp_reference TEXT,
                currency TEXT NOT NULL CHECK (currency GLOB '[A-Z][A-Z][A-Z]'),
                amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer'),
                fee INTEGER NOT NULL CHECK (typeof(fee) = 'integer'),
                outcome TEXT,
                occurred_at TEXT NOT NULL,
                arrived_at TEXT NOT NULL,
                business_day TEXT NOT NULL CHECK (business_day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
                late INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;
            CREATE INDEX settlement_events_day ON settlement_events(business_day, provider);

            CREATE TABLE settlement_totals (
                merchant_id TEXT NOT NULL,
                currency TEXT NOT NULL,
                day TEXT NOT NULL,
                count INTEGER NOT NULL DEFAULT 0 CHECK (typeof(count) = 'integer'),
                gross INTEGER NOT NULL DEFAULT 0 CHECK (typeof(gross) = 'integer'),
                failed_count INTEGER NOT NULL DEFAULT 0 CHECK (typeof(failed_count) = 'integer'),
                refunds INTEGER NOT NULL DEFAULT 0 CHECK (typeof(refunds) = 'integer'),
                disputes_opened INTEGER NOT NULL DEFAULT 0 CHECK (typeof(disputes_opened) = 'integer'),
                disputes_won INTEGER NOT NULL DEFAULT 0 CHECK (typeof(disputes_won) = 'integer'),
                fees INTEGER NOT NULL DEFAULT 0 CHECK (typeof(fees) = 'integer'),
                payouts INTEGER NOT NULL DEFAULT 0 CHECK (typeof(payouts) = 'integer'),
                PRIMARY KEY (merchant_id, day, currency)
            ) WITHOUT ROWID;
            CREATE INDEX settlement_totals_day ON settlement_totals(day);

            CREATE TABLE settlement_days (
                merchant_id TEXT NOT NULL,
                day TEXT NOT NULL,
                closed_at TEXT NOT NULL,
                PRIMARY KEY (merchant_id, day)
            ) WITHOUT ROWID;

            CREATE TRIGGER settlement_totals_frozen_update BEFORE UPDATE ON settlement_totals
            WHEN EXISTS (SELECT 1 FROM settlement_days WHERE merchant_id = OLD.merchant_id AND day = OLD.day)
            BEGIN SELECT RAISE(ABORT, 'settlement: day is closed; record an adjustment'); END;
            CREATE TRIGGER settlement_totals_frozen_insert BEFORE INSERT ON settlement_totals
            WHEN EXISTS (SELECT 1 FROM settlement_days WHERE merchant_id = NEW.merchant_id AND day = NEW.day)
            BEGIN SELECT RAISE(ABORT, 'settlement: day is closed; record an adjustment'); END;
            CREATE TRIGGER settlement_totals_no_delete BEFORE DELETE ON settlement_totals
            BEGIN SELECT RAISE(ABORT, 'settlement: totals are never deleted'); END;

            CREATE TABLE settlement_adjustments (
                event_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                currency TEXT NOT NULL,
                day TEXT NOT NULL,
                arrived_at TEXT NOT NULL,
                count INTEGER NOT NULL,
                gross INTEGER NOT NULL,
                failed_count INTEGER NOT NULL,
                refunds INTEGER NOT NULL,
                disputes_opened INTEGER NOT NULL,
                disputes_won INTEGER NOT NULL,
                fees INTEGER NOT NULL,
                payouts INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX settlement_adjustments_day ON settlement_adjustments(day, merchant_id);

            CREATE TABLE settlement_outbox (
                event_id TEXT PRIMARY KEY,
                merchant_id TEXT NOT NULL,
                day TEXT NOT NULL,
                currency TEXT NOT NULL,
                body BLOB NOT NULL,
                created_at TEXT NOT NULL,
                published_at TEXT
            ) WITHOUT ROWID;
            """),
        // Late fees (DESIGN §5a: `fee.assessed` counts on the business day of the payment it
        // names): the payment lookup, and the fees that arrived before their payment.
        Migration(
            "settlement.2",
            """
            CREATE INDEX settlement_events_payment ON settlement_events(merchant_id, payment_id, type);

            CREATE TABLE settlement_pending_fees (
                event_id TEXT PRIMARY KEY,
                merchant_id TEXT NOT NULL,
                payment_id TEXT NOT NULL,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer'),
                own_day TEXT NOT NULL,
                arrived_at TEXT NOT NULL,
                resolved_at TEXT,
                resolved_day TEXT
            ) WITHOUT ROWID;
            CREATE INDEX settlement_pending_fees_payment ON settlement_pending_fees(merchant_id, payment_id)
                WHERE resolved_at IS NULL;
            """),
    ]
}
