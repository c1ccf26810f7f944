import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker

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
public struct LedgerHandler: WorkerHandler {
    public typealias Effect = NoEffect

    public let chart: ChartOfAccounts
    public let merchants: [String: Merchant]
    public let unknownCustomer: String
    let logger: Logger

    public init(
        chart: ChartOfAccounts = ChartOfAccounts(), merchants: [Merchant] = [], unknownCustomer: String = "Unidentified",
        logger: Logger = Logger(label: "payfleet.ledger-writer")
    ) {
        self.chart = chart
        var byID: [String: Merchant] = [:]
        for m in merchants { byID[m.id] = m }
        self.merchants = byID
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
        self.init(chart: chart, merchants: merchants, unknownCustomer: unknown, logger: logger)
    }

    public var migrations: [Migration] { LedgerSchema.migrations }

    /// The configured merchant, or (unknown merchant) one with UTC days and the default name.
    public func merchant(_ id: String) -> Merchant { merchants[id] ?? Merchant(id: id) }

    /// The `<Merchant>` account segment: the configured `ledger_name`, sanitized.
    public func ledgerName(_ merchantID: String) -> String { Merchant.accountSegment(merchant(merchantID).ledgerName) }

    public func businessDay(_ event: PaymentEvent) -> String { merchant(event.merchantID).businessDay(for: event.occurredAt) }

    /// The postings of DESIGN §5a for `event`, with the receivable (if any) on `customer`'s
    /// account (nil: the unknown customer). Empty for events that post nothing.
    public func postings(for event: PaymentEvent, customer: String?) -> [PlannedPosting] {
        let m = ledgerName(event.merchantID)
        let a = event.amount.value
        let fee = event.fee?.value ?? 0
        let provider = event.source.provider
        let receivable = chart.receivable(merchant: m, customer: customer ?? unknownCustomer)
        let clearing = chart.clearing(merchant: m, provider: provider)
        let namesInvoice = !(event.invoiceID ?? "").isEmpty
        var out: [PlannedPosting]
        switch event.type {
        case .invoiceIssued:
            out = [PlannedPosting(receivable, a), PlannedPosting(chart.sales(merchant: m), -a)]
        case .paymentSucceeded:
            out = [PlannedPosting(clearing, a - fee), PlannedPosting(chart.paymentFees(merchant: m), fee)]
            out.append(PlannedPosting(namesInvoice ? receivable : chart.sales(merchant: m), -a))
        case .paymentRefunded:
            out = [
                PlannedPosting(namesInvoice ? receivable : chart.refunds(merchant: m), a),
                PlannedPosting(clearing, -a),
            ]
        case .paymentDisputed:
            out = [
                PlannedPosting(chart.disputes(merchant: m), a), PlannedPosting(chart.paymentFees(merchant: m), fee),
                PlannedPosting(clearing, -(a + fee)),
            ]
        case .disputeClosed:
            guard event.metadata["outcome"] == "won" else { return [] }
            // A won dispute returns its fee only when the provider's event says so: ingest
            // carries a returned fee as the event's `fee`.
            out = [
                PlannedPosting(clearing, a + fee), PlannedPosting(chart.disputes(merchant: m), -a),
                PlannedPosting(chart.paymentFees(merchant: m), -fee),
            ]
        case .payoutPaid:
            out = [PlannedPosting(chart.bank(merchant: m), a), PlannedPosting(clearing, -a)]
        case .paymentFailed, .settlementDayClosed, .refundFailed, .paymentReversed, .payoutFailed, .feeAssessed:
            return []  // TODO(#14)
        }
        // A zero fee adds nothing; the event's own legs stay even when zero, so every event
        // that posts has a transaction.
        let feeAccount = chart.paymentFees(merchant: m)
        return out.filter { !($0.account == feeAccount && $0.amount == 0) }
    }

    /// Whether this event's postings depend on who the customer is.
    func needsCustomer(_ event: PaymentEvent) -> Bool {
        switch event.type {
        case .invoiceIssued: return true
        case .paymentSucceeded, .paymentRefunded: return !(event.invoiceID ?? "").isEmpty
        default: return false
        }
    }

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> NoEffect? {
        do { try event.validate() } catch { throw HandlerError.permanent("InvalidEvent", "\(error)") }
        // The event id is the idempotency key (the runtime dedupes too; this guards direct use).
        if try db.queryOne("SELECT 1 FROM ledger_events WHERE event_id = ?", [.text(event.id)]) != nil { return nil }

        let day = businessDay(event)
        let merchantID = event.merchantID
        let ownCustomer = event.customer?.id.flatMap { $0.isEmpty ? nil : $0 }
        let paymentID = event.payment?.id.flatMap { $0.isEmpty ? nil : $0 }
        let invoiceID = event.invoiceID.flatMap { $0.isEmpty ? nil : $0 }

        var customer = ownCustomer
        if customer == nil, needsCustomer(event) {
            customer = try linkedCustomer(db, merchantID: merchantID, paymentID: paymentID, invoiceID: invoiceID)
        }
        let planned = postings(for: event, customer: customer)
        var txid: String?
        if !planned.isEmpty {
            let id = event.id
            try post(
                db, txid: id, eventID: event.id, eventType: event.type.rawValue, kind: "event", merchantID: merchantID,
                date: day, description: describe(event), currency: event.amount.currency.code, postings: planned)
            txid = id
            if customer == nil, needsCustomer(event) {
                let unknownAccount = chart.receivable(merchant: ledgerName(merchantID), customer: unknownCustomer)
                for p in planned where p.account == unknownAccount {
                    try db.execute(
                        """
                        INSERT INTO unresolved_receivables (txid, account, merchant_id, payment_id, invoice_id, currency, amount)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                        [.text(id), .text(p.account), .text(merchantID), SQLValue(paymentID), SQLValue(invoiceID),
                         .text(event.amount.currency.code), .int(p.amount)])
                }
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
        return nil
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
            let to = chart.receivable(merchant: ledgerName(merchantID), customer: linked)
            let txid = original + "/reclass"
            try post(
                db, txid: txid, eventID: event.id, eventType: event.type.rawValue, kind: "reclass",
                merchantID: merchantID, date: day,
                description: Self.safeText("reclass \(original) to customer \(linked)"), currency: currency,
                postings: [PlannedPosting(to, amount), PlannedPosting(from, -amount)])
            try db.execute(
                "UPDATE unresolved_receivables SET resolved_txid = ? WHERE txid = ? AND account = ? AND currency = ?",
                [.text(txid), .text(original), .text(from), .text(currency)])
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

    /// A short payee/narration: type and references, never customer names or card data.
    func describe(_ event: PaymentEvent) -> String {
        var parts = [event.type.rawValue]
        if let p = event.payment?.id, !p.isEmpty { parts.append(p) }
        if let i = event.invoiceID, !i.isEmpty { parts.append("invoice \(i)") }
        if event.type == .disputeClosed, let o = event.metadata["outcome"] { parts.append(o) }
        return Self.safeText(parts.joined(separator: " "))
    }

    /// Keeps text that every export format can quote without escaping.
    static func safeText(_ s: String) -> String {
        String(s.prefix(200).map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || " _.:/#-+@".contains(c)) ? c : "_"
        })
    }
}
