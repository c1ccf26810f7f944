import Foundation
import PayfleetCore
import PayfleetStore

/// crm-sync's tables (DESIGN §5a): every event as recorded, the payment/invoice → customer links
/// through which a refund or dispute reaches its customer, the customer profile, and one
/// summary row per customer, merchant and currency.
///
/// Convergence: every money figure is a sum over the customer's events, recomputed from
/// `crm_events` whenever one of them changes, so the order of arrival cannot matter; the
/// profile (name, email, phone) and the last payment are taken from the newest event by
/// `occurred_at` (then event id), so an older event never overwrites newer state.
public enum CRMSchema {
    public static let migrations: [Migration] = [
        Migration(
            "crm.1",
            """
            CREATE TABLE crm_events (
                event_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                customer_id TEXT,
                own_customer INTEGER NOT NULL,
                payment_id TEXT,
                invoice_id TEXT,
                currency TEXT NOT NULL,
                amount INTEGER NOT NULL,
                fee INTEGER,
                occurred_at INTEGER NOT NULL,
                outcome TEXT,
                channel TEXT,
                method TEXT,
                reference TEXT
            );
            CREATE INDEX crm_events_customer_idx ON crm_events(customer_id, merchant_id, currency);
            CREATE INDEX crm_events_payment_idx ON crm_events(merchant_id, payment_id);
            CREATE INDEX crm_events_invoice_idx ON crm_events(merchant_id, invoice_id);
            CREATE TABLE crm_links (
                merchant_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('payment', 'invoice')),
                ref TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                PRIMARY KEY (merchant_id, kind, ref)
            );
            CREATE TABLE crm_customers (
                customer_id TEXT PRIMARY KEY,
                name TEXT,
                email TEXT,
                phone TEXT,
                profile_at INTEGER NOT NULL,
                profile_event TEXT NOT NULL
            );
            CREATE TABLE crm_balances (
                customer_id TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                currency TEXT NOT NULL,
                outstanding INTEGER NOT NULL,
                paid INTEGER NOT NULL,
                refunded INTEGER NOT NULL,
                disputed INTEGER NOT NULL,
                status TEXT NOT NULL,
                last_payment_id TEXT,
                last_payment_amount INTEGER,
                last_payment_at INTEGER,
                version INTEGER NOT NULL,
                pushed_version INTEGER NOT NULL DEFAULT 0,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (customer_id, merchant_id, currency)
            );
            """)
    ]
}

/// One customer's state for one merchant and currency, as pushed to the CRM (DESIGN §6 fields
/// plus the profile, status, last payment and a version that only grows).
public struct CustomerSnapshot: Codable, Sendable, Equatable {
    public var customerID: String
    public var merchantID: String
    public var currency: String
    public var outstanding: Int64
    public var paid: Int64
    public var refunded: Int64
    public var disputed: Int64
    public var status: String
    public var lastPaymentID: String?
    public var lastPaymentAmount: Int64?
    public var lastPaymentAt: Date?
    public var name: String?
    public var email: String?
    public var phone: String?
    public var version: Int64
    public var at: Date

    public var key: String { "\(customerID)\u{1f}\(merchantID)\u{1f}\(currency)" }
}

/// One payment-related event of a known customer, for CRMs that keep a record per payment.
public struct PaymentRecord: Codable, Sendable, Equatable {
    public var eventID: String
    public var type: String
    public var paymentID: String?
    public var customerID: String
    public var merchantID: String
    public var currency: String
    public var amount: Int64
    public var fee: Int64?
    public var occurredAt: Date
    public var invoiceID: String?
    public var outcome: String?
    public var channel: String?
    public var method: String?
    public var reference: String?
}

/// The journaled effect of one event: the customer states it changed and the payment records
/// it made known (its own, and earlier ones that were waiting for their customer).
public struct CRMChange: Codable, Sendable, Equatable {
    public var eventID: String
    public var eventType: String
    public var customers: [CustomerSnapshot]
    public var payments: [PaymentRecord]
}

/// Applies events to the tables above; pure SQLite, called inside the runtime's transaction.
public enum CRMState {
    static func ms(_ d: Date) -> Int64 { Int64((d.timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ ms: Int64?) -> Date? { ms.map { Date(timeIntervalSince1970: Double($0) / 1000) } }

    static func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }

    /// Records `event`; returns the change to push (nil when nothing visible changed, e.g. a
    /// refund whose payment — and so whose customer — is not known yet).
    public static func apply(_ event: PaymentEvent, db: SQLiteConnection, now: Date = Date()) throws -> CRMChange? {
        if try db.queryOne("SELECT 1 FROM crm_events WHERE event_id = ?", [.text(event.id)]) != nil { return nil }
        switch event.type {
        case .payoutPaid, .settlementDayClosed: return nil  // merchant-level, no customer
        default: break
        }
        let merchant = event.merchantID
        let own = nonEmpty(event.customer?.id)
        let paymentID = nonEmpty(event.payment?.id)
        let invoiceID = nonEmpty(event.invoiceID)
        var customer = own
        if customer == nil { customer = try linked(db, merchant: merchant, payment: paymentID, invoice: invoiceID) }
        let outcome = event.type == .disputeClosed ? event.metadata["outcome"] : nil
        try db.execute(
            """
            INSERT INTO crm_events (event_id, type, merchant_id, customer_id, own_customer, payment_id, invoice_id,
                currency, amount, fee, occurred_at, outcome, channel, method, reference)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.id), .text(event.type.rawValue), .text(merchant), SQLValue(customer), .int(own == nil ? 0 : 1),
             SQLValue(paymentID), SQLValue(invoiceID), .text(event.amount.currency.code), .int(event.amount.value),
             SQLValue(event.fee?.value), .int(ms(event.occurredAt)), SQLValue(outcome),
             SQLValue(nonEmpty(event.payment?.channel)), SQLValue(nonEmpty(event.payment?.method)),
             SQLValue(nonEmpty(event.reference))])

        var resolved: [String] = []  // earlier events that reach their customer through this one
        if let own {
            try updateProfile(db, customer: own, event: event)
            for (kind, ref) in [("payment", paymentID), ("invoice", invoiceID)] {
                guard let ref else { continue }
                let inserted = try db.execute(
                    "INSERT OR IGNORE INTO crm_links (merchant_id, kind, ref, customer_id) VALUES (?, ?, ?, ?)",
                    [.text(merchant), .text(kind), .text(ref), .text(own)])
                guard inserted == 1 else { continue }
                let column = kind == "payment" ? "payment_id" : "invoice_id"
                let rows = try db.query(
                    "UPDATE crm_events SET customer_id = ? WHERE customer_id IS NULL AND merchant_id = ? AND \(column) = ? RETURNING event_id",
                    [.text(own), .text(merchant), .text(ref)])
                resolved += rows.compactMap { $0.string(0) }
            }
        }
        guard let customer else { return nil }

        // The (merchant, currency) summaries this event and the resolved ones touch.
        let ids = [event.id] + resolved.sorted()
        var keys: [String] = []
        var payments: [PaymentRecord] = []
        for id in ids {
            guard let row = try db.queryOne(
                """
                SELECT event_id, type, payment_id, customer_id, merchant_id, currency, amount, fee, occurred_at,
                    invoice_id, outcome, channel, method, reference FROM crm_events WHERE event_id = ?
                """, [.text(id)]), let record = paymentRecord(row)
            else { continue }
            let k = "\(record.merchantID)\u{1f}\(record.currency)"
            if !keys.contains(k) { keys.append(k) }
            if record.type != PaymentEvent.EventType.invoiceIssued.rawValue { payments.append(record) }
        }
        var snapshots: [CustomerSnapshot] = []
        for k in keys {
            let parts = k.split(separator: "\u{1f}", omittingEmptySubsequences: false).map(String.init)
            snapshots.append(try recompute(db, customer: customer, merchant: parts[0], currency: parts[1], now: now))
        }
        return CRMChange(eventID: event.id, eventType: event.type.rawValue, customers: snapshots, payments: payments)
    }

    static func paymentRecord(_ r: SQLRow) -> PaymentRecord? {
        guard let id = r.string(0), let type = r.string(1), let customer = r.string(3), let merchant = r.string(4),
            let currency = r.string(5), let amount = r.int(6), let at = r.int(8)
        else { return nil }
        return PaymentRecord(
            eventID: id, type: type, paymentID: r.string(2), customerID: customer, merchantID: merchant,
            currency: currency, amount: amount, fee: r.int(7), occurredAt: date(at)!, invoiceID: r.string(9),
            outcome: r.string(10), channel: r.string(11), method: r.string(12), reference: r.string(13))
    }

    static func linked(_ db: SQLiteConnection, merchant: String, payment: String?, invoice: String?) throws -> String? {
        for (kind, ref) in [("payment", payment), ("invoice", invoice)] {
            guard let ref else { continue }
            if let r = try db.queryOne(
                "SELECT customer_id FROM crm_links WHERE merchant_id = ? AND kind = ? AND ref = ?",
                [.text(merchant), .text(kind), .text(ref)])
            {
                return r.string(0)
            }
        }
        return nil
    }

    /// Name, email and phone from the newest event that carries the customer (by occurred_at,
    /// then event id): an older event arriving late never overwrites them.
    static func updateProfile(_ db: SQLiteConnection, customer: String, event: PaymentEvent) throws {
        let at = ms(event.occurredAt)
        let c = event.customer
        try db.execute(
            """
            INSERT INTO crm_customers (customer_id, name, email, phone, profile_at, profile_event)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6)
            ON CONFLICT (customer_id) DO UPDATE SET
                name = COALESCE(excluded.name, name), email = COALESCE(excluded.email, email),
                phone = COALESCE(excluded.phone, phone), profile_at = excluded.profile_at,
                profile_event = excluded.profile_event
            WHERE excluded.profile_at > profile_at OR (excluded.profile_at = profile_at AND excluded.profile_event > profile_event)
            """,
            [.text(customer), SQLValue(nonEmpty(c?.name)), SQLValue(nonEmpty(c?.email)), SQLValue(nonEmpty(c?.phone)),
             .int(at), .text(event.id)])
    }

    /// The DESIGN §5a figures for one customer, merchant and currency, from all its events.
    public static func recompute(
        _ db: SQLiteConnection, customer: String, merchant: String, currency: String, now: Date
    ) throws -> CustomerSnapshot {
        let args: [SQLValue] = [.text(customer), .text(merchant), .text(currency)]
        let sums = try db.queryOne(
            """
            SELECT
              COALESCE(SUM(CASE
                WHEN type = 'invoice.issued' THEN amount
                WHEN type = 'payment.succeeded' AND invoice_id IS NOT NULL THEN -amount
                WHEN type = 'payment.refunded' AND invoice_id IS NOT NULL THEN amount
                ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN type = 'payment.succeeded' THEN amount ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN type = 'payment.refunded' THEN amount ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN type = 'payment.disputed' THEN amount
                                WHEN type = 'dispute.closed' AND outcome = 'won' THEN -amount ELSE 0 END), 0)
            FROM crm_events WHERE customer_id = ? AND merchant_id = ? AND currency = ?
            """, args)!
        let outstanding = sums.int(0) ?? 0
        let paid = sums.int(1) ?? 0
        let refunded = sums.int(2) ?? 0
        let disputed = sums.int(3) ?? 0
        let last = try db.queryOne(
            """
            SELECT payment_id, amount, occurred_at FROM crm_events
            WHERE customer_id = ? AND merchant_id = ? AND currency = ? AND type = 'payment.succeeded'
            ORDER BY occurred_at DESC, event_id DESC LIMIT 1
            """, args)
        // A dispute is open until a dispute.closed names the same payment.
        let openDisputes = try db.queryOne(
            """
            SELECT COUNT(*) FROM crm_events d WHERE d.customer_id = ? AND d.merchant_id = ? AND d.currency = ?
              AND d.type = 'payment.disputed' AND NOT EXISTS (
                SELECT 1 FROM crm_events c WHERE c.type = 'dispute.closed' AND c.merchant_id = d.merchant_id
                  AND c.payment_id = d.payment_id)
            """, args)?.int(0) ?? 0
        let status: String
        if openDisputes > 0 {
            status = "disputed"
        } else if outstanding > 0 {
            status = "owing"
        } else if outstanding < 0 {
            status = "in_credit"
        } else {
            status = "settled"
        }
        let profile = try db.queryOne("SELECT name, email, phone FROM crm_customers WHERE customer_id = ?", [.text(customer)])
        let version = (try db.queryOne(
            "SELECT version FROM crm_balances WHERE customer_id = ? AND merchant_id = ? AND currency = ?", args)?.int(0) ?? 0) + 1
        let nowMS = ms(now)
        try db.execute(
            """
            INSERT INTO crm_balances (customer_id, merchant_id, currency, outstanding, paid, refunded, disputed, status,
                last_payment_id, last_payment_amount, last_payment_at, version, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (customer_id, merchant_id, currency) DO UPDATE SET
                outstanding = excluded.outstanding, paid = excluded.paid, refunded = excluded.refunded,
                disputed = excluded.disputed, status = excluded.status, last_payment_id = excluded.last_payment_id,
                last_payment_amount = excluded.last_payment_amount, last_payment_at = excluded.last_payment_at,
                version = excluded.version, updated_at = excluded.updated_at
            """,
            args + [.int(outstanding), .int(paid), .int(refunded), .int(disputed), .text(status),
                    SQLValue(last?.string(0)), SQLValue(last?.int(1)), SQLValue(last?.int(2)), .int(version), .int(nowMS)])
        return CustomerSnapshot(
            customerID: customer, merchantID: merchant, currency: currency, outstanding: outstanding, paid: paid,
            refunded: refunded, disputed: disputed, status: status, lastPaymentID: last?.string(0),
            lastPaymentAmount: last?.int(1), lastPaymentAt: date(last?.int(2)), name: profile?.string(0),
            email: profile?.string(1), phone: profile?.string(2), version: version, at: date(nowMS)!)
    }

    /// Records that the CRM has the given versions (never lowers a recorded version).
    public static func markPushed(_ db: SQLiteConnection, _ snapshots: [CustomerSnapshot]) throws {
        for s in snapshots {
            try db.execute(
                """
                UPDATE crm_balances SET pushed_version = MAX(pushed_version, ?)
                WHERE customer_id = ? AND merchant_id = ? AND currency = ?
                """, [.int(s.version), .text(s.customerID), .text(s.merchantID), .text(s.currency)])
        }
    }
}
