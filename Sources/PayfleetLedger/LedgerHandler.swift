import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus

/// One posting of a planned transaction: signed minor units, debit positive.
public struct PlannedPosting: Sendable, Equatable, CustomStringConvertible {
    public var account: String
    public var amount: Int64
    public init(_ account: String, _ amount: Int64) {
        self.account = account
        self.amount = amount
    }
    public var description: String { "\(account) \(amount)" }
}

/// The `ledger-writer` handler: turns each event into one balanced transaction of the chart of
/// DESIGN §5a, keyed by the event id, dated with the merchant's business day.
///
/// Configuration (section `ledger-writer`, besides the runtime's keys):
/// - `accounts` (mapping): account-name templates, see `ChartOfAccounts`.
/// - `unknown_customer` (string, `Unidentified`): the customer segment used for a receivable
///   whose customer is not known yet (a refund that arrives before its payment and names no
///   customer). When a later event links the payment or invoice to a customer, a reclassifying
///   transaction moves the amount, so the books converge whatever the arrival order.
///
/// Reversals (`refund.failed`, `payment.reversed`) undo exactly what their original booked:
/// `booked_originals` keeps, per refund (`metadata.refund_id`) and per payment (`payment.id`),
/// the account its leg used. A reversal that arrives before its original is booked at once on
/// the account its own facts name (an invoice → the receivable, else `Income:Refunds` /
/// `Income:Sales`) and remembered in `reversals`; when the original arrives and used another
/// account, a reclassifying transaction (`<reversal>/match`) moves the leg there. Nothing is
/// parked (no money waits outside the books) and nothing is booked twice.
///
/// Customer receivables are injective per merchant: `customer_accounts` records which customer
/// id holds which `<Customer>` segment; the first id gets the plain sanitized one, a later id
/// that sanitizes the same way a hash suffix (`ChartOfAccounts.customerSegmentCandidates`).
///
/// Amounts are added with checked arithmetic: an overflow (and SQLite's `integer overflow`
/// from a `SUM`) is a permanent `AmountOverflow` error, dead-lettered, never a trap.
public struct LedgerHandler: WorkerHandler {
    public typealias Effect = NoEffect

    public let chart: ChartOfAccounts
    public let merchants: [String: Merchant]
    public let unknownCustomer: String
    /// The `<Merchant>` segment of each configured merchant, computed once.
    let ledgerNames: [String: String]
    let logger: Logger

    public init(
        chart: ChartOfAccounts = ChartOfAccounts(), merchants: [Merchant] = [], unknownCustomer: String = "Unidentified",
        logger: Logger = Logger(label: "payfleet.ledger-writer")
    ) {
        self.chart = chart
        var byID: [String: Merchant] = [:]
        for m in merchants { byID[m.id] = m }
        self.merchants = byID
        ledgerNames = byID.mapValues { Merchant.accountSegment($0.ledgerName) }
        self.unknownCustomer = Merchant.accountSegment(unknownCustomer)
        self.logger = logger
    }

    /// Builds the handler from the worker's configuration section.
    public init(section: ConfigSection, merchants: [Merchant], logger: Logger) throws(ConfigError) {
        let chart = try ChartOfAccounts.read(section)
        let unknown = try section.string("unknown_customer", default: "Unidentified")
        guard !unknown.isEmpty else {
            throw ConfigError(key: section.dotted("unknown_customer"), message: "must not be empty")
        }
        // Two merchants on one `<Merchant>` segment would share every account.
        var seen: [String: String] = [:]
        for (i, m) in merchants.enumerated() {
            let segment = Merchant.accountSegment(m.ledgerName)
            if let other = seen[segment] {
                throw ConfigError(
                    key: "merchants[\(i)].ledger_name",
                    message:
                        "'\(segment)' is already the ledger name of merchant '\(other)'; set a distinct ledger_name")
            }
            seen[segment] = m.id
        }
        self.init(chart: chart, merchants: merchants, unknownCustomer: unknown, logger: logger)
    }

    public var migrations: [Migration] { LedgerSchema.migrations }

    /// The configured merchant, or (unknown merchant) one with UTC days and the default name.
    public func merchant(_ id: String) -> Merchant { merchants[id] ?? Merchant(id: id) }

    /// The `<Merchant>` account segment: the configured `ledger_name`, sanitized.
    public func ledgerName(_ merchantID: String) -> String {
        ledgerNames[merchantID] ?? Merchant.accountSegment(merchant(merchantID).ledgerName)
    }

    public func businessDay(_ event: PaymentEvent) -> String { merchant(event.merchantID).businessDay(for: event.occurredAt) }

    /// The receivable of `customer` (nil: the unknown customer) of merchant `merchantID`, with
    /// the customer's segment from `customer_accounts` (claimed now if the customer is new):
    /// injective per merchant, see `ChartOfAccounts.customerSegmentCandidates`.
    func receivableAccount(_ db: SQLiteConnection, merchantID: String, _ customer: String?) throws -> String {
        let m = ledgerName(merchantID)
        guard let customer else { return chart.receivable(merchant: m, segment: unknownCustomer) }
        return chart.receivable(merchant: m, segment: try customerSegment(db, merchantID: merchantID, customer))
    }

    /// The customer's `<Customer>` segment, claiming the first free candidate for a new one.
    func customerSegment(_ db: SQLiteConnection, merchantID: String, _ customer: String) throws -> String {
        if let r = try db.queryOne(
            "SELECT segment FROM customer_accounts WHERE merchant_id = ? AND customer_id = ?",
            [.text(merchantID), .text(customer)]), let segment = r.string(0)
        {
            return segment
        }
        let candidates = ChartOfAccounts.customerSegmentCandidates(customer, reserved: unknownCustomer)
        var n = 1
        while true {
            let segment = n <= candidates.count ? candidates[n - 1] : candidates[candidates.count - 1] + "-\(n)"
            // The customer has no row: an ignored insert means another id holds this segment.
            let inserted = try db.execute(
                "INSERT OR IGNORE INTO customer_accounts (merchant_id, customer_id, segment) VALUES (?, ?, ?)",
                [.text(merchantID), .text(customer), .text(segment)])
            if inserted == 1 { return segment }
            n += 1
        }
    }

    /// Claims segments for the customers booked before `customer_accounts` existed, in the
    /// order they first appeared, so each keeps the account it has (where two ids shared one,
    /// the first keeps it and the other books on a suffixed account from now on). Idempotent;
    /// `attach` runs it before the worker consumes.
    public func claimExistingCustomerAccounts(_ db: SQLiteConnection) throws {
        let rows = try db.query(
            """
            SELECT merchant_id, customer_id FROM ledger_events e WHERE customer_id IS NOT NULL AND customer_id <> ''
                AND NOT EXISTS (SELECT 1 FROM customer_accounts a
                                WHERE a.merchant_id = e.merchant_id AND a.customer_id = e.customer_id)
            GROUP BY merchant_id, customer_id ORDER BY MIN(occurred_at), MIN(event_id)
            """)
        for r in rows {
            guard let merchantID = r.string(0), let customer = r.string(1) else { continue }
            _ = try customerSegment(db, merchantID: merchantID, customer)
        }
    }

    public func attach(store: Store, registry: PrometheusCollectorRegistry) async throws {
        let handler = self
        try await store.write { db in try handler.claimExistingCustomerAccounts(db) }
    }

    /// The postings of DESIGN §5a for `event`, with the receivable (if any) on `customer`'s
    /// account under its plain segment (nil: the unknown customer). Empty for events that post
    /// nothing. `apply` books the receivable on the customer's claimed segment and a reversal's
    /// undoing leg against what its original used; here it goes where its own facts say.
    public func postings(for event: PaymentEvent, customer: String?) throws(HandlerError) -> [PlannedPosting] {
        let m = ledgerName(event.merchantID)
        let receivable = customer.map { chart.receivable(merchant: m, customer: $0) }
            ?? chart.receivable(merchant: m, segment: unknownCustomer)
        return try postings(for: event, receivable: receivable, reversalTarget: nil)
    }

    func postings(for event: PaymentEvent, receivable: String, reversalTarget: String?) throws(HandlerError)
        -> [PlannedPosting]
    {
        let m = ledgerName(event.merchantID)
        let a = event.amount.value
        let fee = event.fee?.value ?? 0
        let minusA = try CheckedMoney.negate(a)
        let minusFee = try CheckedMoney.negate(fee, "fee")
        let provider = event.source.provider
        let clearing = chart.clearing(merchant: m, provider: provider)
        let fees = chart.paymentFees(merchant: m)
        let namesInvoice = !(event.invoiceID ?? "").isEmpty
        var out: [PlannedPosting]
        switch event.type {
        case .invoiceIssued:
            out = [PlannedPosting(receivable, a), PlannedPosting(chart.sales(merchant: m), minusA)]
        case .paymentSucceeded:
            out = [PlannedPosting(clearing, try CheckedMoney.subtract(a, fee)), PlannedPosting(fees, fee)]
            out.append(PlannedPosting(namesInvoice ? receivable : chart.sales(merchant: m), minusA))
        case .paymentRefunded:
            out = [
                PlannedPosting(namesInvoice ? receivable : chart.refunds(merchant: m), a),
                PlannedPosting(clearing, minusA),
            ]
        case .paymentDisputed:
            out = [
                PlannedPosting(chart.disputes(merchant: m), a), PlannedPosting(fees, fee),
                PlannedPosting(clearing, try CheckedMoney.negate(try CheckedMoney.add(a, fee, "amount + fee"))),
            ]
        case .disputeClosed:
            guard event.metadata["outcome"] == "won" else { return [] }
            // A won dispute returns its fee only when the provider's event says so: ingest
            // carries a returned fee as the event's `fee`.
            out = [
                PlannedPosting(clearing, try CheckedMoney.add(a, fee, "amount + fee")),
                PlannedPosting(chart.disputes(merchant: m), minusA), PlannedPosting(fees, minusFee),
            ]
        case .payoutPaid:
            out = [PlannedPosting(chart.bank(merchant: m), a), PlannedPosting(clearing, minusA)]
        case .refundFailed:
            // The refund's money comes back to clearing; the refund's debit is undone.
            let target = reversalTarget ?? (namesInvoice ? receivable : chart.refunds(merchant: m))
            out = [PlannedPosting(clearing, a), PlannedPosting(target, minusA)]
        case .paymentReversed:
            // The payment's credit is undone; clearing gives back what it received, the fee
            // comes back.
            let target = reversalTarget ?? (namesInvoice ? receivable : chart.sales(merchant: m))
            out = [
                PlannedPosting(target, a),
                PlannedPosting(clearing, try CheckedMoney.negate(try CheckedMoney.subtract(a, fee))),
                PlannedPosting(fees, minusFee),
            ]
        case .payoutFailed:
            out = [PlannedPosting(clearing, a), PlannedPosting(chart.bank(merchant: m), minusA)]
        case .feeAssessed:
            // The event's amount is the fee; a zero fee has nothing to book.
            guard a != 0 else { return [] }
            out = [PlannedPosting(fees, a), PlannedPosting(clearing, minusA)]
        case .paymentFailed, .settlementDayClosed:
            return []
        }
        // A zero fee adds nothing; the event's own legs stay even when zero, so every event
        // that posts has a transaction.
        return out.filter { !($0.account == fees && $0.amount == 0 && event.type != .feeAssessed) }
    }

    /// Whether this event's postings depend on who the customer is.
    func needsCustomer(_ event: PaymentEvent) -> Bool {
        switch event.type {
        case .invoiceIssued: return true
        case .paymentSucceeded, .paymentRefunded, .refundFailed, .paymentReversed:
            return !(event.invoiceID ?? "").isEmpty
        default: return false
        }
    }

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> NoEffect? {
        do {
            try book(event, db: db)
        } catch let e as SQLiteError where CheckedMoney.isOverflow(e) {
            throw HandlerError.permanent("AmountOverflow", e.message)
        }
        return nil
    }

    func book(_ event: PaymentEvent, db: SQLiteConnection) throws {
        // The event id is the idempotency key (the runtime dedupes too; this guards direct use).
        if try db.queryOne("SELECT 1 FROM ledger_events WHERE event_id = ?", [.text(event.id)]) != nil { return }

        let day = businessDay(event)
        let merchantID = event.merchantID
        let ownCustomer = event.customer?.id.flatMap { $0.isEmpty ? nil : $0 }
        let paymentID = event.payment?.id.flatMap { $0.isEmpty ? nil : $0 }
        let invoiceID = event.invoiceID.flatMap { $0.isEmpty ? nil : $0 }

        var customer = ownCustomer
        if customer == nil, needsCustomer(event) {
            customer = try linkedCustomer(db, merchantID: merchantID, paymentID: paymentID, invoiceID: invoiceID)
        }
        var reversal: ReversalTarget?
        if case let (kind, ref)? = Self.reversalRef(event) {
            reversal = try reversalTarget(db, event: event, kind: kind, ref: ref, customer: customer)
        }
        let planned = try postings(
            for: event, receivable: try receivableAccount(db, merchantID: merchantID, customer),
            reversalTarget: reversal?.account)
        var txid: String?
        if !planned.isEmpty {
            let id = event.id
            try post(
                db, txid: id, eventID: event.id, eventType: event.type.rawValue, kind: "event", merchantID: merchantID,
                date: day, description: describe(event), currency: event.amount.currency.code, postings: planned)
            txid = id
            let unknownAccount = chart.receivable(merchant: ledgerName(merchantID), segment: unknownCustomer)
            // The receivable legs on the unknown customer wait for a link to the customer.
            var waiting: (payment: String?, invoice: String?)?
            if let reversal {
                waiting = reversal.waitingOn
            } else if customer == nil, needsCustomer(event) {
                waiting = (paymentID, invoiceID)
            }
            if let waiting {
                for p in planned where p.account == unknownAccount {
                    try db.execute(
                        """
                        INSERT INTO unresolved_receivables (txid, account, merchant_id, payment_id, invoice_id, currency, amount)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                        [.text(id), .text(p.account), .text(merchantID), SQLValue(waiting.payment),
                         SQLValue(waiting.invoice), .text(event.amount.currency.code), .int(p.amount)])
                }
            }
            if let reversal, case let (kind, ref)? = Self.reversalRef(event),
                let leg = planned.first(where: { $0.account == reversal.account })
            {
                try db.execute(
                    """
                    INSERT INTO reversals (event_id, merchant_id, kind, ref, txid, account, currency, amount, matched)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    [.text(event.id), .text(merchantID), .text(kind), .text(ref), .text(id), .text(leg.account),
                     .text(event.amount.currency.code), .int(leg.amount), .int(reversal.matched ? 1 : 0)])
            }
        }
        let outcome: String
        if txid != nil {
            outcome = "posted"
        } else {
            outcome = event.type == .disputeClosed ? "recorded:dispute-lost" : "recorded"
        }
        try db.execute(
            """
            INSERT INTO ledger_events (event_id, type, merchant_id, provider, payment_id, customer_id, invoice_id,
                currency, amount, fee, occurred_at, business_day, txid, outcome)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.id), .text(event.type.rawValue), .text(merchantID), .text(event.source.provider),
             SQLValue(paymentID), SQLValue(ownCustomer), SQLValue(invoiceID), .text(event.amount.currency.code),
             .int(event.amount.value), SQLValue(event.fee?.value), .text(RFC3339.format(event.occurredAt)), .text(day),
             SQLValue(txid), .text(outcome)])

        // What this event teaches about customers, and the earlier receivables it resolves.
        if let ownCustomer {
            if let paymentID {
                try learn(db, event: event, day: day, kind: "payment", ref: paymentID, customer: ownCustomer)
            }
            if let invoiceID {
                try learn(db, event: event, day: day, kind: "invoice", ref: invoiceID, customer: ownCustomer)
            }
        }
        // An original: remember its account, and move reversals that came first onto it.
        if let txid {
            try recordOriginal(db, event: event, day: day, txid: txid, customer: customer, planned: planned)
        }
    }

    // MARK: Reversals

    /// Where a reversal's undoing leg goes, and whether that is its original's account.
    struct ReversalTarget {
        var account: String
        var matched: Bool
        /// Set when `account` is the unknown customer's receivable: the payment / invoice whose
        /// link to a customer will reclassify it.
        var waitingOn: (payment: String?, invoice: String?)?
    }

    /// The original a reversal names: a refund by `metadata.refund_id`, a payment by `payment.id`.
    static func reversalRef(_ event: PaymentEvent) -> (String, String)? {
        switch event.type {
        case .refundFailed: return event.metadata["refund_id"].flatMap { $0.isEmpty ? nil : ("refund", $0) }
        case .paymentReversed: return event.payment?.id.flatMap { $0.isEmpty ? nil : ("payment", $0) }
        default: return nil
        }
    }

    /// The account an original is known to have used, as recorded in `booked_originals`.
    struct Original {
        var account: String
        var role: String
        var customerID: String?
        var paymentID: String?
        var invoiceID: String?
    }

    func original(_ db: SQLiteConnection, merchantID: String, kind: String, ref: String) throws -> Original? {
        guard
            let r = try db.queryOne(
                """
                SELECT account, role, customer_id, payment_id, invoice_id FROM booked_originals
                WHERE merchant_id = ? AND kind = ? AND ref = ?
                """, [.text(merchantID), .text(kind), .text(ref)]),
            let account = r.string(0), let role = r.string(1)
        else { return nil }
        return Original(
            account: account, role: role, customerID: r.string(2), paymentID: r.string(3), invoiceID: r.string(4))
    }

    /// The account that undoes `o` now: a receivable follows its customer once a link names
    /// it (the original may have been booked on the unknown customer and reclassified since).
    func target(of o: Original, db: SQLiteConnection, merchantID: String) throws -> ReversalTarget {
        guard o.role == "receivable" else { return ReversalTarget(account: o.account, matched: true) }
        let customer =
            try o.customerID
            ?? linkedCustomer(db, merchantID: merchantID, paymentID: o.paymentID, invoiceID: o.invoiceID)
        let account = try receivableAccount(db, merchantID: merchantID, customer)
        if customer != nil { return ReversalTarget(account: account, matched: true) }
        return ReversalTarget(account: account, matched: true, waitingOn: (o.paymentID, o.invoiceID))
    }

    func reversalTarget(_ db: SQLiteConnection, event: PaymentEvent, kind: String, ref: String, customer: String?)
        throws -> ReversalTarget
    {
        if let o = try original(db, merchantID: event.merchantID, kind: kind, ref: ref) {
            return try target(of: o, db: db, merchantID: event.merchantID)
        }
        // The original is not here yet: book on what the reversal's own facts name.
        let m = ledgerName(event.merchantID)
        guard let invoiceID = event.invoiceID, !invoiceID.isEmpty else {
            let account = event.type == .refundFailed ? chart.refunds(merchant: m) : chart.sales(merchant: m)
            return ReversalTarget(account: account, matched: false)
        }
        let account = try receivableAccount(db, merchantID: event.merchantID, customer)
        if customer != nil { return ReversalTarget(account: account, matched: false) }
        return ReversalTarget(account: account, matched: false, waitingOn: (event.payment?.id, invoiceID))
    }

    /// Records what a payment credited / a refund debited, then matches the reversals that
    /// arrived before it.
    func recordOriginal(
        _ db: SQLiteConnection, event: PaymentEvent, day: String, txid: String, customer: String?,
        planned: [PlannedPosting]
    ) throws {
        let kind: String
        let ref: String
        let leg: PlannedPosting?
        let namesInvoice = !(event.invoiceID ?? "").isEmpty
        let m = ledgerName(event.merchantID)
        switch event.type {
        case .paymentSucceeded:
            guard let p = event.payment?.id, !p.isEmpty else { return }
            kind = "payment"
            ref = p
            let account = namesInvoice
                ? try receivableAccount(db, merchantID: event.merchantID, customer) : chart.sales(merchant: m)
            leg = planned.last { $0.account == account }
        case .paymentRefunded:
            guard let r = event.metadata["refund_id"], !r.isEmpty else { return }
            kind = "refund"
            ref = r
            let account = namesInvoice
                ? try receivableAccount(db, merchantID: event.merchantID, customer) : chart.refunds(merchant: m)
            leg = planned.first { $0.account == account }
        default:
            return
        }
        guard let leg else { return }
        let role = namesInvoice ? "receivable" : (kind == "payment" ? "sales" : "refunds")
        let inserted = try db.execute(
            """
            INSERT OR IGNORE INTO booked_originals (merchant_id, kind, ref, event_id, txid, account, role, customer_id,
                payment_id, invoice_id, currency, amount)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.merchantID), .text(kind), .text(ref), .text(event.id), .text(txid), .text(leg.account),
             .text(role), SQLValue(customer), SQLValue(event.payment?.id), SQLValue(event.invoiceID),
             .text(event.amount.currency.code), .int(leg.amount)])
        guard inserted == 1, let o = try original(db, merchantID: event.merchantID, kind: kind, ref: ref) else {
            return
        }
        let waiting = try db.query(
            """
            SELECT event_id, txid, account, currency, amount FROM reversals
            WHERE merchant_id = ? AND kind = ? AND ref = ? AND matched = 0 ORDER BY event_id
            """, [.text(event.merchantID), .text(kind), .text(ref)])
        for r in waiting {
            guard let revID = r.string(0), let revTx = r.string(1), let from = r.string(2), let currency = r.string(3),
                let amount = r.int(4)
            else { continue }
            let t = try target(of: o, db: db, merchantID: event.merchantID)
            guard t.account != from else {
                try db.execute("UPDATE reversals SET matched = 1 WHERE event_id = ?", [.text(revID)])
                continue
            }
            let matchTx = revTx + "/match"
            try post(
                db, txid: matchTx, eventID: event.id, eventType: event.type.rawValue, kind: "reclass",
                merchantID: event.merchantID, date: day,
                description: Self.safeText("match \(revTx) to \(kind) \(ref)"), currency: currency,
                postings: [PlannedPosting(t.account, amount), PlannedPosting(from, try CheckedMoney.negate(amount))])
            // A leg that waited on the unknown customer has moved: it no longer waits there.
            try db.execute(
                """
                UPDATE unresolved_receivables SET resolved_txid = ?
                WHERE txid = ? AND account = ? AND currency = ? AND resolved_txid IS NULL
                """, [.text(matchTx), .text(revTx), .text(from), .text(currency)])
            if let w = t.waitingOn {
                try db.execute(
                    """
                    INSERT INTO unresolved_receivables (txid, account, merchant_id, payment_id, invoice_id, currency, amount)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                    [.text(matchTx), .text(t.account), .text(event.merchantID), SQLValue(w.payment),
                     SQLValue(w.invoice), .text(currency), .int(amount)])
            }
            try db.execute(
                "UPDATE reversals SET matched = 1, account = ?, match_txid = ? WHERE event_id = ?",
                [.text(t.account), .text(matchTx), .text(revID)])
        }
    }

    func linkedCustomer(_ db: SQLiteConnection, merchantID: String, paymentID: String?, invoiceID: String?) throws
        -> String?
    {
        if let paymentID,
            let r = try db.queryOne(
                "SELECT customer_id FROM customer_links WHERE merchant_id = ? AND kind = 'payment' AND ref = ?",
                [.text(merchantID), .text(paymentID)])
        {
            return r.string(0)
        }
        if let invoiceID,
            let r = try db.queryOne(
                "SELECT customer_id FROM customer_links WHERE merchant_id = ? AND kind = 'invoice' AND ref = ?",
                [.text(merchantID), .text(invoiceID)])
        {
            return r.string(0)
        }
        return nil
    }

    /// Records a payment/invoice → customer link (the first one wins) and reclassifies every
    /// receivable that was waiting for it.
    func learn(_ db: SQLiteConnection, event: PaymentEvent, day: String, kind: String, ref: String, customer: String)
        throws
    {
        let merchantID = event.merchantID
        let inserted = try db.execute(
            "INSERT OR IGNORE INTO customer_links (merchant_id, kind, ref, customer_id) VALUES (?, ?, ?, ?)",
            [.text(merchantID), .text(kind), .text(ref), .text(customer)])
        // A receivable waits only while neither of its links is known (otherwise `apply` found
        // the customer), so only a link learned just now can resolve one.
        guard inserted == 1 else { return }
        let linked = customer
        let column = kind == "payment" ? "payment_id" : "invoice_id"
        let waiting = try db.query(
            """
            SELECT txid, account, currency, amount FROM unresolved_receivables
            WHERE merchant_id = ? AND \(column) = ? AND resolved_txid IS NULL ORDER BY txid
            """,
            [.text(merchantID), .text(ref)])
        for row in waiting {
            guard let original = row.string(0), let from = row.string(1), let currency = row.string(2),
                let amount = row.int(3)
            else { continue }
            let to = try receivableAccount(db, merchantID: merchantID, linked)
            let txid = original + "/reclass"
            try post(
                db, txid: txid, eventID: event.id, eventType: event.type.rawValue, kind: "reclass",
                merchantID: merchantID, date: day,
                description: Self.safeText("reclass \(original) to customer \(linked)"), currency: currency,
                postings: [PlannedPosting(to, amount), PlannedPosting(from, try CheckedMoney.negate(amount))])
            try db.execute(
                "UPDATE unresolved_receivables SET resolved_txid = ? WHERE txid = ? AND account = ? AND currency = ?",
                [.text(txid), .text(original), .text(from), .text(currency)])
            // A reversal's leg that was there is now on the customer's receivable.
            try db.execute(
                "UPDATE reversals SET account = ? WHERE (txid = ? OR match_txid = ?) AND account = ? AND currency = ?",
                [.text(to), .text(original), .text(original), .text(from), .text(currency)])
        }
    }

    /// Inserts a transaction, its postings and its check row (which the database refuses unless
    /// the postings balance).
    func post(
        _ db: SQLiteConnection, txid: String, eventID: String, eventType: String, kind: String, merchantID: String,
        date: String, description: String, currency: String, postings: [PlannedPosting]
    ) throws {
        try db.execute(
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(txid), .text(eventID), .text(eventType), .text(kind), .text(merchantID), .text(date),
             .text(description)])
        for p in postings {
            try db.execute(
                "INSERT INTO postings (txid, account, currency, amount) VALUES (?, ?, ?, ?)",
                [.text(txid), .text(p.account), .text(currency), .int(p.amount)])
        }
        try db.execute(
            "INSERT INTO transaction_checks (txid, postings) VALUES (?, ?)", [.text(txid), .int(Int64(postings.count))])
    }

    static let safePunctuation = Set(" _.:/#-+@".utf8)

    /// A short payee/narration: type and references, never customer names or card data.
    func describe(_ event: PaymentEvent) -> String {
        var parts = [event.type.rawValue]
        if let p = event.payment?.id, !p.isEmpty { parts.append(p) }
        if let i = event.invoiceID, !i.isEmpty { parts.append("invoice \(i)") }
        if event.type == .disputeClosed, let o = event.metadata["outcome"] { parts.append(o) }
        if event.type == .refundFailed, let r = event.metadata["refund_id"] { parts.append("refund \(r)") }
        if event.type == .payoutFailed, let p = event.metadata["payout_id"] { parts.append("payout \(p)") }
        return Self.safeText(parts.joined(separator: " "))
    }

    /// Keeps text that every export format can quote without escaping.
    static func safeText(_ s: String) -> String {
        // ASCII without CR (where a Character is a byte): the same mapping on the bytes.
        if s.utf8.allSatisfy({ $0 < 0x80 && $0 != UInt8(ascii: "\r") }) {
            return String(decoding: s.utf8.prefix(200).map { b -> UInt8 in
                return b.isASCIIAlphanumeric || Self.safePunctuation.contains(b) ? b : UInt8(ascii: "_")
            }, as: UTF8.self)
        }
        return String(s.prefix(200).map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || " _.:/#-+@".contains(c)) ? c : "_"
        })
    }
}
