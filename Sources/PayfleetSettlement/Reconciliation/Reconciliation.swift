import PayfleetWorker
import Foundation
import PayfleetCore

/// The settlement providers whose files `payfleet settlement reconcile` reads.
public enum SettlementProvider: String, CaseIterable, Sendable {
    case stripe, adyen
}

/// What a provider line or recorded event is, for matching.
public enum ReconcileKind: String, Sendable, Comparable {
    case payment, refund, dispute, disputeReversal = "dispute_reversal"
    public static func < (l: ReconcileKind, r: ReconcileKind) -> Bool { l.rawValue < r.rawValue }
}

/// One line of a provider file, amounts converted exactly to minor units (magnitudes).
public struct ProviderLine: Sendable, Equatable {
    public var line: Int
    public var kind: ReconcileKind
    public var reference: String
    public var currency: String
    public var amount: Int64
    /// Fee in minor units of `currency`; nil when the file states it in another currency.
    public var fee: Int64?

    public init(line: Int, kind: ReconcileKind, reference: String, currency: String, amount: Int64, fee: Int64?) {
        self.line = line
        self.kind = kind
        self.reference = reference
        self.currency = currency
        self.amount = amount
        self.fee = fee
    }
}

/// Parsers for the providers' settlement files, by their documented column names.
public enum ProviderFile {
    /// Stripe's payout reconciliation report, itemized (`payout_reconciliation.itemized.*`) or the
    /// balance change report: `currency` (lower-case ISO), `gross`, `fee` (decimal strings in
    /// major units; refunds and disputes negative), `reporting_category` (`charge`, `refund`,
    /// `dispute`, `dispute_reversal`; others such as `fee` or `payout` are not event lines), and
    /// the payment as `payment_intent_id`, else `charge_id`, else `source_id`.
    /// Returns the lines to match and how many lines were skipped as not events.
    public static func stripe(_ text: String) throws -> (lines: [ProviderLine], skipped: Int) {
        let rows = try CSV.parse(text)
        guard let header = rows.first else { throw SettlementError("stripe file: empty") }
        let col = try columns(header, required: ["currency", "gross", "fee", "reporting_category"], file: "stripe")
        let refColumns = ["payment_intent_id", "charge_id", "source_id"].compactMap { col[$0] }
        guard !refColumns.isEmpty else {
            throw SettlementError("stripe file: needs a payment_intent_id, charge_id or source_id column")
        }
        var out: [ProviderLine] = []
        var skipped = 0
        for (n, r) in rows.dropFirst().enumerated() {
            let lineNo = n + 2
            func v(_ name: String) -> String { col[name].flatMap { $0 < r.count ? r[$0] : nil }?.trimmingCharacters(in: .whitespaces) ?? "" }
            let kind: ReconcileKind
            switch v("reporting_category") {
            case "charge": kind = .payment
            case "refund": kind = .refund
            case "dispute": kind = .dispute
            case "dispute_reversal": kind = .disputeReversal
            default:
                skipped += 1
                continue
            }
            let code = v("currency").uppercased()
            guard let currency = Currency(code: code) else {
                throw SettlementError("stripe file line \(lineNo): currency '\(v("currency"))' is not an ISO 4217 code")
            }
            let gross = try money(v("gross"), currency, line: lineNo, column: "gross", file: "stripe")
            let fee = try money(v("fee"), currency, line: lineNo, column: "fee", file: "stripe")
            let ref = refColumns.lazy.map { $0 < r.count ? r[$0].trimmingCharacters(in: .whitespaces) : "" }
                .first { !$0.isEmpty }
            guard let ref else { throw SettlementError("stripe file line \(lineNo): no payment_intent_id, charge_id or source_id") }
            out.append(ProviderLine(line: lineNo, kind: kind, reference: ref, currency: code, amount: abs(gross), fee: fee))
        }
        return (out, skipped)
    }

    /// Adyen's Settlement Details Report: `Psp Reference` (the payment's; a refund or chargeback
    /// line carries the original payment's), `Type` (`Settled`, `Refunded`, `Chargeback`,
    /// `ChargebackReversed`; others such as `Fee` or `MerchantPayout` are not event lines),
    /// `Gross Currency`, `Gross Debit (GC)`, `Gross Credit (GC)`, `Net Currency`, and the fee
    /// columns `Commission (NC)`, `Markup (NC)`, `Scheme Fees (NC)`, `Interchange (NC)`, all in major units.
    public static func adyen(_ text: String) throws -> (lines: [ProviderLine], skipped: Int) {
        let rows = try CSV.parse(text)
        guard let header = rows.first else { throw SettlementError("adyen file: empty") }
        let col = try columns(
            header, required: ["Psp Reference", "Type", "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)"],
            file: "adyen")
        var out: [ProviderLine] = []
        var skipped = 0
        for (n, r) in rows.dropFirst().enumerated() {
            let lineNo = n + 2
            func v(_ name: String) -> String { col[name].flatMap { $0 < r.count ? r[$0] : nil }?.trimmingCharacters(in: .whitespaces) ?? "" }
            let kind: ReconcileKind
            switch v("Type") {
            case "Settled", "SettledBulk": kind = .payment
            case "Refunded", "RefundedBulk": kind = .refund
            case "Chargeback": kind = .dispute
            case "ChargebackReversed": kind = .disputeReversal
            default:
                skipped += 1
                continue
            }
            let code = v("Gross Currency")
            guard let currency = Currency(code: code) else {
                throw SettlementError("adyen file line \(lineNo): Gross Currency '\(code)' is not an ISO 4217 code")
            }
            let debit = try money(v("Gross Debit (GC)"), currency, line: lineNo, column: "Gross Debit (GC)", file: "adyen")
            let credit = try money(v("Gross Credit (GC)"), currency, line: lineNo, column: "Gross Credit (GC)", file: "adyen")
            var fee: Int64?
            let netCode = v("Net Currency")
            if netCode.isEmpty || netCode == code {
                var f: Int64 = 0
                for c in ["Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)"] where col[c] != nil {
                    let part = try money(v(c), currency, line: lineNo, column: c, file: "adyen")
                    let (sum, overflow) = f.addingReportingOverflow(part)
                    guard !overflow else {
                        throw SettlementError("adyen file line \(lineNo): fees do not fit in 64-bit minor units")
                    }
                    f = sum
                }
                fee = f
            }
            let psp = v("Psp Reference")
            guard !psp.isEmpty else { throw SettlementError("adyen file line \(lineNo): Psp Reference is empty") }
            let (difference, overflow) = credit.subtractingReportingOverflow(debit)
            guard !overflow, difference != .min else {
                throw SettlementError("adyen file line \(lineNo): gross does not fit in 64-bit minor units")
            }
            out.append(
                ProviderLine(line: lineNo, kind: kind, reference: psp, currency: code, amount: abs(difference), fee: fee))
        }
        return (out, skipped)
    }

    static func columns(_ header: [String], required: [String], file: String) throws -> [String: Int] {
        var col: [String: Int] = [:]
        for (i, h) in header.enumerated() { col[h.trimmingCharacters(in: .whitespaces)] = col[h.trimmingCharacters(in: .whitespaces)] ?? i }
        let missing = required.filter { col[$0] == nil }
        guard missing.isEmpty else {
            throw SettlementError("\(file) file: missing column\(missing.count > 1 ? "s" : "") \(missing.map { "'\($0)'" }.joined(separator: ", "))")
        }
        return col
    }

    /// A major-unit decimal as exact minor units (empty = 0); a bad or over-precise value names
    /// the line and column.
    static func money(_ s: String, _ currency: Currency, line: Int, column: String, file: String) throws -> Int64 {
        if s.isEmpty { return 0 }
        do { return try Money(major: s, currency: currency).value } catch {
            throw SettlementError("\(file) file line \(line): \(column): \(error.description)")
        }
    }
}

/// The result of matching a provider file against recorded events.
public struct Reconciliation: Sendable {
    public struct Key: Hashable, Sendable, Comparable {
        public var kind: ReconcileKind
        public var reference: String
        public var currency: String
        public static func < (l: Key, r: Key) -> Bool { (l.reference, l.kind, l.currency) < (r.reference, r.kind, r.currency) }
    }
    public struct Side: Sendable, Equatable {
        public var amount: Int64
        public var fee: Int64?
        public var detail: [String]
    }
    public struct Item: Sendable {
        public var key: Key
        public var ours: Side?
        public var provider: Side?
    }

    public var date: String
    public var provider: SettlementProvider
    public var matched: [Item] = []
    public var missingOurs: [Item] = []
    public var missingProvider: [Item] = []
    public var amountMismatches: [Item] = []
    public var feeMismatches: [Item] = []
    public var skippedLines = 0

    public var allMatch: Bool {
        missingOurs.isEmpty && missingProvider.isEmpty && amountMismatches.isEmpty && feeMismatches.isEmpty
    }

    /// Which recorded events a provider line stands for: payments by payment id, refunds,
    /// disputes and won-dispute reversals by the payment they name.
    static func kind(of e: RecordedEvent) -> ReconcileKind? {
        switch e.type {
        case "payment.succeeded": return .payment
        case "payment.refunded": return .refund
        case "payment.disputed": return .dispute
        case "dispute.closed": return e.outcome == "won" ? .disputeReversal : nil
        default: return nil
        }
    }

    /// Matches `lines` against `events` (the provider's recorded events). Every provider line is
    /// matched against every recorded event, whatever its day; "missing at the provider" lists
    /// our events of business day `date` absent from the file. Lines and events with the same
    /// kind, reference and currency are summed (two partial refunds of one payment).
    public static func match(
        date: String, provider: SettlementProvider, lines: [ProviderLine], skipped: Int, events: [RecordedEvent]
    ) -> Reconciliation {
        var r = Reconciliation(date: date, provider: provider)
        r.skippedLines = skipped
        var theirs: [Key: Side] = [:]
        for l in lines {
            let k = Key(kind: l.kind, reference: l.reference, currency: l.currency)
            var s = theirs[k] ?? Side(amount: 0, fee: 0, detail: [])
            // Saturating: a sum beyond Int64 shows as a mismatch instead of trapping.
            s.amount = Saturating.add(s.amount, l.amount)
            s.fee = (s.fee != nil && l.fee != nil) ? Saturating.add(s.fee!, l.fee!) : nil
            s.detail.append("line \(l.line)")
            theirs[k] = s
        }
        // Adyen's webhooks carry no fees: the fees of a refund or chargeback line reach the books
        // as `fee.assessed` naming the payment, so they are compared on the payment's line.
        if provider == .adyen {
            for (k, s) in theirs where k.kind != .payment && (s.fee ?? 0) != 0 {
                let pk = Key(kind: .payment, reference: k.reference, currency: k.currency)
                guard var p = theirs[pk], let pf = p.fee, let f = s.fee else { continue }
                p.fee = Saturating.add(pf, f)
                theirs[pk] = p
                theirs[k]?.fee = 0
            }
        }
        var ours: [Key: Side] = [:]
        var oursDays: [Key: Set<String>] = [:]
        // Fees learnt after the payment (`fee.assessed`: Stripe's balance transaction, Adyen's
        // settlement line) belong to the payment they name.
        var assessed: [Key: (Int64, [String])] = [:]
        for e in events where e.type == "fee.assessed" {
            guard let ref = e.paymentID, !ref.isEmpty else { continue }
            let k = Key(kind: .payment, reference: ref, currency: e.currency)
            var a = assessed[k] ?? (0, [])
            a.0 = Saturating.add(a.0, e.amount)
            a.1.append(e.eventID)
            assessed[k] = a
        }
        for e in events {
            guard let kind = kind(of: e), let ref = e.paymentID, !ref.isEmpty else { continue }
            let k = Key(kind: kind, reference: ref, currency: e.currency)
            var s = ours[k] ?? Side(amount: 0, fee: 0, detail: [])
            s.amount = Saturating.add(s.amount, e.amount)
            // Stripe and Adyen report a won dispute's returned fee as a negative fee line.
            s.fee =
                kind == .disputeReversal ? Saturating.subtract(s.fee ?? 0, e.fee) : Saturating.add(s.fee ?? 0, e.fee)
            s.detail.append(e.eventID)
            ours[k] = s
            oursDays[k, default: []].insert(e.businessDay)
        }
        for (k, a) in assessed {
            guard var s = ours[k] else { continue }
            s.fee = Saturating.add(s.fee ?? 0, a.0)
            s.detail += a.1
            ours[k] = s
        }
        for k in Set(theirs.keys).union(ours.keys).sorted() {
            let t = theirs[k]
            let o = ours[k]
            let item = Item(key: k, ours: o, provider: t)
            switch (o, t) {
            case (nil, _?): r.missingOurs.append(item)
            case (_?, nil):
                if oursDays[k]?.contains(date) == true { r.missingProvider.append(item) }
            case (let o?, let t?):
                if o.amount != t.amount {
                    r.amountMismatches.append(item)
                } else if let tf = t.fee, let of = o.fee, abs(tf) != abs(of) {
                    r.feeMismatches.append(item)
                } else {
                    r.matched.append(item)
                }
            case (nil, nil): break
            }
        }
        return r
    }

    public func json() throws -> String {
        func obj(_ i: Item) -> [String: Any] {
            var o: [String: Any] = ["kind": i.key.kind.rawValue, "reference": i.key.reference, "currency": i.key.currency]
            if let s = i.ours {
                o["ours"] = ["amount": s.amount, "fee": s.fee.map { $0 as Any } ?? NSNull(), "event_ids": s.detail]
            }
            if let s = i.provider {
                o["provider"] = ["amount": s.amount, "fee": s.fee.map { $0 as Any } ?? NSNull(), "lines": s.detail]
            }
            return o
        }
        let value: [String: Any] = [
            "date": date, "provider": provider.rawValue, "all_match": allMatch, "skipped_lines": skippedLines,
            "matched": matched.map(obj), "missing_ours": missingOurs.map(obj), "missing_provider": missingProvider.map(obj),
            "amount_mismatches": amountMismatches.map(obj), "fee_mismatches": feeMismatches.map(obj),
        ]
        let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    public func text() -> String {
        func m(_ v: Int64?, _ c: String) -> String {
            guard let v else { return "n/a" }
            return SettlementReport.major(v, c) + " " + c
        }
        func line(_ i: Item) -> String {
            let k = i.key
            var s = "  \(k.kind.rawValue) \(k.reference)"
            if let o = i.ours { s += "  ours \(m(o.amount, k.currency)) fee \(m(o.fee, k.currency))" }
            if let p = i.provider { s += "  provider \(m(p.amount, k.currency)) fee \(m(p.fee, k.currency)) (\(p.detail.joined(separator: ", ")))" }
            return s
        }
        var out = ["\(provider.rawValue) reconciliation for \(date): \(matched.count) matched, \(missingOurs.count) missing on our side, "
            + "\(missingProvider.count) missing at the provider, \(amountMismatches.count) amount mismatches, "
            + "\(feeMismatches.count) fee mismatches (\(skippedLines) non-event lines skipped)"]
        for (title, items) in [("Missing on our side", missingOurs), ("Missing at the provider", missingProvider),
                               ("Amount mismatches", amountMismatches), ("Fee mismatches", feeMismatches)] where !items.isEmpty {
            out.append("\(title):")
            out += items.map(line)
        }
        out.append(allMatch ? "OK: everything matches" : "NOT RECONCILED")
        return out.joined(separator: "\n")
    }
}
