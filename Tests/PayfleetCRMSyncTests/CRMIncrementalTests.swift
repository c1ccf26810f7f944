import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import Testing

/// Issue 17: crm-sync keeps each summary row up to date by the contribution of the event that
/// changed it instead of summing the customer's whole history per event. The summary rows must
/// stay what the sum over all recorded events gives (`CRMState.recompute`, the SQL sum kept for
/// rows not written yet) whatever the order, the batching, duplicates, reversals reported twice,
/// refunds that reach their customer later and payments at the same instant; and money figures
/// are checked against the story's own facts as well.
@Suite struct CRMIncrementalTests {
    /// Random stories of one merchant's customers, in two currencies: invoices and payments,
    /// refunds (some without a customer), refunds that fail (some reported twice), reversed
    /// payments (some twice), disputes closed won or lost, and payments sharing a timestamp.
    struct Story {
        var events: [PaymentEvent] = []
        /// "customer|merchant|currency" → figures worked out from the story as it is written.
        var expected: [String: Figures] = [:]
        var reversals = 0

        init(seed: UInt64, stories: Int) {
            var rng = SplitMix64(seed: seed)
            let day = RFC3339.parse("2026-11-20T00:00:00Z")!.timeIntervalSince1970
            for n in 0..<stories {
                let customer = "cus_\(Int.random(in: 0..<6, using: &rng))"
                let cur = Bool.random(using: &rng) ? "GBP" : "EUR"
                let k = CRMStream.key(customer, "m_acme", cur)
                var f = expected[k] ?? Figures()
                // Whole minutes, few of them: payments of one customer often share an instant.
                var t = day + Double(Int.random(in: 0..<40, using: &rng)) * 60
                var i = 0
                func ev(_ type: PaymentEvent.EventType, _ amount: Int64, customer c: String?, payment: String?,
                        invoice: String? = nil, metadata: [String: String] = [:]) -> PaymentEvent {
                    i += 1
                    t += Double(Int.random(in: 0...2, using: &rng)) * 60
                    return crmEvent("e\(n)_\(i)", type, amount: amount, currency: cur, customer: c, payment: payment,
                                    invoice: invoice, at: RFC3339.format(Date(timeIntervalSince1970: t)), metadata: metadata)
                }
                let pid = "pi_\(n)"
                let amount = Int64.random(in: 100...90_000, using: &rng)
                let invoice: String? = Bool.random(using: &rng) ? "inv_\(n)" : nil
                if let invoice {
                    events.append(ev(.invoiceIssued, amount, customer: customer, payment: nil, invoice: invoice))
                    f.outstanding += amount
                }
                events.append(ev(.paymentSucceeded, amount, customer: customer, payment: pid, invoice: invoice))
                var paidCounts = true
                switch Int.random(in: 0..<5, using: &rng) {
                case 0:
                    // Refunded, the refund maybe failing (reported once or twice).
                    let r = Int64.random(in: 1...amount, using: &rng)
                    let rid = "re_\(n)"
                    events.append(ev(.paymentRefunded, r, customer: Bool.random(using: &rng) ? customer : nil, payment: pid,
                                     invoice: invoice, metadata: ["refund_id": rid]))
                    if Bool.random(using: &rng) {
                        for _ in 0..<Int.random(in: 1...2, using: &rng) {
                            events.append(ev(.refundFailed, r, customer: nil, payment: pid, metadata: ["refund_id": rid]))
                            reversals += 1
                        }
                    } else {
                        f.refunded += r
                        if invoice != nil { f.outstanding += r }
                    }
                case 1:
                    // Reversed, once or twice.
                    for _ in 0..<Int.random(in: 1...2, using: &rng) {
                        events.append(ev(.paymentReversed, amount, customer: nil, payment: pid))
                        reversals += 1
                    }
                    paidCounts = false
                case 2:
                    events.append(ev(.paymentDisputed, amount, customer: nil, payment: pid))
                    f.disputed += amount
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0:
                        events.append(ev(.disputeClosed, amount, customer: nil, payment: pid, metadata: ["outcome": "won"]))
                        f.disputed -= amount
                    case 1: events.append(ev(.disputeClosed, amount, customer: nil, payment: pid, metadata: ["outcome": "lost"]))
                    default: break  // still open
                    }
                default: break
                }
                if paidCounts {
                    f.paid += amount
                    if invoice != nil { f.outstanding -= amount }
                }
                expected[k] = f
            }
        }
    }

    /// The stored row of every key against the sum over its events and against the story.
    static func check(_ h: CRMHarness, _ story: Story) async throws -> [String] {
        try await h.store.withConnection { db -> [String] in
            var problems: [String] = []
            let rows = try db.query(
                """
                SELECT customer_id, merchant_id, currency, outstanding, paid, refunded, disputed, status,
                    last_payment_id, last_payment_amount, last_payment_at FROM crm_balances
                """)
            for r in rows {
                let (c, m, cur) = (r.string(0)!, r.string(1)!, r.string(2)!)
                let stored = Figures(outstanding: r.int(3)!, paid: r.int(4)!, refunded: r.int(5)!, disputed: r.int(6)!)
                let summed = try CRMState.recompute(db, customer: c, merchant: m, currency: cur, now: Date())
                let sum = Figures(outstanding: summed.outstanding, paid: summed.paid, refunded: summed.refunded, disputed: summed.disputed)
                let key = CRMStream.key(c, m, cur)
                if stored != sum { problems.append("\(key): stored \(stored), sum of its events \(sum)") }
                if stored != story.expected[key] { problems.append("\(key): stored \(stored), the story's \(story.expected[key].map(\.description) ?? "none")") }
                if r.string(7) != summed.status { problems.append("\(key): status \(r.string(7) ?? "nil"), summed \(summed.status)") }
                if r.string(8) != summed.lastPaymentID || r.int(9) != summed.lastPaymentAmount
                    || r.int(10) != summed.lastPaymentAt.map({ Int64(($0.timeIntervalSince1970 * 1000).rounded()) })
                {
                    problems.append("\(key): last payment \(r.string(8) ?? "nil") \(r.int(9) ?? -1), summed \(summed.lastPaymentID ?? "nil") \(summed.lastPaymentAmount ?? -1)")
                }
            }
            if rows.count != story.expected.count { problems.append("\(rows.count) summary rows, the story has \(story.expected.count)") }
            return problems
        }
    }

    @Test("summary rows kept by contribution equal the sum over the events, shuffled, batched, with duplicates", arguments: [1, 2, 3, 4] as [UInt64])
    func incrementalEqualsSum(seed: UInt64) async throws {
        let story = Story(seed: seed, stories: 120)
        #expect(story.reversals > 10)
        var rng = SplitMix64(seed: seed &* 7919)
        var events = story.events
        for _ in 0..<(events.count / 10) { events.append(events[Int.random(in: 0..<story.events.count, using: &rng)]) }
        events.shuffle(using: &rng)
        let h = try await CRMHarness(handler: CRMHandler(
            connector: try SandboxConnector(path: TestEnvironment.makeTempDir("crm-inc") + "/crm.jsonl")))
        var i = 0
        while i < events.count {
            let n = Int.random(in: 1...40, using: &rng)
            try await h.apply(Array(events[i..<min(events.count, i + n)]), batch: n)
            i += n
        }
        let problems = try await Self.check(h, story)
        #expect(problems.isEmpty, "\(problems.count) problems: \(problems.prefix(6))")
    }
}
