import Foundation
import PayfleetCore

/// A realistic stream of canonical events (DESIGN §2) for benchmarks: four merchants with their
/// currencies (the sandbox config's), customers with email and phone, invoices that payments
/// settle, refunds and disputes of earlier payments, fees, payouts and reversals — in an order
/// that could have happened (a refund follows its payment). Deterministic for a seed.
public struct EventMix {
    /// The sandbox merchants (config/payfleet.yaml) and the currency each charges in.
    public static let merchants: [(id: String, currencies: [String])] = [
        ("m_acme", ["GBP", "EUR"]), ("m_globex", ["USD"]), ("m_sakura", ["JPY"]), ("m_dilmun", ["BHD"]),
    ]
    /// The `merchants:` YAML for a worker's config (timezones and cut-offs as the sandbox's).
    public static let merchantsYAML = """
        merchants:
          - {id: m_acme, name: Acme Ltd, timezone: Europe/London, cutoff: "00:00", currencies: [GBP, EUR]}
          - {id: m_globex, name: Globex Inc, timezone: America/New_York, cutoff: "02:00", currencies: [USD]}
          - {id: m_sakura, name: Sakura KK, timezone: Asia/Tokyo, cutoff: "00:00", currencies: [JPY]}
          - {id: m_dilmun, name: Dilmun Trading WLL, timezone: Asia/Bahrain, cutoff: "01:00", currencies: [BHD]}
        """

    struct Paid {
        let merchant: String
        let currency: String
        let customer: Int
        let paymentID: String
        let amount: Int64
    }

    var rng: SplitMix
    let prefix: String
    var n = 0
    var paid: [Paid] = []
    var openInvoices: [(merchant: String, currency: String, customer: Int, id: String, amount: Int64)] = []
    var refunds: [(Paid, String, Int64)] = []
    let start = Date().addingTimeInterval(-3600)

    /// Customers drawn from (fewer: longer histories per customer).
    let customers: UInt64

    public init(seed: UInt64 = 1, prefix: String, customers: Int = 400) {
        rng = SplitMix(seed: seed)
        self.prefix = prefix
        self.customers = UInt64(max(1, customers))
    }

    /// The next `count` events.
    public mutating func take(_ count: Int) -> [PaymentEvent] { (0..<count).map { _ in next() } }

    public mutating func next() -> PaymentEvent {
        n += 1
        let roll = Int(rng.next() % 100)
        let m = EventMix.merchants[Int(rng.next() % UInt64(EventMix.merchants.count))]
        let currency = m.currencies[Int(rng.next() % UInt64(m.currencies.count))]
        let customer = Int(rng.next() % customers)
        switch roll {
        case 0..<10:
            let amount = amountFor(currency)
            let id = "inv_\(prefix)_\(n)"
            openInvoices.append((m.id, currency, customer, id, amount))
            return event(.invoiceIssued, m.id, currency, customer: customer, amount: amount, invoice: id)
        case 10..<62:
            // Two in five payments settle an open invoice of their customer's merchant.
            if roll < 30, let i = openInvoices.indices.first {
                let inv = openInvoices.remove(at: i)
                return payment(inv.merchant, inv.currency, inv.customer, inv.amount, invoice: inv.id)
            }
            return payment(m.id, currency, customer, amountFor(currency), invoice: nil)
        case 62..<67:
            return event(.paymentFailed, m.id, currency, customer: customer, amount: amountFor(currency), paymentID: "pi_\(prefix)_\(n)")
        case 67..<75:
            guard let p = pick() else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            let amount = max(1, p.amount / Int64(1 + rng.next() % 3))
            let refund = "re_\(prefix)_\(n)"
            refunds.append((p, refund, amount))
            return event(.paymentRefunded, p.merchant, p.currency, customer: p.customer, amount: amount,
                         paymentID: p.paymentID, metadata: ["refund_id": refund])
        case 75..<77:
            guard let p = pick() else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            return event(.paymentDisputed, p.merchant, p.currency, customer: p.customer, amount: p.amount,
                         paymentID: p.paymentID, fee: feeFor(p.currency))
        case 77..<79:
            guard let p = pick() else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            return event(.disputeClosed, p.merchant, p.currency, customer: p.customer, amount: p.amount,
                         paymentID: p.paymentID, metadata: ["outcome": rng.next() % 2 == 0 ? "won" : "lost"])
        case 79:
            guard !refunds.isEmpty else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            let (p, refund, amount) = refunds.removeLast()
            return event(.refundFailed, p.merchant, p.currency, customer: p.customer, amount: amount,
                         paymentID: p.paymentID, metadata: ["refund_id": refund])
        case 80:
            guard let p = pick() else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            return event(.paymentReversed, p.merchant, p.currency, customer: p.customer, amount: p.amount, paymentID: p.paymentID)
        case 81..<93:
            guard let p = pick() else { return payment(m.id, currency, customer, amountFor(currency), invoice: nil) }
            return event(.feeAssessed, p.merchant, p.currency, customer: nil, amount: feeFor(p.currency).value, paymentID: p.paymentID)
        case 93..<98:
            return event(.payoutPaid, m.id, currency, customer: nil, amount: amountFor(currency) * 20, paymentID: "po_\(prefix)_\(n)")
        default:
            return event(.payoutFailed, m.id, currency, customer: nil, amount: amountFor(currency) * 20, paymentID: "po_\(prefix)_\(n)")
        }
    }

    mutating func pick() -> Paid? {
        paid.isEmpty ? nil : paid[Int(rng.next() % UInt64(paid.count))]
    }

    mutating func payment(_ merchant: String, _ currency: String, _ customer: Int, _ amount: Int64, invoice: String?) -> PaymentEvent {
        let id = "pi_\(prefix)_\(n)"
        paid.append(Paid(merchant: merchant, currency: currency, customer: customer, paymentID: id, amount: amount))
        if paid.count > 5_000 { paid.removeFirst(1_000) }
        return event(.paymentSucceeded, merchant, currency, customer: customer, amount: amount, paymentID: id,
                     fee: feeFor(currency), invoice: invoice)
    }

    /// An amount in the currency's minor units: about 5–500 major units (JPY has exponent 0,
    /// BHD 3).
    mutating func amountFor(_ currency: String) -> Int64 {
        let major = Int64(5 + rng.next() % 495)
        let minor = Int64(rng.next() % 100)
        switch Currency(code: currency)!.exponent {
        case 0: return major * 100 + minor
        case 3: return major * 1000 + minor * 10
        default: return major * 100 + minor
        }
    }

    func feeFor(_ currency: String) -> Money {
        let c = Currency(code: currency)!
        return Money(value: c.exponent == 0 ? 30 : (c.exponent == 3 ? 250 : 25), currency: c)
    }

    mutating func event(
        _ type: PaymentEvent.EventType, _ merchant: String, _ currency: String, customer: Int?, amount: Int64,
        paymentID: String? = nil, fee: Money? = nil, invoice: String? = nil, metadata: [String: String] = [:]
    ) -> PaymentEvent {
        let c = Currency(code: currency)!
        let eventID = "evt_\(prefix)_\(n)"
        return PaymentEvent(
            id: PaymentEvent.canonicalID(source: "bench", merchant: merchant, eventID: eventID), type: type,
            occurredAt: start.addingTimeInterval(Double(n) / 100), receivedAt: Date(),
            source: .init(provider: "bench", eventID: eventID), merchantID: merchant,
            customer: customer.map {
                .init(id: "cus_\(merchant)_\($0)", name: "Customer \($0)", email: "customer\($0)@example.com",
                      phone: "+4479460\(String(format: "%05d", $0))")
            },
            payment: .init(id: paymentID, channel: "online", method: "card", card: .init(brand: "visa", last4: "4242")),
            amount: Money(value: amount, currency: c), fee: fee, invoiceID: invoice, metadata: metadata)
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
