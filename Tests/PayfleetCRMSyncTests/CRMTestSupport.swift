import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCRMSync
import PayfleetCore
import PayfleetStore
import PayfleetTestKit

/// One canonical event for crm-sync tests.
func crmEvent(
    _ id: String, _ type: PaymentEvent.EventType, merchant: String = "m_acme", amount: Int64, currency: String = "GBP",
    fee: Int64? = nil, customer: String? = "cus_1", payment: String? = "pi_1", invoice: String? = nil,
    at: String = "2026-11-24T10:15:00Z", name: String? = "Ada Lovelace", email: String? = "ada@example.com",
    metadata: [String: String] = [:]
) -> PaymentEvent {
    let cur = Currency(code: currency)!
    return PaymentEvent(
        id: id, type: type, occurredAt: RFC3339.parse(at)!, receivedAt: RFC3339.parse(at)!,
        source: .init(provider: "stripe", eventID: "src_" + id), merchantID: merchant,
        customer: customer.map { .init(id: $0, name: name, email: email) },
        payment: payment.map { .init(id: $0, channel: "online", method: "card", card: .init(brand: "visa", last4: "4242")) },
        amount: Money(value: amount, currency: cur), fee: fee.map { Money(value: $0, currency: cur) }, invoiceID: invoice,
        metadata: metadata)
}

/// The figures of one customer, merchant and currency.
struct Figures: Equatable, Hashable, CustomStringConvertible {
    var outstanding: Int64 = 0
    var paid: Int64 = 0
    var refunded: Int64 = 0
    var disputed: Int64 = 0
    var description: String { "outstanding \(outstanding) paid \(paid) refunded \(refunded) disputed \(disputed)" }
}

/// A shuffled stream of mixed events with duplicates; the expected figures are computed from
/// each story as it is generated (not from the events by crm-sync's rules).
struct CRMStream {
    static let merchants: [(String, [String])] = [
        ("m_acme", ["GBP", "EUR"]), ("m_tokyo", ["JPY"]), ("m_bahrain", ["BHD"]), ("m_globex", ["USD"]),
    ]
    var events: [PaymentEvent] = []
    var uniqueCount = 0
    /// "customer|merchant|currency" → figures.
    var expected: [String: Figures] = [:]
    var typeCounts: [PaymentEvent.EventType: Int] = [:]

    static func key(_ c: String, _ m: String, _ cur: String) -> String { "\(c)|\(m)|\(cur)" }

    init(total: Int, seed: UInt64, prefix: String, customers: Int = 60) {
        var rng = SplitMix64(seed: seed)
        let base = RFC3339.parse("2026-11-20T00:00:00Z")!.timeIntervalSince1970
        var n = 0
        let uniqueTarget = total * 85 / 100
        while events.count < uniqueTarget {
            n += 1
            let (mid, currencies) = Self.merchants[Int.random(in: 0..<Self.merchants.count, using: &rng)]
            let cur = currencies[Int.random(in: 0..<currencies.count, using: &rng)]
            let customer = "cus_\(prefix)_\(Int.random(in: 0..<customers, using: &rng))"
            let k = Self.key(customer, mid, cur)
            let amount = Int64.random(in: 100...500_000, using: &rng)
            var t = base + Double.random(in: 0...(6 * 86_400), using: &rng)
            var story: [PaymentEvent] = []
            func ev(
                _ type: PaymentEvent.EventType, _ amount: Int64, customer c: String?, payment: String?,
                invoice: String? = nil, metadata: [String: String] = [:]
            ) -> PaymentEvent {
                t += Double.random(in: 1...7200, using: &rng)
                typeCounts[type, default: 0] += 1
                return crmEvent(
                    PaymentEvent.canonicalID(provider: "stripe", eventID: "\(prefix)-\(n)-\(story.count)"), type,
                    merchant: mid, amount: amount, currency: cur, fee: 10, customer: c, payment: payment,
                    invoice: invoice, at: RFC3339.format(Date(timeIntervalSince1970: t.rounded())),
                    metadata: metadata)
            }
            var f = expected[k] ?? Figures()
            let pid = "pi_\(prefix)_\(n)"
            let kind = Int.random(in: 0..<100, using: &rng)
            if kind < 35 {
                // Invoiced: invoice, maybe a payment naming it (full, partial or over), maybe a refund.
                let inv = "inv_\(prefix)_\(n)"
                story.append(ev(.invoiceIssued, amount, customer: customer, payment: nil, invoice: inv))
                f.outstanding += amount
                if Int.random(in: 0..<100, using: &rng) < 80 {
                    let paid = [amount, amount / 2, amount + 500][Int.random(in: 0..<3, using: &rng)]
                    story.append(ev(.paymentSucceeded, paid, customer: customer, payment: pid, invoice: inv))
                    f.outstanding -= paid
                    f.paid += paid
                    if Int.random(in: 0..<100, using: &rng) < 40 {
                        let r = Int64.random(in: 1...paid, using: &rng)
                        // Half the refunds carry no customer: reached through the payment.
                        let rc = Bool.random(using: &rng) ? customer : nil
                        story.append(ev(.paymentRefunded, r, customer: rc, payment: pid, invoice: inv))
                        f.outstanding += r
                        f.refunded += r
                    }
                }
            } else if kind < 80 {
                story.append(ev(.paymentSucceeded, amount, customer: customer, payment: pid))
                f.paid += amount
                let roll = Int.random(in: 0..<100, using: &rng)
                if roll < 30 {
                    let r = Int64.random(in: 1...amount, using: &rng)
                    story.append(ev(.paymentRefunded, r, customer: Bool.random(using: &rng) ? customer : nil, payment: pid))
                    f.refunded += r
                } else if roll < 55 {
                    story.append(ev(.paymentDisputed, amount, customer: Bool.random(using: &rng) ? customer : nil, payment: pid))
                    f.disputed += amount
                    let close = Int.random(in: 0..<100, using: &rng)
                    if close < 50 {
                        story.append(ev(.disputeClosed, amount, customer: nil, payment: pid, metadata: ["outcome": "won"]))
                        f.disputed -= amount
                    } else if close < 75 {
                        story.append(ev(.disputeClosed, amount, customer: nil, payment: pid, metadata: ["outcome": "lost"]))
                    }
                }
            } else {
                story.append(ev(.paymentFailed, amount, customer: customer, payment: pid))
            }
            expected[k] = f
            events += story
        }
        uniqueCount = events.count
        while events.count < total {
            let i = Int.random(in: 0..<uniqueCount, using: &rng)
            events.append(events[i])
        }
        events.shuffle(using: &rng)
    }
}


/// crm-sync's store in a temporary directory, fed through the runtime's own batch step
/// (`HandlerHarness`); returns the changes to push.
final class CRMHarness: @unchecked Sendable {
    let harness: HandlerHarness<CRMHandler>
    var path: String { harness.path }
    var handler: CRMHandler { harness.handler }
    var store: Store { harness.store }

    init(handler: CRMHandler) async throws {
        harness = try await HandlerHarness(handler: handler, name: "crm-sync")
    }

    /// The changes of the new events; a refused event's error is thrown after its batch committed.
    @discardableResult
    func apply(_ events: [PaymentEvent], batch: Int = 200) async throws -> [CRMChange] {
        try await harness.apply(events, batch: batch).filter(\.isNew).compactMap(\.effect)
    }

    /// "customer|merchant|currency" → figures, from crm_balances.
    func figures() async throws -> [String: Figures] {
        try await store.withConnection { db in Self.figures(db) }
    }

    static func figures(_ db: SQLiteConnection) -> [String: Figures] {
        var out: [String: Figures] = [:]
        for r in (try? db.query(
            "SELECT customer_id, merchant_id, currency, outstanding, paid, refunded, disputed FROM crm_balances")) ?? []
        {
            out[CRMStream.key(r.string(0)!, r.string(1)!, r.string(2)!)] = Figures(
                outstanding: r.int(3)!, paid: r.int(4)!, refunded: r.int(5)!, disputed: r.int(6)!)
        }
        return out
    }

    func customerJSON(_ id: String, merchant: String = "m_acme") async throws -> [String: Any]? {
        guard let d = try await store.withConnection({ db in try CustomerView.json(db, merchant: merchant, customer: id) })
        else { return nil }
        return try JSONSerialization.jsonObject(with: d) as? [String: Any]
    }

    /// Applies one event as a batch of its own, returning its change or throwing its failure
    /// (nothing of it is kept then).
    func applyOne(_ e: PaymentEvent) async throws -> CRMChange? {
        try await harness.apply([e]).first?.effect
    }

    /// The figures of one customer, merchant and currency (nil when it has none).
    func figures(_ customer: String, merchant: String = "m_acme", currency: String = "GBP") async throws -> Figures? {
        try await figures()[CRMStream.key(customer, merchant, currency)]
    }
}

/// A refund (`metadata.refund_id`), a failed refund or a reversal, as ingest sends them.
func refundEvent(
    _ id: String, refund: String, amount: Int64, payment: String = "pi_1", invoice: String? = nil,
    merchant: String = "m_acme", currency: String = "GBP", customer: String? = nil, at: String = "2026-11-24T12:00:00Z"
) -> PaymentEvent {
    crmEvent(
        id, .paymentRefunded, merchant: merchant, amount: amount, currency: currency, customer: customer, payment: payment,
        invoice: invoice, at: at, metadata: ["refund_id": refund])
}

func refundFailedEvent(
    _ id: String, refund: String, amount: Int64, payment: String = "pi_1", merchant: String = "m_acme",
    currency: String = "GBP", at: String = "2026-11-25T12:00:00Z"
) -> PaymentEvent {
    crmEvent(
        id, .refundFailed, merchant: merchant, amount: amount, currency: currency, customer: nil, payment: payment,
        at: at, metadata: ["refund_id": refund])
}

func reversedEvent(
    _ id: String, payment: String, amount: Int64, merchant: String = "m_acme", currency: String = "GBP",
    at: String = "2026-11-25T13:00:00Z"
) -> PaymentEvent {
    crmEvent(id, .paymentReversed, merchant: merchant, amount: amount, currency: currency, customer: nil, payment: payment, at: at)
}

/// The admin listener with a bearer token (nil token: no Authorization header).
func adminGET(_ url: String, token: String?) async -> (status: Int, body: String, headers: [String: String])? {
    guard let u = URL(string: url) else { return nil }
    var r = URLRequest(url: u)
    if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    guard let (data, response) = try? await URLSession.shared.data(for: r), let http = response as? HTTPURLResponse
    else { return nil }
    var h: [String: String] = [:]
    for (k, v) in http.allHeaderFields { if let k = k as? String, let v = v as? String { h[k.lowercased()] = v } }
    return (http.statusCode, String(decoding: data, as: UTF8.self), h)
}

/// The last JSON line per customer|merchant|currency of a sandbox CRM file, as figures.
func sandboxFigures(_ path: String) throws -> (figures: [String: Figures], lines: Int, versionsGrow: Bool) {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    var out: [String: Figures] = [:]
    var versions: [String: Int64] = [:]
    var n = 0
    var grow = true
    for line in text.split(separator: "\n") {
        n += 1
        let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        let k = CRMStream.key(o["customer_id"] as! String, o["merchant_id"] as! String, o["currency"] as! String)
        let v = (o["version"] as! NSNumber).int64Value
        if v <= (versions[k] ?? 0) { grow = false }
        versions[k] = v
        out[k] = Figures(
            outstanding: (o["outstanding"] as! NSNumber).int64Value, paid: (o["paid"] as! NSNumber).int64Value,
            refunded: (o["refunded"] as! NSNumber).int64Value, disputed: (o["disputed"] as! NSNumber).int64Value)
    }
    return (out, n, grow)
}
