import Foundation
import PayfleetCore

/// Builds canonical events for tests and benchmarks.
public enum EventFactory {
    public static let merchants = ["m_acme", "m_globex", "m_initech"]
    public static let currencies = ["GBP", "EUR", "JPY", "BHD", "USD"]

    /// The n-th event of a deterministic stream; `amount` defaults to a value derived from n.
    public static func payment(
        _ n: Int, prefix: String = "t", type: PaymentEvent.EventType = .paymentSucceeded, amount: Int64? = nil,
        currency: String? = nil, merchant: String? = nil, metadata: [String: String] = [:]
    ) -> PaymentEvent {
        let cur = Currency(code: currency ?? currencies[n % currencies.count])!
        var e = PaymentEvent(
            id: PaymentEvent.canonicalID(provider: "test", eventID: "\(prefix)-\(n)"), type: type,
            occurredAt: Date(timeIntervalSince1970: 1_764_000_000 + Double(n)), receivedAt: Date(),
            source: .init(provider: "test", eventID: "\(prefix)-\(n)", account: nil),
            merchantID: merchant ?? merchants[n % merchants.count],
            customer: .init(id: "cus_\(n % 97)", name: "Customer \(n % 97)", email: "c\(n % 97)@example.com"),
            payment: .init(id: "pi_\(prefix)_\(n)", channel: "online", method: "card", card: .init(brand: "visa", last4: "4242")),
            amount: Money(value: amount ?? Int64(100 + (n * 37) % 99_900), currency: cur),
            fee: Money(value: 20, currency: cur), metadata: metadata)
        if type == .paymentRefunded || type == .paymentDisputed { e.payment?.id = "pi_\(prefix)_orig_\(n)" }
        return e
    }

    /// A JSON body of about 500 bytes (the benchmark's message size).
    public static func body(_ event: PaymentEvent) -> [UInt8] { Array(EventCodec.encode(event)) }
}
