import Foundation
import PayfleetCore
import PayfleetLedger

/// A generated stream of mixed events (every type, several merchants and currencies including
/// JPY and BHD, refunds and disputes before their payments, refunds without a customer,
/// duplicates), with the trial balance computed independently from the story of each payment.
struct LedgerStream {
    static let merchants = [
        Merchant(id: "m_acme", timeZone: "Europe/London", currencies: ["GBP", "EUR"]),
        Merchant(id: "m_tokyo", timeZone: "Asia/Tokyo", cutoffMinutes: 120, currencies: ["JPY"], ledgerName: "Tokyo Shop"),
        Merchant(id: "m_bahrain", timeZone: "Asia/Bahrain", currencies: ["BHD"], ledgerName: "Bahrain"),
        Merchant(id: "m_globex", timeZone: "America/New_York", cutoffMinutes: 17 * 60, currencies: ["USD", "EUR"]),
    ]
    /// Merchant id → (account segment as the test expects it, currencies). `m_unlisted` is not
    /// configured: UTC days, name from its id.
    static let segments: [String: (String, [String])] = [
        "m_acme": ("M-acme", ["GBP", "EUR"]), "m_tokyo": ("Tokyo-Shop", ["JPY"]), "m_bahrain": ("Bahrain", ["BHD"]),
        "m_globex": ("M-globex", ["USD", "EUR"]), "m_unlisted": ("M-unlisted", ["GBP"]),
    ]
    static let providers = [("stripe", "Stripe"), ("adyen", "Adyen"), ("phonepay", "Phonepay")]

    var events: [PaymentEvent] = []
    var uniqueCount = 0
    var expected: [String: Int64] = [:]
    var typeCounts: [PaymentEvent.EventType: Int] = [:]

    mutating func book(_ account: String, _ currency: String, _ amount: Int64) {
        expected["\(account) \(currency)", default: 0] += amount
    }

    /// About `total` events (duplicates included) built from random payment stories; within a
    /// story the events are usually in time order, and in a fifth of stories reversed.
    init(total: Int, seed: UInt64, prefix: String = "s") {
        var rng = SplitMix64(seed: seed)
        let base = RFC3339.parse("2026-11-20T00:00:00Z")!.timeIntervalSince1970
        let ids = Array(Self.segments.keys).sorted()
        var n = 0
        let uniqueTarget = total * 95 / 100
        while events.count < uniqueTarget {
            n += 1
            let mid = ids[Int.random(in: 0..<ids.count, using: &rng)]
            let (m, currencies) = Self.segments[mid]!
            let cur = currencies[Int.random(in: 0..<currencies.count, using: &rng)]
            let (provider, p) = Self.providers[Int.random(in: 0..<Self.providers.count, using: &rng)]
            let customer = "cus_\(Int.random(in: 0..<300, using: &rng))"
            let c = Merchant.accountSegment(customer)
            let scale: Int64 = cur == "JPY" ? 1 : (cur == "BHD" ? 10 : 1)
            let amount = Int64.random(in: 100...500_000, using: &rng) * scale
            let fee = Int64.random(in: 0...(amount / 20), using: &rng)
            var t = base + Double.random(in: 0...(6 * 86_400), using: &rng)
            var story: [PaymentEvent] = []
            func ev(
                _ type: PaymentEvent.EventType, _ amount: Int64, fee: Int64? = nil, customer: String?, payment: String?,
                invoice: String? = nil, metadata: [String: String] = [:]
            ) -> PaymentEvent {
                t += Double.random(in: 1...7200, using: &rng)
                let id = PaymentEvent.canonicalID(provider: provider, eventID: "\(prefix)-\(n)-\(story.count)")
                var e = ledgerEvent(
                    id, type, merchant: mid, amount: amount, currency: cur, fee: fee, provider: provider, customer: customer,
                    payment: payment, invoice: invoice, metadata: metadata)
                e.occurredAt = Date(timeIntervalSince1970: t.rounded())
                typeCounts[type, default: 0] += 1
                return e
            }
            let pid = "pi_\(prefix)_\(n)"
            let kind = Int.random(in: 0..<100, using: &rng)
            if kind < 30 {
                // Invoiced sale: invoice, payment naming it, maybe a refund naming it.
                let inv = "inv_\(prefix)_\(n)"
                story.append(ev(.invoiceIssued, amount, customer: customer, payment: nil, invoice: inv))
                book("Assets:\(m):Receivable:\(c)", cur, amount)
                book("Income:\(m):Sales", cur, -amount)
                let paid = Bool.random(using: &rng) ? amount : amount / 2
                story.append(ev(.paymentSucceeded, paid, fee: fee, customer: customer, payment: pid, invoice: inv))
                book("Assets:\(m):Clearing:\(p)", cur, paid - fee)
                book("Expenses:\(m):PaymentFees", cur, fee)
                book("Assets:\(m):Receivable:\(c)", cur, -paid)
                if Int.random(in: 0..<100, using: &rng) < 40 {
                    let r = Int64.random(in: 1...max(1, paid), using: &rng)
                    // Half the refunds carry no customer: the ledger reaches it through the payment.
                    let refundCustomer = Bool.random(using: &rng) ? customer : nil
                    let rid = "re_\(prefix)_\(n)"
                    story.append(
                        ev(.paymentRefunded, r, customer: refundCustomer, payment: pid, invoice: inv,
                           metadata: ["refund_id": rid]))
                    book("Assets:\(m):Receivable:\(c)", cur, r)
                    book("Assets:\(m):Clearing:\(p)", cur, -r)
                    if Int.random(in: 0..<100, using: &rng) < 30 {
                        // The refund fails; the failure names neither customer nor invoice: only the
                        // refund says it debited the receivable.
                        story.append(ev(.refundFailed, r, customer: nil, payment: pid, metadata: ["refund_id": rid]))
                        book("Assets:\(m):Clearing:\(p)", cur, r)
                        book("Assets:\(m):Receivable:\(c)", cur, -r)
                    }
                }
                if Int.random(in: 0..<100, using: &rng) < 15 {
                    // The payment does not complete: what it credited (the receivable) is owed again.
                    story.append(ev(.paymentReversed, paid, fee: fee, customer: nil, payment: pid))
                    book("Assets:\(m):Receivable:\(c)", cur, paid)
                    book("Assets:\(m):Clearing:\(p)", cur, -(paid - fee))
                    book("Expenses:\(m):PaymentFees", cur, -fee)
                }
            } else if kind < 75 {
                // Sale without invoice, maybe refunded, maybe disputed and closed.
                story.append(ev(.paymentSucceeded, amount, fee: fee, customer: customer, payment: pid))
                book("Assets:\(m):Clearing:\(p)", cur, amount - fee)
                if fee > 0 { book("Expenses:\(m):PaymentFees", cur, fee) }
                book("Income:\(m):Sales", cur, -amount)
                let roll = Int.random(in: 0..<100, using: &rng)
                if roll < 25 {
                    let r = Int64.random(in: 1...amount, using: &rng)
                    let rid = "re_\(prefix)_\(n)"
                    story.append(
                        ev(.paymentRefunded, r, customer: Bool.random(using: &rng) ? customer : nil, payment: pid,
                           metadata: ["refund_id": rid]))
                    book("Income:\(m):Refunds", cur, r)
                    book("Assets:\(m):Clearing:\(p)", cur, -r)
                    if Int.random(in: 0..<100, using: &rng) < 30 {
                        story.append(ev(.refundFailed, r, customer: customer, payment: pid, metadata: ["refund_id": rid]))
                        book("Assets:\(m):Clearing:\(p)", cur, r)
                        book("Income:\(m):Refunds", cur, -r)
                    }
                } else if roll < 32 {
                    story.append(ev(.paymentReversed, amount, fee: fee, customer: customer, payment: pid))
                    book("Income:\(m):Sales", cur, amount)
                    book("Assets:\(m):Clearing:\(p)", cur, -(amount - fee))
                    book("Expenses:\(m):PaymentFees", cur, -fee)
                } else if roll < 45 {
                    let dfee = Int64.random(in: 0...1500, using: &rng) * scale
                    story.append(ev(.paymentDisputed, amount, fee: dfee, customer: customer, payment: pid))
                    book("Expenses:\(m):Disputes", cur, amount)
                    book("Expenses:\(m):PaymentFees", cur, dfee)
                    book("Assets:\(m):Clearing:\(p)", cur, -(amount + dfee))
                    let close = Int.random(in: 0..<100, using: &rng)
                    if close < 40 {
                        let returned: Int64? = Bool.random(using: &rng) ? dfee : nil
                        story.append(
                            ev(.disputeClosed, amount, fee: returned, customer: nil, payment: pid, metadata: ["outcome": "won"]))
                        book("Assets:\(m):Clearing:\(p)", cur, amount + (returned ?? 0))
                        book("Expenses:\(m):Disputes", cur, -amount)
                        book("Expenses:\(m):PaymentFees", cur, -(returned ?? 0))
                    } else if close < 70 {
                        story.append(
                            ev(.disputeClosed, amount, customer: customer, payment: pid, metadata: ["outcome": "lost"]))
                    }
                }
                if Int.random(in: 0..<100, using: &rng) < 20 {
                    // A fee the provider reports later.
                    let late = Int64.random(in: 1...(amount / 50 + 1), using: &rng)
                    story.append(ev(.feeAssessed, late, customer: nil, payment: pid))
                    book("Expenses:\(m):PaymentFees", cur, late)
                    book("Assets:\(m):Clearing:\(p)", cur, -late)
                }
            } else if kind < 88 {
                story.append(ev(.paymentFailed, amount, customer: customer, payment: pid))
            } else {
                let po = "po_\(prefix)_\(n)"
                story.append(ev(.payoutPaid, amount * 3, customer: nil, payment: nil, metadata: ["payout_id": po]))
                book("Assets:\(m):Bank", cur, amount * 3)
                book("Assets:\(m):Clearing:\(p)", cur, -amount * 3)
                if Int.random(in: 0..<100, using: &rng) < 30 {
                    story.append(ev(.payoutFailed, amount * 3, customer: nil, payment: nil, metadata: ["payout_id": po]))
                    book("Assets:\(m):Clearing:\(p)", cur, amount * 3)
                    book("Assets:\(m):Bank", cur, -amount * 3)
                }
            }
            if Int.random(in: 0..<100, using: &rng) < 20 { story.reverse() }
            events += story
        }
        uniqueCount = events.count
        // Duplicates (redeliveries, provider retries) at random later positions.
        while events.count < total {
            let i = Int.random(in: 0..<events.count, using: &rng)
            let j = Int.random(in: i...events.count, using: &rng)
            events.insert(events[i], at: j)
        }
        expected = expected.filter { $0.value != 0 }
    }
}
