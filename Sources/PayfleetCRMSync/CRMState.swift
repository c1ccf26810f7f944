import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// crm-sync's tables (DESIGN §5a): every event as recorded, the payment/invoice → customer links
/// through which a refund or dispute reaches its customer, the customer profile, and one
/// summary row per customer, merchant and currency.
///
/// Convergence: every money figure is a sum over the customer's events. Each event adds its
/// own contribution when it reaches its customer (counting zero when a reversal already
/// cancels it), and a reversal takes back the contribution of each original it is the first
/// to cancel, so the figures equal that sum whatever the order of arrival (`recompute`, the
/// sum itself, is used for a summary row that does not exist yet; `CRMIncrementalTests`
/// compares the two over shuffled histories); the
/// profile (name, email, phone) and the last payment are taken from the newest event by
/// `occurred_at` (then event id), so an older event never overwrites newer state.
///
/// Tenants: customer state is keyed by merchant + customer everywhere (`crm_customers`,
/// `crm_balances`, the links): two merchants that both use customer id `42` are two customers,
/// and one merchant's events never change another merchant's customer.
///
/// Reversals (DESIGN §5a): `refund.failed` cancels the `payment.refunded` with the same merchant
/// and `metadata.refund_id`; `payment.reversed` cancels the `payment.succeeded` events of the
/// same merchant and `payment.id`. A cancelled original counts zero in every figure (so a failed
/// refund is no longer `refunded` and gives back to `outstanding` what it took when it named an
/// invoice; a reversed payment is no longer `paid` nor the last payment). Cancellation is a
/// question asked of the recorded events whenever figures are recomputed, never a subtraction:
/// - reversal after its original: the original stops counting;
/// - reversal before its original (out of order): the reversal is recorded and waits, counting
///   zero itself; the original, when it arrives, is born cancelled and counts zero. Nothing is
///   subtracted that was never added, so money is never lost or doubled whatever the order;
/// - the same reversal twice (two provider events for one failed refund): cancelling is
///   idempotent, the original is undone once;
/// - an original that never arrives: the reversal stays recorded, shown as unmatched in the
///   customer's history (`matched: false`), and changes no figure.
/// The amount undone is the original's (what was booked), whatever amount the reversal carries.
/// Refunds recorded before `crm.2` carry no refund id and cannot be matched by a later
/// `refund.failed` (it stays unmatched and visible).
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
            """),
        // Customers keyed by merchant + customer (issue 15 item 10), refund ids for reversals.
        // Existing profiles move to the merchant of the event that last set them (or, should
        // that event be missing, to the one merchant whose events name the customer; a profile
        // with no event at all names no merchant and cannot be kept). A customer id
        // that more than one merchant used had one profile merged from both: it cannot be split
        // back, so each of those merchants gets the customer without name, email and phone
        // (`profile_event = 'crm.2:shared'`, counted in a warning at start-up) until its next
        // event refills them — never another merchant's data.
        Migration(
            "crm.2",
            """
            CREATE TABLE crm_customers_v2 (
                merchant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                name TEXT,
                email TEXT,
                phone TEXT,
                profile_at INTEGER NOT NULL,
                profile_event TEXT NOT NULL,
                PRIMARY KEY (merchant_id, customer_id)
            );
            INSERT INTO crm_customers_v2 (merchant_id, customer_id, name, email, phone, profile_at, profile_event)
            SELECT e.merchant_id, c.customer_id, c.name, c.email, c.phone, c.profile_at, c.profile_event
            FROM crm_customers c JOIN crm_events e ON e.event_id = c.profile_event
            WHERE (SELECT COUNT(DISTINCT x.merchant_id) FROM crm_events x
                   WHERE x.customer_id = c.customer_id AND x.own_customer = 1) <= 1;
            INSERT OR IGNORE INTO crm_customers_v2 (merchant_id, customer_id, name, email, phone, profile_at, profile_event)
            SELECT x.merchant_id, c.customer_id, c.name, c.email, c.phone, c.profile_at, c.profile_event
            FROM crm_customers c JOIN crm_events x ON x.customer_id = c.customer_id AND x.own_customer = 1
            WHERE NOT EXISTS (SELECT 1 FROM crm_events e WHERE e.event_id = c.profile_event)
              AND (SELECT COUNT(DISTINCT y.merchant_id) FROM crm_events y
                   WHERE y.customer_id = c.customer_id AND y.own_customer = 1) = 1;
            INSERT OR IGNORE INTO crm_customers_v2 (merchant_id, customer_id, name, email, phone, profile_at, profile_event)
            SELECT DISTINCT x.merchant_id, c.customer_id, NULL, NULL, NULL, 0, 'crm.2:shared'
            FROM crm_customers c JOIN crm_events x ON x.customer_id = c.customer_id AND x.own_customer = 1
            WHERE (SELECT COUNT(DISTINCT y.merchant_id) FROM crm_events y
                   WHERE y.customer_id = c.customer_id AND y.own_customer = 1) > 1;
            DROP TABLE crm_customers;
            ALTER TABLE crm_customers_v2 RENAME TO crm_customers;
            ALTER TABLE crm_events ADD COLUMN refund_id TEXT;
            CREATE INDEX crm_events_refund_idx ON crm_events(merchant_id, refund_id) WHERE refund_id IS NOT NULL;
            CREATE INDEX crm_events_merchant_customer_idx ON crm_events(merchant_id, customer_id);
            """),
        // Issue 17: figures are kept up to date by each event's contribution instead of a sum
        // over all the customer's events; what is still asked of the events per customer (open
        // disputes, the last payment after a reversal) is found by type within the customer.
        Migration(
            "crm.3",
            """
            DROP INDEX crm_events_customer_idx;
            CREATE INDEX crm_events_customer_type_idx ON crm_events(customer_id, merchant_id, currency, type);
            """),
        // The event that made the row's last payment: payments at the same instant are ordered
        // by event id without reading the customer's payments (NULL in older rows: read once).
        Migration("crm.4", "ALTER TABLE crm_balances ADD COLUMN last_payment_event TEXT"),
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

    public init(
        customerID: String, merchantID: String, currency: String, outstanding: Int64, paid: Int64, refunded: Int64,
        disputed: Int64, status: String, lastPaymentID: String?, lastPaymentAmount: Int64?, lastPaymentAt: Date?,
        name: String?, email: String?, phone: String?, version: Int64, at: Date
    ) {
        self.customerID = customerID
        self.merchantID = merchantID
        self.currency = currency
        self.outstanding = outstanding
        self.paid = paid
        self.refunded = refunded
        self.disputed = disputed
        self.status = status
        self.lastPaymentID = lastPaymentID
        self.lastPaymentAmount = lastPaymentAmount
        self.lastPaymentAt = lastPaymentAt
        self.name = name
        self.email = email
        self.phone = phone
        self.version = version
        self.at = at
    }

    public var key: String { "\(customerID)\u{1f}\(merchantID)\u{1f}\(currency)" }
    /// The customer's identity: merchant + customer.
    public var customerKey: String { "\(merchantID)\u{1f}\(customerID)" }
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
    /// Milliseconds since 1970, or nil when the date does not fit (never a trap).
    static func ms(_ d: Date) -> Int64? {
        let v = (d.timeIntervalSince1970 * 1000).rounded()
        guard v.isFinite, v > -9.2e18, v < 9.2e18 else { return nil }
        return Int64(v)
    }
    static func date(_ ms: Int64?) -> Date? { ms.map { Date(timeIntervalSince1970: Double($0) / 1000) } }

    static func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }

    /// How far in the future an `occurred_at` may be (DESIGN §3: now + 24 h): a later date would
    /// win the profile ("newest wins") forever.
    public static let futureTolerance: TimeInterval = 86_400

    /// Types that change no customer: merchant-level money (payouts, provider fees) and internal
    /// types. They are acknowledged without a change and counted by the handler.
    public static let noCustomerEffect: Set<PaymentEvent.EventType> = [
        .payoutPaid, .payoutFailed, .feeAssessed, .settlementDayClosed,
    ]

    /// Records `event`; returns the change to push (nil when nothing visible changed, e.g. a
    /// refund whose payment — and so whose customer — is not known yet). Throws a permanent
    /// `HandlerError` for an event that cannot be booked (`AmountOverflow`, `InvalidEvent`):
    /// the savepoint undoes it and it is dead-lettered, the customer's state stays as it was.
    public static func apply(_ event: PaymentEvent, db: SQLiteConnection, now: Date = Date()) throws -> CRMChange? {
        if try db.queryOne("SELECT 1 FROM crm_events WHERE event_id = ?", [.text(event.id)]) != nil { return nil }
        if noCustomerEffect.contains(event.type) { return nil }
        guard let occurred = ms(event.occurredAt) else {
            throw HandlerError.permanent("InvalidEvent", "occurred_at: not a representable date")
        }
        guard event.occurredAt.timeIntervalSince(now) <= futureTolerance else {
            throw HandlerError.permanent(
                "InvalidEvent", "occurred_at: \(RFC3339.format(event.occurredAt)) is more than 24 h in the future")
        }
        let merchant = event.merchantID
        let own = nonEmpty(event.customer?.id)
        let paymentID = nonEmpty(event.payment?.id)
        let invoiceID = nonEmpty(event.invoiceID)
        let refundID = [.paymentRefunded, .refundFailed].contains(event.type) ? nonEmpty(event.metadata["refund_id"]) : nil
        var customer = own
        if customer == nil { customer = try linked(db, merchant: merchant, payment: paymentID, invoice: invoiceID) }
        let outcome = event.type == .disputeClosed ? event.metadata["outcome"] : nil
        try db.execute(
            """
            INSERT INTO crm_events (event_id, type, merchant_id, customer_id, own_customer, payment_id, invoice_id,
                currency, amount, fee, occurred_at, outcome, channel, method, reference, refund_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.id), .text(event.type.rawValue), .text(merchant), SQLValue(customer), .int(own == nil ? 0 : 1),
             SQLValue(paymentID), SQLValue(invoiceID), .text(event.amount.currency.code), .int(event.amount.value),
             SQLValue(event.fee?.value), .int(occurred), SQLValue(outcome),
             SQLValue(nonEmpty(event.payment?.channel)), SQLValue(nonEmpty(event.payment?.method)),
             SQLValue(nonEmpty(event.reference)), SQLValue(refundID)])

        var resolved: [String] = []  // earlier events that reach their customer through this one
        if let own {
            try updateProfile(db, merchant: merchant, customer: own, event: event, at: occurred)
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

        // The originals a reversal cancels: their customers' figures change too (they may be
        // known while the reversal's own customer is not, or be another currency).
        // `+customer_id`: found by refund or payment id; on the (merchant, customer) index SQLite
        // would walk every event of the merchant that has a customer.
        var cancelled: [String] = []
        switch event.type {
        case .refundFailed:
            if let refundID {
                cancelled = try db.query(
                    """
                    SELECT event_id FROM crm_events WHERE merchant_id = ? AND refund_id = ? AND type = 'payment.refunded'
                      AND +customer_id IS NOT NULL
                    """, [.text(merchant), .text(refundID)]).compactMap { $0.string(0) }
            }
        case .paymentReversed:
            if let paymentID {
                cancelled = try db.query(
                    """
                    SELECT event_id FROM crm_events WHERE merchant_id = ? AND payment_id = ? AND type = 'payment.succeeded'
                      AND +customer_id IS NOT NULL
                    """, [.text(merchant), .text(paymentID)]).compactMap { $0.string(0) }
            }
        default: break
        }
        if customer == nil && cancelled.isEmpty { return nil }

        // The (customer, merchant, currency) summaries this event, the resolved and the
        // cancelled ones touch.
        let ids = [event.id] + resolved.sorted().filter { $0 != event.id }
        var visit = ids
        for id in cancelled.sorted() where !visit.contains(id) { visit.append(id) }
        var keys: [(customer: String, merchant: String, currency: String)] = []
        /// The summary's position in `keys`, added when new.
        func touch(_ c: String, _ m: String, _ cur: String) -> Int {
            if let k = keys.firstIndex(where: { $0.customer == c && $0.merchant == m && $0.currency == cur }) { return k }
            keys.append((c, m, cur))
            return keys.count - 1
        }
        // A reversal takes back its originals' contributions only when it is the first to
        // cancel them (the same reversal reported twice undoes them once).
        var alreadyCancelled = false
        if !cancelled.isEmpty {
            let (column, value) = event.type == .refundFailed ? ("refund_id", refundID) : ("payment_id", paymentID)
            alreadyCancelled = try db.queryOne(
                "SELECT 1 FROM crm_events WHERE merchant_id = ? AND \(column) = ? AND type = ? AND event_id <> ? LIMIT 1",
                [.text(merchant), SQLValue(value), .text(event.type.rawValue), .text(event.id)]) != nil
        }
        var payments: [PaymentRecord] = []
        var deltas: [Int: KeyDelta] = [:]
        for id in visit {
            guard let row = try db.queryOne(
                """
                SELECT e.event_id, e.type, e.payment_id, e.customer_id, e.merchant_id, e.currency, e.amount, e.fee,
                    e.occurred_at, e.invoice_id, e.outcome, e.channel, e.method, e.reference, \(cancelledSQL)
                FROM crm_events e WHERE e.event_id = ?
                """, [.text(id)]), let record = paymentRecord(row)
            else { continue }
            let k = touch(record.customerID, record.merchantID, record.currency)
            let isCancelled = (row.int(14) ?? 0) != 0
            let counted = Contribution(record)
            if ids.contains(id) {
                // Reaches its customer now: counts unless a reversal already cancels it.
                if !isCancelled { deltas[k, default: KeyDelta()].added.append(counted) }
            } else if !alreadyCancelled {
                // An original this reversal cancels: what it counted is taken back.
                deltas[k, default: KeyDelta()].removed.append(counted)
            }
            // Payment records: this event's and those that were waiting for their customer.
            if ids.contains(id) && record.type != PaymentEvent.EventType.invoiceIssued.rawValue { payments.append(record) }
        }
        var snapshots: [CustomerSnapshot] = []
        for (i, k) in keys.enumerated() {
            snapshots.append(
                try update(db, customer: k.customer, merchant: k.merchant, currency: k.currency, by: deltas[i] ?? KeyDelta(), now: now))
        }
        if snapshots.isEmpty && payments.isEmpty { return nil }
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

    /// Name, email and phone of one merchant's customer from the newest event that carries
    /// the customer (by occurred_at, then event id): an older event arriving late never
    /// overwrites them, and another merchant's events never touch them.
    static func updateProfile(
        _ db: SQLiteConnection, merchant: String, customer: String, event: PaymentEvent, at: Int64
    ) throws {
        let c = event.customer
        try db.execute(
            """
            INSERT INTO crm_customers (merchant_id, customer_id, name, email, phone, profile_at, profile_event)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
            ON CONFLICT (merchant_id, customer_id) DO UPDATE SET
                name = COALESCE(excluded.name, name), email = COALESCE(excluded.email, email),
                phone = COALESCE(excluded.phone, phone), profile_at = excluded.profile_at,
                profile_event = excluded.profile_event
            WHERE excluded.profile_at > profile_at OR (excluded.profile_at = profile_at AND excluded.profile_event > profile_event)
            """,
            [.text(merchant), .text(customer), SQLValue(nonEmpty(c?.name)), SQLValue(nonEmpty(c?.email)),
             SQLValue(nonEmpty(c?.phone)), .int(at), .text(event.id)])
    }

    /// SQL: 1 when the `crm_events` row aliased `e` is cancelled by a reversal (see `CRMSchema`).
    static let cancelledSQL = """
        CASE
          WHEN e.type = 'payment.refunded' AND e.refund_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM crm_events f WHERE f.merchant_id = e.merchant_id AND f.refund_id = e.refund_id
              AND f.type = 'refund.failed') THEN 1
          WHEN e.type = 'payment.succeeded' AND e.payment_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM crm_events f WHERE f.merchant_id = e.merchant_id AND f.payment_id = e.payment_id
              AND f.type = 'payment.reversed') THEN 1
          ELSE 0 END
        """

    /// SQL: 1 when the reversal row aliased `e` has found the original it cancels.
    static let matchedSQL = """
        CASE
          WHEN e.type = 'refund.failed' THEN EXISTS (
            SELECT 1 FROM crm_events o WHERE o.merchant_id = e.merchant_id AND o.refund_id = e.refund_id
              AND o.type = 'payment.refunded')
          WHEN e.type = 'payment.reversed' THEN EXISTS (
            SELECT 1 FROM crm_events o WHERE o.merchant_id = e.merchant_id AND o.payment_id = e.payment_id
              AND o.type = 'payment.succeeded')
          ELSE NULL END
        """

    /// The four figures of DESIGN §5a, summed with checked arithmetic (SQLite's `SUM` fails on
    /// integer overflow, which would poison the key: every later event of the customer failing).
    public struct Figures: Sendable, Equatable {
        public var outstanding: Int64 = 0
        public var paid: Int64 = 0
        public var refunded: Int64 = 0
        public var disputed: Int64 = 0
    }

    /// An overflow of a money sum: permanent (the event that caused it is dead-lettered).
    static func overflow(_ figure: String, customer: String, merchant: String, currency: String) -> HandlerError {
        .permanent(
            "AmountOverflow",
            "\(figure) of customer \(customer) of merchant \(merchant) in \(currency) would leave the 64-bit range; the event is not booked")
    }

    static func figures(_ db: SQLiteConnection, customer: String, merchant: String, currency: String) throws -> Figures {
        let rows = try db.query(
            """
            SELECT e.type, e.amount, e.invoice_id IS NOT NULL, e.outcome, \(cancelledSQL)
            FROM crm_events e WHERE e.customer_id = ? AND e.merchant_id = ? AND e.currency = ?
              AND e.type IN ('invoice.issued', 'payment.succeeded', 'payment.refunded', 'payment.disputed', 'dispute.closed')
            """, [.text(customer), .text(merchant), .text(currency)])
        var f = Figures()
        for r in rows {
            guard let type = r.string(0), let amount = r.int(1) else { continue }
            if (r.int(4) ?? 0) != 0 { continue }  // cancelled by a reversal
            let c = Contribution(type: type, amount: amount, invoiced: (r.int(2) ?? 0) != 0, outcome: r.string(3))
            try c.apply(to: &f, removing: false, customer: customer, merchant: merchant, currency: currency)
        }
        return f
    }

    /// What one event counts in its customer's figures (DESIGN §5a), when no reversal cancels it.
    struct Contribution {
        var type: String
        var amount: Int64
        var invoiced: Bool
        var outcome: String?
        var eventID = ""
        var paymentID: String?
        var occurredMS: Int64 = 0

        init(type: String, amount: Int64, invoiced: Bool, outcome: String?) {
            self.type = type
            self.amount = amount
            self.invoiced = invoiced
            self.outcome = outcome
        }

        init(_ r: PaymentRecord) {
            self.init(type: r.type, amount: r.amount, invoiced: r.invoiceID != nil, outcome: r.outcome)
            eventID = r.eventID
            paymentID = r.paymentID
            occurredMS = ms(r.occurredAt) ?? 0
        }

        /// Adds (or, `removing`, takes back) the contribution with checked arithmetic: an
        /// overflow is the event's permanent failure, the savepoint keeps the figures as they were.
        func apply(to f: inout Figures, removing: Bool, customer: String, merchant: String, currency: String) throws {
            func change(_ v: inout Int64, _ sign: Int64, _ name: String) throws {
                let (r, o) = (sign > 0) != removing ? v.addingReportingOverflow(amount) : v.subtractingReportingOverflow(amount)
                if o { throw overflow(name, customer: customer, merchant: merchant, currency: currency) }
                v = r
            }
            switch type {
            case "invoice.issued": try change(&f.outstanding, 1, "outstanding")
            case "payment.succeeded":
                try change(&f.paid, 1, "paid")
                if invoiced { try change(&f.outstanding, -1, "outstanding") }
            case "payment.refunded":
                try change(&f.refunded, 1, "refunded")
                if invoiced { try change(&f.outstanding, 1, "outstanding") }
            case "payment.disputed": try change(&f.disputed, 1, "disputed")
            case "dispute.closed" where outcome == "won": try change(&f.disputed, -1, "disputed")
            default: break
            }
        }
    }

    /// The contributions one event adds to, and takes back from, one summary row.
    struct KeyDelta {
        var added: [Contribution] = []
        var removed: [Contribution] = []
    }

    /// The summary row of one customer, merchant and currency changed by `delta` (one read and
    /// one upsert, whatever the length of the customer's history); a row not written yet is
    /// computed from all its events (`recompute`).
    static func update(
        _ db: SQLiteConnection, customer: String, merchant: String, currency: String, by delta: KeyDelta, now: Date
    ) throws -> CustomerSnapshot {
        let args: [SQLValue] = [.text(customer), .text(merchant), .text(currency)]
        guard let row = try db.queryOne(
            """
            SELECT outstanding, paid, refunded, disputed, last_payment_id, last_payment_amount, last_payment_at, version,
                last_payment_event
            FROM crm_balances WHERE customer_id = ? AND merchant_id = ? AND currency = ?
            """, args)
        else { return try recompute(db, customer: customer, merchant: merchant, currency: currency, now: now) }
        var f = Figures(outstanding: row.int(0) ?? 0, paid: row.int(1) ?? 0, refunded: row.int(2) ?? 0, disputed: row.int(3) ?? 0)
        var last = LastPayment(id: row.string(4), amount: row.int(5), atMS: row.int(6), eventID: row.string(8))
        var lastNeedsQuery = false
        for c in delta.removed {
            try c.apply(to: &f, removing: true, customer: customer, merchant: merchant, currency: currency)
            if c.type == "payment.succeeded" { lastNeedsQuery = true }
        }
        for c in delta.added {
            try c.apply(to: &f, removing: false, customer: customer, merchant: merchant, currency: currency)
            guard c.type == "payment.succeeded" else { continue }
            let candidate = LastPayment(id: c.paymentID, amount: c.amount, atMS: c.occurredMS, eventID: c.eventID)
            if let at = last.atMS, last.amount != nil {
                if c.occurredMS > at {
                    last = candidate
                } else if c.occurredMS == at {
                    // The tie goes to the greater event id (SQLite's byte order); a row written
                    // before crm.3 does not know its last payment's event.
                    if let e = last.eventID {
                        if e.utf8.lexicographicallyPrecedes(c.eventID.utf8) { last = candidate }
                    } else {
                        lastNeedsQuery = true
                    }
                }
            } else {
                last = candidate
            }
        }
        if lastNeedsQuery { last = try lastPayment(db, args) }
        return try store(
            db, customer: customer, merchant: merchant, currency: currency, figures: f, last: last,
            version: (row.int(7) ?? 0) &+ 1, now: now)
    }

    struct LastPayment {
        var id: String?
        var amount: Int64?
        var atMS: Int64?
        /// The event that made it the last payment (ties of `atMS` go to the greater event id).
        var eventID: String?
    }

    /// The newest payment of a customer, merchant and currency that no reversal cancels.
    static func lastPayment(_ db: SQLiteConnection, _ args: [SQLValue]) throws -> LastPayment {
        let r = try db.queryOne(
            """
            SELECT e.payment_id, e.amount, e.occurred_at, e.event_id FROM crm_events e
            WHERE e.customer_id = ? AND e.merchant_id = ? AND e.currency = ? AND e.type = 'payment.succeeded'
              AND \(cancelledSQL) = 0
            ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT 1
            """, args)
        return LastPayment(id: r?.string(0), amount: r?.int(1), atMS: r?.int(2), eventID: r?.string(3))
    }

    /// The DESIGN §5a figures for one customer, merchant and currency, from all its events.
    public static func recompute(
        _ db: SQLiteConnection, customer: String, merchant: String, currency: String, now: Date
    ) throws -> CustomerSnapshot {
        let args: [SQLValue] = [.text(customer), .text(merchant), .text(currency)]
        let f = try figures(db, customer: customer, merchant: merchant, currency: currency)
        let previous = try db.queryOne(
            "SELECT version FROM crm_balances WHERE customer_id = ? AND merchant_id = ? AND currency = ?", args)?.int(0) ?? 0
        return try store(
            db, customer: customer, merchant: merchant, currency: currency, figures: f, last: try lastPayment(db, args),
            version: previous &+ 1, now: now)
    }

    /// Writes the summary row (status from the figures and the customer's open disputes) and
    /// returns it as pushed, with the profile.
    static func store(
        _ db: SQLiteConnection, customer: String, merchant: String, currency: String, figures f: Figures, last: LastPayment,
        version: Int64, now: Date
    ) throws -> CustomerSnapshot {
        let args: [SQLValue] = [.text(customer), .text(merchant), .text(currency)]
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
        } else if f.outstanding > 0 {
            status = "owing"
        } else if f.outstanding < 0 {
            status = "in_credit"
        } else {
            status = "settled"
        }
        let profile = try db.queryOne(
            "SELECT name, email, phone FROM crm_customers WHERE merchant_id = ? AND customer_id = ?",
            [.text(merchant), .text(customer)])
        let nowMS = ms(now) ?? 0
        try db.execute(
            """
            INSERT INTO crm_balances (customer_id, merchant_id, currency, outstanding, paid, refunded, disputed, status,
                last_payment_id, last_payment_amount, last_payment_at, version, updated_at, last_payment_event)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (customer_id, merchant_id, currency) DO UPDATE SET
                outstanding = excluded.outstanding, paid = excluded.paid, refunded = excluded.refunded,
                disputed = excluded.disputed, status = excluded.status, last_payment_id = excluded.last_payment_id,
                last_payment_amount = excluded.last_payment_amount, last_payment_at = excluded.last_payment_at,
                version = excluded.version, updated_at = excluded.updated_at,
                last_payment_event = excluded.last_payment_event
            """,
            args + [.int(f.outstanding), .int(f.paid), .int(f.refunded), .int(f.disputed), .text(status),
                    SQLValue(last.id), SQLValue(last.amount), SQLValue(last.atMS), .int(version), .int(nowMS),
                    SQLValue(last.eventID)])
        return CustomerSnapshot(
            customerID: customer, merchantID: merchant, currency: currency, outstanding: f.outstanding, paid: f.paid,
            refunded: f.refunded, disputed: f.disputed, status: status, lastPaymentID: last.id,
            lastPaymentAmount: last.amount, lastPaymentAt: date(last.atMS), name: profile?.string(0),
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

    /// Customers whose profile `crm.2` could not carry over (a customer id shared by merchants).
    public static func sharedProfilesCleared(_ db: SQLiteConnection) throws -> Int {
        Int(try db.queryOne("SELECT COUNT(*) FROM crm_customers WHERE profile_event = 'crm.2:shared'")?.int(0) ?? 0)
    }
}
