import Foundation
import PayfleetCore
import PayfleetWorker

/// Payout-level reconciliation of a provider's payout report (DESIGN §5a, issue 19):
///
/// - every payout equals the sum of the lines it settles (N:1), and the `payout.paid` the books
///   hold for it (Stripe's webhook; for Adyen the one the reconciliation posts from the batch);
/// - lines paid out after the report date, or not yet in a payout, are `expected` (in flight);
/// - the provider's ending balance on the report date (the lines not paid out by then, per
///   currency: what Stripe's ending balance reconciliation lists) equals the ledger's
///   `Assets:<M>:Clearing:<P>` as of that date;
/// - lines that move money but that no event explains (a provider fee without a payment, an
///   adjustment) are listed: the books cannot know them.
public struct PayoutReconciliation: Sendable {
    public struct Payout: Sendable, Equatable {
        public var payout: String
        public var currency: String
        /// Effective day (nil: no payout line and no effective date in the file).
        public var date: String?
        public var lines: Int
        /// Sum of the net of the lines the payout settles.
        public var linesNet: Int64
        /// The amount the provider states for the payout itself (Adyen `MerchantPayout`,
        /// Stripe `payout` line), when the file has it.
        public var provider: Int64?
        /// The `payout.paid` the books hold (or this run posted) for it.
        public var ours: Int64?
        public var oursEventIDs: [String]
        /// `ok`, `mismatch` (sums differ), `missing_ours` (no `payout.paid` in the books),
        /// `expected` (effective after the report date).
        public var status: String
    }

    public struct Balance: Sendable, Equatable {
        public var currency: String
        public var account: String?
        /// The provider's balance on the report date: the lines not paid out by then.
        public var provider: Int64
        /// The clearing effect of the books' events up to the report date that no line lists.
        public var booksOnly: Int64
        public var booksOnlyEventIDs: [String]
        /// The ledger's clearing account as of the report date; nil when no ledger was read.
        public var ledger: Int64?
        /// What the ledger should hold: the provider's balance plus what only the books know.
        public var expectedLedger: Int64 { Saturating.add(provider, booksOnly) }
        public var status: String { ledger.map { $0 == expectedLedger ? "ok" : "mismatch" } ?? "not_checked" }
    }

    public var date: String
    public var provider: SettlementProvider
    public var payouts: [Payout] = []
    public var balances: [Balance] = []
    /// Lines paid out after the report date or not yet in a payout.
    public var expected: [BalanceLine] = []
    /// Lines that move money and that no canonical event reports (not payouts).
    public var unexplained: [BalanceLine] = []
    /// Provider fees of the event lines per currency, and the fees the books hold for them.
    public var providerFees: [String: Int64] = [:]

    public var payoutMismatches: [Payout] { payouts.filter { $0.status == "mismatch" || $0.status == "missing_ours" } }
    public var balanceMismatches: [Balance] { balances.filter { $0.status == "mismatch" } }

    /// `lines` of the provider's report, `events` the provider's events the books hold
    /// (recorded, plus any this run posted), `clearing` the ledger's clearing balance per
    /// currency as of `date` (nil: not checked) and the account name.
    public static func compute(
        date: String, provider: SettlementProvider, lines: [BalanceLine], events: [RecordedEvent],
        clearing: [String: Int64]?, clearingAccount: String? = nil
    ) -> PayoutReconciliation {
        var r = PayoutReconciliation(date: date, provider: provider)
        struct Key: Hashable, Comparable {
            var payout: String, currency: String
            static func < (l: Key, r: Key) -> Bool { (l.payout, l.currency) < (r.payout, r.currency) }
        }
        var groups: [Key: Payout] = [:]
        for l in lines {
            if l.kind != nil { r.providerFees[l.currency] = Saturating.add(r.providerFees[l.currency] ?? 0, l.fee) }
            guard let p = l.payout else {
                if !l.isPayout { r.expected.append(l) }
                continue
            }
            let k = Key(payout: p, currency: l.currency)
            var g = groups[k] ?? Payout(payout: p, currency: l.currency, date: nil, lines: 0, linesNet: 0, provider: nil,
                                        ours: nil, oursEventIDs: [], status: "")
            if l.isPayout {
                g.provider = Saturating.add(g.provider ?? 0, Saturating.subtract(0, l.net))
                g.date = l.payoutDate
            } else {
                g.lines += 1
                g.linesNet = Saturating.add(g.linesNet, l.net)
                if g.date == nil { g.date = l.payoutDate }
                if !l.paid(by: date) { r.expected.append(l) }
            }
            if l.kind == nil, !l.isPayout { r.unexplained.append(l) }
            groups[k] = g
        }
        for l in lines where l.payout == nil && l.kind == nil && !l.isPayout { r.unexplained.append(l) }
        // The books' payouts: `payout.paid` (minus `payout.failed`) by the payout id they name.
        var ours: [Key: (Int64, [String])] = [:]
        for e in events where e.type == "payout.paid" || e.type == "payout.failed" {
            guard let id = e.pspReference ?? e.paymentID else { continue }
            let k = Key(payout: id, currency: e.currency)
            var o = ours[k] ?? (0, [])
            o.0 = e.type == "payout.paid" ? Saturating.add(o.0, e.amount) : Saturating.subtract(o.0, e.amount)
            o.1.append(e.eventID)
            ours[k] = o
        }
        for (k, var g) in groups.sorted(by: { $0.key < $1.key }) {
            if let o = ours[k] {
                g.ours = o.0
                g.oursEventIDs = o.1
            }
            let effective = g.date.map { $0 <= date } ?? false
            if !effective {
                g.status = "expected"
            } else if g.provider.map({ $0 != g.linesNet }) ?? false {
                g.status = "mismatch"
            } else if let o = g.ours {
                g.status = o == g.linesNet ? "ok" : "mismatch"
            } else {
                g.status = "missing_ours"
            }
            r.payouts.append(g)
        }
        // Ending balance: every line not paid out by the report date (payout lines excluded).
        var ending: [String: Int64] = [:]
        for l in lines where !l.isPayout {
            if ending[l.currency] == nil { ending[l.currency] = 0 }
            if !l.paid(by: date) { ending[l.currency] = Saturating.add(ending[l.currency]!, l.net) }
        }
        // What the books hold beyond the file: their events up to the report date that no line
        // lists (in flight at the provider, or settled before the file's period together with
        // their payouts). Clearing = provider's ending balance + these.
        struct LineKey: Hashable { var kind: ReconcileKind, reference: String, currency: String }
        var listed = Set<LineKey>()
        for l in lines { if let k = l.kind, let ref = l.reference { listed.insert(LineKey(kind: k, reference: ref, currency: l.currency)) } }
        var unlisted: [String: Int64] = [:]
        var unlistedIDs: [String: [String]] = [:]
        for e in events where e.businessDay <= date {
            guard let effect = clearingEffect(e) else { continue }
            let isListed: Bool
            switch e.type {
            case "payout.paid", "payout.failed":
                isListed = (e.pspReference ?? e.paymentID).map { groups[Key(payout: $0, currency: e.currency)] != nil } ?? false
            case "fee.assessed":
                isListed = e.paymentID.map { listed.contains(LineKey(kind: .payment, reference: $0, currency: e.currency)) } ?? false
            default:
                guard let kind = Reconciliation.kind(of: e) ?? (e.type == "refund.failed" ? .refund : e.type == "payment.reversed" ? .payment : nil),
                    let ref = e.paymentID
                else { isListed = false; break }
                isListed = listed.contains(LineKey(kind: kind, reference: ref, currency: e.currency))
            }
            guard !isListed else { continue }
            unlisted[e.currency] = Saturating.add(unlisted[e.currency] ?? 0, effect)
            unlistedIDs[e.currency, default: []].append(e.eventID)
        }
        for c in Set(ending.keys).union(clearing?.keys.map { $0 } ?? []).sorted() {
            r.balances.append(
                Balance(currency: c, account: clearingAccount, provider: ending[c] ?? 0, booksOnly: unlisted[c] ?? 0,
                        booksOnlyEventIDs: unlistedIDs[c] ?? [], ledger: clearing.map { $0[c] ?? 0 }))
        }
        return r
    }

    /// What an event does to `Assets:<M>:Clearing:<P>` (DESIGN §5a); nil when nothing.
    public static func clearingEffect(_ e: RecordedEvent) -> Int64? {
        let a = e.amount, f = e.fee
        switch e.type {
        case "payment.succeeded": return Saturating.subtract(a, f)
        case "payment.refunded", "payout.paid", "fee.assessed": return Saturating.subtract(0, a)
        case "payment.disputed": return Saturating.subtract(0, Saturating.add(a, f))
        case "dispute.closed": return e.outcome == "won" ? Saturating.add(a, f) : nil
        case "refund.failed", "payout.failed": return a
        case "payment.reversed": return Saturating.subtract(f, a)
        default: return nil
        }
    }

    public func jsonObject() -> [String: Any] {
        func line(_ l: BalanceLine) -> [String: Any] {
            var o: [String: Any] = [
                "line": l.line, "id": l.id, "category": l.category, "currency": l.currency, "gross": l.gross, "fee": l.fee,
                "net": l.net, "created": l.created,
            ]
            o["reference"] = l.reference.map { $0 as Any } ?? NSNull()
            o["payout"] = l.payout.map { $0 as Any } ?? NSNull()
            o["payout_date"] = l.payoutDate.map { $0 as Any } ?? NSNull()
            return o
        }
        return [
            "payouts": payouts.map { p -> [String: Any] in
                [
                    "payout": p.payout, "currency": p.currency, "date": p.date.map { $0 as Any } ?? NSNull(),
                    "lines": p.lines, "lines_net": p.linesNet, "provider": p.provider.map { $0 as Any } ?? NSNull(),
                    "ours": p.ours.map { $0 as Any } ?? NSNull(), "event_ids": p.oursEventIDs, "status": p.status,
                ]
            },
            "balances": balances.map { b -> [String: Any] in
                [
                    "currency": b.currency, "account": b.account.map { $0 as Any } ?? NSNull(), "provider": b.provider,
                    "books_only": b.booksOnly, "books_only_event_ids": b.booksOnlyEventIDs,
                    "expected_ledger": b.expectedLedger, "ledger": b.ledger.map { $0 as Any } ?? NSNull(), "status": b.status,
                ]
            },
            "expected": expected.map(line),
            "unexplained": unexplained.map(line),
            "provider_fees": providerFees,
        ]
    }

    public func textLines() -> [String] {
        func m(_ v: Int64?, _ c: String) -> String { v.map { SettlementReport.major($0, c) + " " + c } ?? "n/a" }
        let expectedNet = Dictionary(grouping: expected, by: \.currency).mapValues { $0.reduce(Int64(0)) { Saturating.add($0, $1.net) } }
        var out = [
            "payouts: \(payouts.filter { $0.status == "ok" }.count) ok, \(payoutMismatches.count) not matching, "
                + "\(payouts.filter { $0.status == "expected" }.count) expected after \(date); "
                + "\(expected.count) lines in flight (expected, not missing)"
                + (expectedNet.isEmpty ? "" : ": " + expectedNet.sorted { $0.key < $1.key }.map { m($0.value, $0.key) }.joined(separator: ", "))
        ]
        for p in payouts {
            out.append(
                "  payout \(p.payout) \(p.currency) \(p.date ?? "not paid") \(p.status): \(p.lines) lines net \(m(p.linesNet, p.currency))"
                    + (p.provider.map { ", provider states \(m($0, p.currency))" } ?? "")
                    + ", books \(m(p.ours, p.currency))")
        }
        for b in balances {
            out.append(
                "  balance \(b.currency) on \(date): provider \(m(b.provider, b.currency))"
                    + (b.booksOnly != 0 ? " + not in the file \(m(b.booksOnly, b.currency)) (\(b.booksOnlyEventIDs.count) events)" : "")
                    + ", \(b.account ?? "clearing") \(m(b.ledger, b.currency)) \(b.status)")
        }
        if !unexplained.isEmpty {
            out.append("Lines no event explains:")
            for l in unexplained {
                out.append("  line \(l.line) \(l.category) \(l.id) net \(m(l.net, l.currency))")
            }
        }
        return out
    }
}
