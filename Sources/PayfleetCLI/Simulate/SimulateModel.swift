import Foundation
import PayfleetCore

/// What the fleet should show after a simulated run, computed from the canonical facts the
/// simulator sent (DESIGN §5a), independently of the workers' code: ledger postings per
/// account, each customer's CRM figures, the receipts due and the settlement totals.
public struct SimExpectation: Sendable, Equatable {
    public struct AccountKey: Hashable, Sendable, Comparable {
        public var account: String
        public var currency: String
        public init(_ account: String, _ currency: String) {
            self.account = account
            self.currency = currency
        }
        public static func < (a: Self, b: Self) -> Bool { (a.account, a.currency) < (b.account, b.currency) }
    }

    public struct CustomerKey: Hashable, Sendable, Comparable {
        public var customer: String
        public var merchant: String
        public var currency: String
        public init(customer: String, merchant: String, currency: String) {
            self.customer = customer
            self.merchant = merchant
            self.currency = currency
        }
        public static func < (a: Self, b: Self) -> Bool {
            (a.customer, a.merchant, a.currency) < (b.customer, b.merchant, b.currency)
        }
    }

    /// A customer's figures in one currency (crm-sync's `crm_file` line).
    public struct CustomerFigures: Hashable, Sendable {
        public var outstanding: Int64 = 0
        public var paid: Int64 = 0
        public var refunded: Int64 = 0
        public var disputed: Int64 = 0
        public init(outstanding: Int64 = 0, paid: Int64 = 0, refunded: Int64 = 0, disputed: Int64 = 0) {
            self.outstanding = outstanding
            self.paid = paid
            self.refunded = refunded
            self.disputed = disputed
        }
    }

    public struct DayKey: Hashable, Sendable, Comparable {
        public var merchant: String
        public var currency: String
        public var date: String
        public init(merchant: String, currency: String, date: String) {
            self.merchant = merchant
            self.currency = currency
            self.date = date
        }
        public static func < (a: Self, b: Self) -> Bool {
            (a.merchant, a.currency, a.date) < (b.merchant, b.currency, b.date)
        }
    }

    /// Settlement totals of one merchant, currency and business day.
    public struct DayTotals: Hashable, Sendable {
        public var count: Int64 = 0
        public var gross: Int64 = 0
        public var refunds: Int64 = 0
        public var disputes: Int64 = 0
        public var fees: Int64 = 0
        public var net: Int64 { gross - refunds - disputes - fees }
        public init(count: Int64 = 0, gross: Int64 = 0, refunds: Int64 = 0, disputes: Int64 = 0, fees: Int64 = 0) {
            self.count = count
            self.gross = gross
            self.refunds = refunds
            self.disputes = disputes
            self.fees = fees
        }
        public static func + (a: Self, b: Self) -> Self {
            .init(count: a.count + b.count, gross: a.gross + b.gross, refunds: a.refunds + b.refunds,
                  disputes: a.disputes + b.disputes, fees: a.fees + b.fees)
        }
        public static func - (a: Self, b: Self) -> Self {
            .init(count: a.count - b.count, gross: a.gross - b.gross, refunds: a.refunds - b.refunds,
                  disputes: a.disputes - b.disputes, fees: a.fees - b.fees)
        }
    }

    /// Change of each ledger account (zero changes omitted), debit positive.
    public var ledger: [AccountKey: Int64] = [:]
    /// Sum of the changes per merchant id and currency: zero when every transaction balances.
    public var trialBalance: [String: [String: Int64]] = [:]
    /// Each customer's figures per merchant and currency.
    public var customers: [CustomerKey: CustomerFigures] = [:]
    /// Canonical ids of the events that owe an email receipt.
    public var receipts: Set<String> = []
    /// Settlement totals per merchant / currency / business day.
    public var settlement: [DayKey: DayTotals] = [:]

    public init() {}

    /// Computes the expectation from unique canonical facts (any order: the result is a sum).
    public static func compute(facts: [PaymentEvent], merchants: [Merchant]) -> SimExpectation {
        var x = SimExpectation()
        let byID = Dictionary(merchants.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // Who paid: payment id → customer id (per merchant), for refunds and disputes that
        // name only the payment.
        var payer: [String: String] = [:]
        for f in facts where f.type == .paymentSucceeded || f.type == .paymentFailed {
            if let p = f.payment?.id, let c = f.customer?.id { payer["\(f.merchantID)|\(p)"] = c }
        }
        var invoicee: [String: String] = [:]
        for f in facts where f.type == .invoiceIssued {
            if let i = f.invoiceID, let c = f.customer?.id { invoicee["\(f.merchantID)|\(i)"] = c }
        }
        // What a reversal undoes: the payment it names (did it name an invoice? which business
        // day?) and the refund it names (did that refund name an invoice?).
        var payments: [String: PaymentEvent] = [:]
        var refunds: [String: PaymentEvent] = [:]
        for f in facts {
            if f.type == .paymentSucceeded, let p = f.payment?.id { payments["\(f.merchantID)|\(p)"] = f }
            if f.type == .paymentRefunded, let r = f.metadata["refund_id"] { refunds["\(f.merchantID)|\(r)"] = f }
        }
        func hasInvoice(_ f: PaymentEvent?) -> Bool { !(f?.invoiceID ?? "").isEmpty }
        func customer(_ f: PaymentEvent) -> String? {
            if let c = f.customer?.id, !c.isEmpty { return c }
            if let p = f.payment?.id, let c = payer["\(f.merchantID)|\(p)"] { return c }
            if let i = f.invoiceID, let c = invoicee["\(f.merchantID)|\(i)"] { return c }
            return nil
        }
        for f in facts {
            let merchant = byID[f.merchantID] ?? Merchant(id: f.merchantID)
            let m = Merchant.accountSegment(merchant.ledgerName)
            let cur = f.amount.currency.code
            let a = f.amount.value
            let fee = f.fee?.value ?? 0
            let p = Merchant.accountSegment(f.source.provider)
            let cust = customer(f)
            let receivable = "Assets:\(m):Receivable:\(Merchant.accountSegment(cust ?? "Unidentified"))"
            let clearing = "Assets:\(m):Clearing:\(p)"
            let namesInvoice = !(f.invoiceID ?? "").isEmpty
            var postings: [(String, Int64)] = []
            var day = DayTotals()
            var dayOf = f.occurredAt
            var figures = CustomerFigures()
            switch f.type {
            case .invoiceIssued:
                postings = [(receivable, a), ("Income:\(m):Sales", -a)]
                figures.outstanding = a
            case .paymentSucceeded:
                postings = [(clearing, a - fee), ("Expenses:\(m):PaymentFees", fee),
                            (namesInvoice ? receivable : "Income:\(m):Sales", -a)]
                day = DayTotals(count: 1, gross: a, fees: fee)
                figures.paid = a
                if namesInvoice { figures.outstanding = -a }
                if f.customer?.email?.isEmpty == false { x.receipts.insert(f.id) }
            case .paymentRefunded:
                postings = [(namesInvoice ? receivable : "Income:\(m):Refunds", a), (clearing, -a)]
                day = DayTotals(refunds: a)
                figures.refunded = a
                if namesInvoice { figures.outstanding = a }
                if f.customer?.email?.isEmpty == false { x.receipts.insert(f.id) }
            case .paymentDisputed:
                postings = [("Expenses:\(m):Disputes", a), ("Expenses:\(m):PaymentFees", fee), (clearing, -(a + fee))]
                day = DayTotals(disputes: a, fees: fee)
                figures.disputed = a
            case .disputeClosed:
                if f.metadata["outcome"] == "won" {
                    postings = [(clearing, a + fee), ("Expenses:\(m):Disputes", -a), ("Expenses:\(m):PaymentFees", -fee)]
                    day = DayTotals(disputes: -a, fees: -fee)
                    figures.disputed = -a
                }
            case .payoutPaid:
                postings = [("Assets:\(m):Bank", a), (clearing, -a)]
            case .refundFailed:
                // Undoes the refund: credits what it debited, on the day the failure arrives.
                let refund = f.metadata["refund_id"].flatMap { refunds["\(f.merchantID)|\($0)"] }
                let toReceivable = refund.map { hasInvoice($0) } ?? namesInvoice
                postings = [(clearing, a), (toReceivable ? receivable : "Income:\(m):Refunds", -a)]
                day = DayTotals(refunds: -a)
                figures.refunded = -a
                if toReceivable { figures.outstanding = -a }
            case .paymentReversed:
                // Undoes the success: debits what it credited, on the day the reversal arrives.
                let payment = f.payment?.id.flatMap { payments["\(f.merchantID)|\($0)"] }
                let fromReceivable = payment.map { hasInvoice($0) } ?? namesInvoice
                postings = [(fromReceivable ? receivable : "Income:\(m):Sales", a), (clearing, -(a - fee)),
                            ("Expenses:\(m):PaymentFees", -fee)]
                // and returns its fee (F), as the ledger does.
                day = DayTotals(count: -1, gross: -a, fees: -fee)
                figures.paid = -a
                if fromReceivable { figures.outstanding = a }
            case .payoutFailed:
                postings = [(clearing, a), ("Assets:\(m):Bank", -a)]
            case .feeAssessed:
                // A fee learnt late counts on the business day of the payment it names.
                postings = [("Expenses:\(m):PaymentFees", a), (clearing, -a)]
                day = DayTotals(fees: a)
                if let p = f.payment?.id, let payment = payments["\(f.merchantID)|\(p)"] { dayOf = payment.occurredAt }
            case .paymentFailed, .settlementDayClosed:
                break
            }
            for (account, v) in postings where v != 0 {
                x.ledger[AccountKey(account, cur), default: 0] += v
                x.trialBalance[f.merchantID, default: [:]][cur, default: 0] += v
            }
            if day != DayTotals() {
                let key = DayKey(merchant: f.merchantID, currency: cur, date: merchant.businessDay(for: dayOf))
                x.settlement[key, default: .init()] = x.settlement[key, default: .init()] + day
            }
            // crm-sync does not consume payouts and late fees.
            if let cust, ![.payoutPaid, .payoutFailed, .feeAssessed, .settlementDayClosed].contains(f.type) {
                let k = CustomerKey(customer: cust, merchant: f.merchantID, currency: cur)
                var c = x.customers[k, default: .init()]
                c.outstanding += figures.outstanding
                c.paid += figures.paid
                c.refunded += figures.refunded
                c.disputed += figures.disputed
                x.customers[k] = c
            }
        }
        x.ledger = x.ledger.filter { $0.value != 0 }
        return x
    }
}
