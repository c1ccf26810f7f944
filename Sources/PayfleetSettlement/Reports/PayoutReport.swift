import Foundation
import PayfleetCore
import PayfleetWorker

/// One line of a provider's payout report as it moves the provider balance: a Stripe balance
/// transaction of the itemized payout reconciliation report, or a line of an Adyen Settlement
/// Details Report batch. Amounts are exact minor units of `currency`, signed as they move the
/// balance (`net` > 0 adds to it); `fee` is what the provider charged (> 0) or returned (< 0).
public struct BalanceLine: Sendable, Equatable {
    /// An Adyen fee column of one line: `commission`, `markup`, `scheme_fees`, `interchange`.
    public struct FeePart: Sendable, Equatable {
        public var kind: String
        public var amount: Int64
        public init(kind: String, amount: Int64) {
            self.kind = kind
            self.amount = amount
        }
    }

    public var line: Int
    /// Stripe `balance_transaction_id`; Adyen `Modification Reference` (else `Psp Reference`).
    public var id: String
    /// Stripe `reporting_category`; Adyen `Type`.
    public var category: String
    /// The canonical event kind this line stands for, nil for lines no event reports (fees the
    /// provider books by itself, payouts, adjustments).
    public var kind: ReconcileKind?
    /// The payment it belongs to (Stripe `payment_intent_id`, else `charge_id`, else `source_id`;
    /// Adyen `Psp Reference`).
    public var reference: String?
    public var merchantAccount: String?
    public var currency: String
    public var gross: Int64
    public var fee: Int64
    public var net: Int64
    public var feeParts: [FeePart]
    /// The payout that settles the line: Stripe `automatic_payout_id`; Adyen `Batch Number`.
    public var payout: String?
    /// Day (YYYY-MM-DD, the report's time zone) the payout is effective: Stripe
    /// `automatic_payout_effective_at`; Adyen the batch's `MerchantPayout` line. nil: not paid out yet.
    public var payoutDate: String?
    /// This line is the payout itself (Stripe `payout`, Adyen `MerchantPayout`): `-net` is its amount.
    public var isPayout: Bool
    /// Creation day (YYYY-MM-DD) of the line.
    public var created: String

    public init(
        line: Int, id: String, category: String, kind: ReconcileKind?, reference: String?, merchantAccount: String? = nil,
        currency: String, gross: Int64, fee: Int64, net: Int64, feeParts: [FeePart] = [], payout: String?,
        payoutDate: String?, isPayout: Bool = false, created: String
    ) {
        self.line = line
        self.id = id
        self.category = category
        self.kind = kind
        self.reference = reference
        self.merchantAccount = merchantAccount
        self.currency = currency
        self.gross = gross
        self.fee = fee
        self.net = net
        self.feeParts = feeParts
        self.payout = payout
        self.payoutDate = payoutDate
        self.isPayout = isPayout
        self.created = created
    }

    /// Paid out on or before `date`.
    public func paid(by date: String) -> Bool { payoutDate.map { $0 <= date } ?? false }
}

/// Parsers of the providers' payout reports into balance lines, by their documented columns.
public enum PayoutReport {
    /// Stripe's itemized payout reconciliation report (`payout_reconciliation.itemized.*`; the
    /// ending balance reconciliation report has the same columns for lines not paid out yet):
    /// `balance_transaction_id`, `currency`, `gross`, `fee`, `net` (major units, `net = gross −
    /// fee`), `reporting_category`, `automatic_payout_id`, `automatic_payout_effective_at`
    /// (`YYYY-MM-DD HH:MM:SS`, else `_utc`), `created` (else `created_utc`), and the payment as
    /// `payment_intent_id`, `charge_id` or `source_id`. A `payout` category line (the balance
    /// change report) is the payout itself, named by `source_id`.
    public static func stripe(_ text: String) throws -> [BalanceLine] {
        let rows = try CSV.parse(text)
        guard let header = rows.first else { throw SettlementError("stripe file: empty") }
        let col = try ProviderFile.columns(
            header, required: ["balance_transaction_id", "currency", "gross", "fee", "net", "reporting_category"],
            file: "stripe")
        var out: [BalanceLine] = []
        for (n, r) in rows.dropFirst().enumerated() {
            let lineNo = n + 2
            func v(_ name: String) -> String {
                col[name].flatMap { $0 < r.count ? r[$0] : nil }?.trimmingCharacters(in: .whitespaces) ?? ""
            }
            let category = v("reporting_category")
            let code = v("currency").uppercased()
            guard let currency = Currency(code: code) else {
                throw SettlementError("stripe file line \(lineNo): currency '\(v("currency"))' is not an ISO 4217 code")
            }
            let id = v("balance_transaction_id")
            guard !id.isEmpty else { throw SettlementError("stripe file line \(lineNo): balance_transaction_id is empty") }
            let gross = try ProviderFile.money(v("gross"), currency, line: lineNo, column: "gross", file: "stripe")
            let fee = try ProviderFile.money(v("fee"), currency, line: lineNo, column: "fee", file: "stripe")
            let net = try ProviderFile.money(v("net"), currency, line: lineNo, column: "net", file: "stripe")
            let (expected, overflow) = gross.subtractingReportingOverflow(fee)
            guard !overflow, expected == net else {
                throw SettlementError("stripe file line \(lineNo): net \(v("net")) is not gross \(v("gross")) − fee \(v("fee"))")
            }
            let kind: ReconcileKind?
            switch category {
            case "charge": kind = .payment
            case "refund": kind = .refund
            case "dispute": kind = .dispute
            case "dispute_reversal": kind = .disputeReversal
            default: kind = nil
            }
            let reference = ["payment_intent_id", "charge_id", "source_id"].lazy.map(v).first { !$0.isEmpty }
            let created = try day(v("created").isEmpty ? v("created_utc") : v("created"), line: lineNo, column: "created", file: "stripe")
            let isPayout = category == "payout"
            var payout = v("automatic_payout_id").isEmpty ? nil : v("automatic_payout_id")
            let effective = v("automatic_payout_effective_at").isEmpty ? v("automatic_payout_effective_at_utc") : v("automatic_payout_effective_at")
            var payoutDate = effective.isEmpty ? nil : try day(effective, line: lineNo, column: "automatic_payout_effective_at", file: "stripe")
            if isPayout {
                payout = reference
                payoutDate = created
                guard payout != nil else { throw SettlementError("stripe file line \(lineNo): a payout line without source_id") }
            }
            out.append(
                BalanceLine(
                    line: lineNo, id: id, category: category, kind: kind, reference: reference, currency: code, gross: gross,
                    fee: fee, net: net, payout: payout, payoutDate: payoutDate, isPayout: isPayout, created: created))
        }
        return out
    }

    /// Adyen's fee columns of the Settlement Details Report and the fee kinds they post as.
    public static let adyenFeeColumns: [(column: String, kind: String)] = [
        ("Commission (NC)", "commission"), ("Markup (NC)", "markup"), ("Scheme Fees (NC)", "scheme_fees"),
        ("Interchange (NC)", "interchange"),
    ]

    /// Adyen's Settlement Details Report (one or more batches): `Merchant Account`, `Psp
    /// Reference`, `Modification Reference`, `Creation Date`, `Type`, `Net Currency`, `Net Debit
    /// (NC)`, `Net Credit (NC)`, the fee columns in net currency, `Batch Number`. Event lines
    /// (`Settled`, `Refunded`, `Chargeback`, `ChargebackReversed`, and their `…Bulk` forms) are
    /// in net currency here; a batch's `MerchantPayout` line is its payout (`Net Debit`), and
    /// every line of a batch whose `MerchantPayout` is in the file is paid on that line's day.
    public static func adyen(_ text: String) throws -> [BalanceLine] {
        let rows = try CSV.parse(text)
        guard let header = rows.first else { throw SettlementError("adyen file: empty") }
        let col = try ProviderFile.columns(
            header,
            required: ["Psp Reference", "Type", "Creation Date", "Net Currency", "Net Debit (NC)", "Net Credit (NC)",
                       "Batch Number"],
            file: "adyen")
        var out: [BalanceLine] = []
        for (n, r) in rows.dropFirst().enumerated() {
            let lineNo = n + 2
            func v(_ name: String) -> String {
                col[name].flatMap { $0 < r.count ? r[$0] : nil }?.trimmingCharacters(in: .whitespaces) ?? ""
            }
            let type = v("Type")
            let code = v("Net Currency")
            guard let currency = Currency(code: code) else {
                throw SettlementError("adyen file line \(lineNo): Net Currency '\(code)' is not an ISO 4217 code")
            }
            let debit = try ProviderFile.money(v("Net Debit (NC)"), currency, line: lineNo, column: "Net Debit (NC)", file: "adyen")
            let credit = try ProviderFile.money(v("Net Credit (NC)"), currency, line: lineNo, column: "Net Credit (NC)", file: "adyen")
            let (net, overflow) = credit.subtractingReportingOverflow(debit)
            guard !overflow else { throw SettlementError("adyen file line \(lineNo): net does not fit in 64-bit minor units") }
            var parts: [BalanceLine.FeePart] = []
            var fee: Int64 = 0
            for (c, kind) in adyenFeeColumns where col[c] != nil {
                let a = try ProviderFile.money(v(c), currency, line: lineNo, column: c, file: "adyen")
                guard a != 0 else { continue }
                let (sum, o) = fee.addingReportingOverflow(a)
                guard !o else { throw SettlementError("adyen file line \(lineNo): fees do not fit in 64-bit minor units") }
                fee = sum
                parts.append(.init(kind: kind, amount: a))
            }
            let kind: ReconcileKind?
            switch type {
            case "Settled", "SettledBulk": kind = .payment
            case "Refunded", "RefundedBulk": kind = .refund
            case "Chargeback": kind = .dispute
            case "ChargebackReversed": kind = .disputeReversal
            default: kind = nil
            }
            let psp = v("Psp Reference")
            if kind != nil, psp.isEmpty { throw SettlementError("adyen file line \(lineNo): Psp Reference is empty") }
            let batch = v("Batch Number")
            guard !batch.isEmpty else { throw SettlementError("adyen file line \(lineNo): Batch Number is empty") }
            let created = try day(v("Creation Date"), line: lineNo, column: "Creation Date", file: "adyen")
            let modification = v("Modification Reference")
            let isPayout = type == "MerchantPayout"
            let (gross, o2) = net.addingReportingOverflow(fee)
            guard !o2 else { throw SettlementError("adyen file line \(lineNo): gross does not fit in 64-bit minor units") }
            out.append(
                BalanceLine(
                    line: lineNo, id: modification.isEmpty ? (psp.isEmpty ? "line \(lineNo)" : psp) : modification,
                    category: type, kind: kind, reference: psp.isEmpty ? nil : psp,
                    merchantAccount: v("Merchant Account").isEmpty ? nil : v("Merchant Account"), currency: code,
                    gross: gross, fee: fee, net: net, feeParts: parts, payout: batch, payoutDate: isPayout ? created : nil,
                    isPayout: isPayout, created: created))
        }
        // Every line of a batch whose payout is in the file is paid when the payout is.
        var paidOn: [String: String] = [:]
        for l in out where l.isPayout { paidOn["\(l.payout ?? "")/\(l.currency)"] = l.created }
        for i in out.indices where !out[i].isPayout {
            out[i].payoutDate = paidOn["\(out[i].payout ?? "")/\(out[i].currency)"]
        }
        return out
    }

    /// The day of `2026-11-20 10:15:31` / `2026-11-20T10:15:31Z` / `2026-11-20`.
    static func day(_ s: String, line: Int, column: String, file: String) throws -> String {
        let prefix = String(s.prefix(10))
        guard CalendarDay(prefix) != nil else {
            throw SettlementError("\(file) file line \(line): \(column) '\(s)' is not a date")
        }
        return prefix
    }
}
