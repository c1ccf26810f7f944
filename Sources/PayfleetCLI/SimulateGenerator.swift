import Foundation
import PayfleetCore
import PayfleetIngest

/// The simulator's generator (PayfleetCore's SplitMix64): the same seed gives the same traffic.
public typealias SimRandom = SplitMix64

extension SplitMix64 {
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &self) }
    mutating func pick<T>(_ a: [T]) -> T { a[Int.random(in: 0..<a.count, using: &self)] }
}

/// Which ways into ingest the simulator may use (from the configuration).
public struct SimChannels: Sendable {
    /// A Stripe webhook secret (the first configured one signs).
    public var stripeSecret: String?
    /// Adyen's HMAC key (hex).
    public var adyenKeyHex: String?
    /// A Standard Webhooks source and its secret: invoices from the billing system.
    public var billing: (source: String, secret: String)?
    /// The phone-payment platform's API key (plaintext), its source and the merchants it may send for.
    public var api: (key: String, source: String, merchants: Set<String>)?

    public init(
        stripeSecret: String? = nil, adyenKeyHex: String? = nil, billing: (source: String, secret: String)? = nil,
        api: (key: String, source: String, merchants: Set<String>)? = nil
    ) {
        self.stripeSecret = stripeSecret
        self.adyenKeyHex = adyenKeyHex
        self.billing = billing
        self.api = api
    }
}

/// One HTTP request to ingest. Bodies are fixed at generation; time-stamped signatures
/// (Stripe, Standard Webhooks) are made when the request is sent, as a provider's retry does.
public struct SimDelivery: Sendable, Equatable {
    public enum Route: String, Sendable { case stripe, adyen, standard, api }
    public var route: Route
    public var path: String
    public var body: [UInt8]
    /// The provider's notification type (`payment_intent.succeeded`, `AUTHORISATION`, …).
    public var label: String
    /// Canonical id of the fact this request reports (the first item of an Adyen batch).
    public var factID: String
    /// Further facts in the same request (the other items of an Adyen batch).
    public var moreFactIDs: [String] = []
    /// Every fact this request reports.
    public var factIDs: [String] { [factID] + moreFactIDs }
    /// Standard Webhooks `webhook-id` / API `Idempotency-Key`.
    public var messageID: String?
    /// A provider retry of an earlier request (same body).
    public var isRetry = false
    /// A second notification of a fact already reported (Stripe `charge.succeeded` beside
    /// `payment_intent.succeeded`).
    public var isTwin = false

    /// The request's headers, signed now.
    public func headers(channels: SimChannels, now: Date) -> [(String, String)] {
        var h = [("Content-Type", "application/json")]
        let ts = Int64(now.timeIntervalSince1970)
        switch route {
        case .stripe:
            h.append(("Stripe-Signature", StripeSignature.sign(payload: body, secret: channels.stripeSecret ?? "", timestamp: ts)))
        case .adyen:
            break  // signed per item inside the body
        case .standard:
            let id = messageID ?? factID
            h += [("webhook-id", id), ("webhook-timestamp", String(ts)),
                  ("webhook-signature", StandardWebhooks.sign(id: id, timestamp: ts, payload: body, secret: channels.billing?.secret ?? ""))]
        case .api:
            h += [("Authorization", "Bearer \(channels.api?.key ?? "")"), ("Idempotency-Key", messageID ?? factID)]
        }
        return h
    }
}

/// The generated traffic and the facts it reports.
public struct SimPlan: Sendable {
    public var deliveries: [SimDelivery]
    /// Every fact generated, by canonical id (the expectation uses those actually delivered).
    public var facts: [String: PaymentEvent]
    /// Stories whose follow-up was put before the event it follows.
    public var reorderedStories: Int

    /// The unique facts reported by `deliveries` (accepted ones when `accepted` is given).
    public func deliveredFacts(accepted: Set<Int>? = nil) -> [PaymentEvent] {
        var seen = Set<String>()
        var out: [PaymentEvent] = []
        for (i, d) in deliveries.enumerated() where accepted.map({ $0.contains(i) }) ?? true {
            for id in d.factIDs {
                guard seen.insert(id).inserted, let f = facts[id] else { continue }
                out.append(f)
            }
        }
        return out
    }

    /// Deliveries that arrive before a delivery of a fact they depend on (same payment or invoice).
    public var outOfOrder: Int {
        var firstIndex: [String: Int] = [:]
        for (i, d) in deliveries.enumerated() {
            for id in d.factIDs where firstIndex[id] == nil { firstIndex[id] = i }
        }
        var n = 0
        var predecessors: [String: Int] = [:]  // payment/invoice key → index of its founding fact
        for (id, i) in firstIndex {
            guard let f = facts[id] else { continue }
            if f.type == .paymentSucceeded, let p = f.payment?.id { predecessors["p|\(f.merchantID)|\(p)"] = i }
            if f.type == .invoiceIssued, let inv = f.invoiceID { predecessors["i|\(f.merchantID)|\(inv)"] = i }
        }
        for (id, i) in firstIndex {
            guard let f = facts[id] else { continue }
            switch f.type {
            case .paymentRefunded, .paymentDisputed, .disputeClosed:
                if let p = f.payment?.id, let j = predecessors["p|\(f.merchantID)|\(p)"], j > i { n += 1 }
            case .paymentSucceeded:
                if let inv = f.invoiceID, let j = predecessors["i|\(f.merchantID)|\(inv)"], j > i { n += 1 }
            default: break
            }
        }
        return n
    }
}

/// Builds realistic traffic: per merchant and currency, stories of invoices then payments,
/// failures, refunds, disputes (some won, some lost, some still open) and payouts, through
/// Stripe, Adyen, the phone platform (`/v1/events`) and the billing system (Standard
/// Webhooks); then provider retries (duplicates) and out-of-order deliveries.
public struct SimGenerator {
    public let merchants: [Merchant]
    public let channels: SimChannels
    public let runID: String
    public let now: Date
    var rng: SimRandom
    var serial = 0
    var facts: [String: PaymentEvent] = [:]
    /// Money cleared per merchant|currency|provider not yet paid out.
    var cleared: [String: Int64] = [:]
    var customers: [String: [Customer]] = [:]
    var reordered = 0

    struct Customer {
        var id: String
        var name: String
        var email: String?
        var phone: String?
    }

    enum Channel: String { case stripe, adyen, phone }

    public init(seed: UInt64, runID: String, now: Date, merchants: [Merchant], channels: SimChannels) {
        self.merchants = merchants
        self.channels = channels
        self.runID = runID
        self.now = Date(timeIntervalSince1970: (now.timeIntervalSince1970).rounded(.down))
        rng = SimRandom(seed: seed)
    }

    func channels(for m: Merchant) -> [Channel] {
        var out: [Channel] = []
        if m.stripeAccount != nil, channels.stripeSecret != nil { out.append(.stripe) }
        if m.adyenMerchantAccount != nil, channels.adyenKeyHex != nil { out.append(.adyen) }
        if let api = channels.api, api.merchants.contains(m.id) || api.merchants.contains("*") { out.append(.phone) }
        return out
    }

    /// Merchants the simulator can send for (a currency and at least one channel).
    public var usableMerchants: [Merchant] {
        merchants.filter { !$0.currencies.isEmpty && !channels(for: $0).isEmpty }
    }

    mutating func next(_ prefix: String) -> String {
        serial += 1
        return "\(prefix)\(runID)x\(serial)"
    }

    /// Traffic of exactly `count` requests (when `count` > 0).
    public mutating func generate(count: Int) -> SimPlan {
        let usable = usableMerchants
        guard count > 0, !usable.isEmpty else { return SimPlan(deliveries: [], facts: [:], reorderedStories: 0) }
        var base: [SimDelivery] = []
        var pairs: [(Merchant, String)] = []
        for m in usable { for c in m.currencies { pairs.append((m, c)) } }
        var i = 0
        // Adyen delivers notifications in batches: now and then two items in one request.
        func add(_ ds: [SimDelivery], _ rng: inout SimRandom) {
            for d in ds {
                if d.route == .adyen, let last = base.last, last.route == .adyen, last.moreFactIDs.isEmpty, rng.chance(0.35),
                    let merged = Self.mergeAdyen(last, d)
                {
                    base[base.count - 1] = merged
                } else {
                    base.append(d)
                }
            }
        }
        while base.count < count {
            // Every merchant and currency in turn first, then at random.
            let (m, c) = i < pairs.count ? pairs[i] : rng.pick(pairs)
            i += 1
            let s = story(m, Currency(code: c)!)
            add(s, &rng)
            if rng.chance(0.05) {
                let p = payout(rng.pick(pairs).0)
                add(p, &rng)
            }
        }
        // Provider retries: the same request again a little later.
        var out = base
        var k = 0
        while k < out.count {
            if !out[k].isRetry, rng.chance(0.08) {
                var copy = out[k]
                copy.isRetry = true
                out.insert(copy, at: min(out.count, k + rng.int(1...30)))
            }
            k += 1
        }
        return SimPlan(deliveries: Array(out.prefix(count)), facts: facts, reorderedStories: reordered)
    }

    // MARK: Stories

    mutating func customer(_ m: Merchant, _ channel: Channel) -> Customer {
        let key = "\(m.id)|\(channel.rawValue)"
        if let pool = customers[key], pool.count >= 6, rng.chance(0.7) { return rng.pick(pool) }
        let first = rng.pick(["Ada", "Grace", "Alan", "Yuki", "Fatima", "Omar", "Chloé", "Hiro", "Leila", "Jon", "Amara", "Søren"])
        let last = rng.pick(["Lovelace", "Hopper", "Turing", "Tanaka", "Al-Khalifa", "Dubois", "Okafor", "Müller", "Smith", "Sato"])
        let prefix: String
        switch channel {
        case .stripe: prefix = "cus_"
        case .adyen: prefix = "shopper-"
        case .phone: prefix = "pp-"
        }
        let id = next(prefix)
        // Names stay international; mailbox local parts are ASCII (receipt-sender does not send
        // to SMTPUTF8 addresses: it dead-letters them as InvalidAddress).
        let email = channel == .phone && rng.chance(0.3)
            ? nil : "\(Self.asciiLocalPart(first)).\(id.lowercased())@example.com"
        let phone: String?
        switch m.timeZone {
        case "Asia/Tokyo": phone = "+8190\(rng.int(1000_0000...9999_9999))"
        case "Asia/Bahrain": phone = "+9733\(rng.int(100_0000...999_9999))"
        case let tz where tz.hasPrefix("America/"): phone = "+1555\(rng.int(100_0000...999_9999))"
        default: phone = "+447700\(rng.int(900_000...900_999))"
        }
        let c = Customer(id: id, name: "\(first) \(last)", email: email, phone: channel == .adyen ? nil : phone)
        customers[key, default: []].append(c)
        return c
    }

    /// A realistic, non-round amount in minor units.
    mutating func amount(_ c: Currency) -> Int64 {
        switch c.exponent {
        case 0: return Int64(rng.int(3...600)) * 100 + Int64(rng.pick([0, 0, 50, 80]))  // ¥300 … ¥60,080
        case 3: return Int64(rng.int(1...250)) * 1000 + Int64(rng.int(0...999))  // 1.000 … 250.999 BHD
        default: return Int64(rng.int(3...900)) * 100 + Int64(rng.pick([0, 49, 95, 99, rng.int(1...98)]))
        }
    }

    /// Provider fees, integer arithmetic only: Stripe 1.5 % + fixed, the phone platform 2 %.
    func feeFor(_ a: Int64, _ c: Currency, _ channel: Channel) -> Int64? {
        switch channel {
        case .adyen: return nil  // Adyen reports fees in its settlement files, not in webhooks
        case .phone: return a * 2 / 100
        case .stripe:
            let fixed: Int64 = ["GBP": 20, "EUR": 25, "USD": 30, "JPY": 0, "BHD": 100][c.code] ?? 0
            return a * 15 / 1000 + fixed
        }
    }

    mutating func time(after t: Date) -> Date {
        min(now.addingTimeInterval(-1), t.addingTimeInterval(TimeInterval(rng.int(60...5400))))
    }

    mutating func story(_ m: Merchant, _ c: Currency) -> [SimDelivery] {
        let channel = rng.pick(channels(for: m))
        let cust = customer(m, channel)
        var t = now.addingTimeInterval(-TimeInterval(rng.int(600...8 * 3600)))
        let a = amount(c)
        var steps: [SimDelivery] = []
        let roll = rng.int(0...99)
        // An invoice first (a quarter of the stories), then its payment (or part of it).
        var invoice: String?
        if roll < 25 {
            let viaStripe = channel == .stripe && (channels.billing == nil || rng.chance(0.5))
            guard viaStripe || channels.billing != nil else { return story(m, c) }
            invoice = viaStripe ? next("in_") : next("INV-")
            steps.append(invoiceIssued(m, c, cust, invoice!, a, t, viaStripe: viaStripe))
            t = time(after: t)
            if rng.chance(0.1) { return steps }  // not paid yet
        }
        let failedFirst = roll >= 25 && roll < 40
        if failedFirst {
            steps.append(paymentFailed(m, c, cust, channel, a, t))
            t = time(after: t)
            if rng.chance(0.4) { return steps }  // the customer gave up
        }
        let paid = invoice != nil && rng.chance(0.2) ? a / 2 : a
        let (succeeded, twin, payment) = paymentSucceeded(m, c, cust, channel, paid, invoice, t)
        steps.append(succeeded)
        if let twin { steps.append(twin) }
        t = time(after: t)
        let follow = rng.int(0...99)
        if follow < 20 {
            let r = rng.chance(0.5) ? paid : max(1, paid / Int64(rng.int(2...5)))
            steps.append(refund(m, c, cust, channel, payment, r, invoice, t))
        } else if follow < 35 {
            steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: nil))
            t = time(after: t)
            let outcome = rng.int(0...9)
            if outcome < 5 {
                steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: "won"))
            } else if outcome < 8, channel != .adyen {
                steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: "lost"))
            }
        }
        // Providers do not guarantee order: now and then the follow-up comes first.
        if steps.count >= 2, rng.chance(0.2) {
            steps.swapAt(steps.count - 1, steps.count - 2)
            reordered += 1
        }
        return steps
    }

    /// One payout of most of what one provider has cleared for the merchant.
    mutating func payout(_ m: Merchant) -> [SimDelivery] {
        var out: [SimDelivery] = []
        for c in m.currencies where out.isEmpty {
            for p in ["stripe", "phone"] where out.isEmpty {
                let key = "\(m.id)|\(c)|\(p)"
                guard let v = cleared[key], v > 0 else { continue }
                let amount = v * 6 / 10
                guard amount > 0 else { continue }
                cleared[key] = v - amount
                let t = now.addingTimeInterval(-TimeInterval(rng.int(60...600)))
                let cur = Currency(code: c)!
                if p == "stripe" {
                    let po = next("po_")
                    let fact = event(m, .payoutPaid, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t,
                                     customer: nil, payment: nil, amount: Money(value: amount, currency: cur),
                                     account: m.stripeAccount, metadata: ["payout_id": po])
                    out.append(stripe(m, "payout.paid", fact, object: [
                        "id": po, "object": "payout", "amount": amount, "currency": c.lowercased(), "status": "paid",
                        "arrival_date": Int64(t.timeIntervalSince1970) + 86_400,
                    ]))
                } else {
                    let fact = event(m, .payoutPaid, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                                     customer: nil, payment: nil, amount: Money(value: amount, currency: cur))
                    out.append(api(fact, label: "payout.paid"))
                }
            }
        }
        return out
    }

    // MARK: Facts

    func event(
        _ m: Merchant, _ type: PaymentEvent.EventType, provider: String, eventID: String, factKey: String?, t: Date,
        customer: PaymentEvent.Customer?, payment: PaymentEvent.Payment?, amount: Money, fee: Money? = nil,
        invoice: String? = nil, reference: String? = nil, account: String? = nil, metadata: [String: String] = [:]
    ) -> PaymentEvent {
        PaymentEvent(
            id: PaymentEvent.canonicalID(provider: provider, eventID: factKey ?? eventID), type: type, occurredAt: t,
            source: .init(provider: provider, eventID: eventID, account: account), merchantID: m.id, customer: customer,
            payment: payment, amount: amount, fee: fee, invoiceID: invoice, reference: reference, metadata: metadata)
    }

    func canonicalCustomer(_ c: Customer, _ channel: Channel, full: Bool = true) -> PaymentEvent.Customer {
        switch channel {
        case .adyen: return .init(id: c.id, name: c.name, email: c.email)
        default: return full ? .init(id: c.id, name: c.name, email: c.email, phone: c.phone) : .init(id: c.id)
        }
    }

    mutating func makeCard() -> PaymentEvent.Card {
        .init(brand: rng.pick(["visa", "mastercard", "amex"]), last4: rng.pick(["4242", "4444", "0005", "1881", "5100"]))
    }

    mutating func invoiceIssued(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ inv: String, _ a: Int64, _ t: Date, viaStripe: Bool
    ) -> SimDelivery {
        let money = Money(value: a, currency: c)
        if viaStripe {
            let fact = event(m, .invoiceIssued, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t,
                             customer: .init(id: cust.id), payment: nil, amount: money, invoice: inv, account: m.stripeAccount)
            return stripe(m, "invoice.finalized", fact, object: [
                "id": inv, "object": "invoice", "amount_due": a, "currency": c.code.lowercased(), "customer": cust.id,
                "status": "open",
            ])
        }
        let billing = channels.billing!
        let fact = event(m, .invoiceIssued, provider: billing.source, eventID: next("bill_"), factKey: nil, t: t,
                         customer: .init(id: cust.id, name: cust.name, email: cust.email), payment: nil, amount: money,
                         invoice: inv, reference: "invoice \(inv)")
        return standard(fact, label: "invoice.issued")
    }

    mutating func paymentFailed(_ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ a: Int64, _ t: Date)
        -> SimDelivery
    {
        let money = Money(value: a, currency: c)
        let card = makeCard()
        switch ch {
        case .stripe:
            let pi = next("pi_")
            let fact = event(m, .paymentFailed, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t,
                             customer: .init(id: cust.id), payment: .init(id: pi, channel: "online", method: "card", card: card),
                             amount: money, account: m.stripeAccount, metadata: ["failure_code": "card_declined"])
            return stripe(m, "payment_intent.payment_failed", fact, object: [
                "id": pi, "object": "payment_intent", "amount": a, "currency": c.code.lowercased(), "customer": cust.id,
                "status": "requires_payment_method",
                "last_payment_error": ["code": "card_declined", "payment_method": ["card": ["brand": card.brand!, "last4": card.last4!]]],
            ])
        case .adyen:
            let psp = pspReference()
            let fact = event(m, .paymentFailed, provider: "adyen", eventID: "\(psp):AUTHORISATION", factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: psp, channel: "online", method: "card", card: card), amount: money,
                             account: m.adyenMerchantAccount, metadata: ["psp_reference": psp, "reason": "Refused"])
            return adyen(m, "AUTHORISATION", success: false, fact, psp: psp, original: nil, cust: cust, card: card, reason: "Refused")
        case .phone:
            let fact = event(m, .paymentFailed, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .phone),
                             payment: .init(id: next("call-"), channel: "phone", method: "card", card: card), amount: money,
                             metadata: ["failure_code": "do_not_honor"])
            return api(fact, label: "payment.failed")
        }
    }

    /// The success, a second notification of it (Stripe), and the payment id later events name.
    mutating func paymentSucceeded(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ a: Int64, _ inv: String?, _ t: Date
    ) -> (SimDelivery, SimDelivery?, String) {
        let money = Money(value: a, currency: c)
        let card = makeCard()
        let fee = feeFor(a, c, ch).map { Money(value: $0, currency: c) }
        if ch != .adyen { cleared["\(m.id)|\(c.code)|\(ch.rawValue)", default: 0] += a - (fee?.value ?? 0) }
        let reference = "order \(next("O-"))"
        switch ch {
        case .stripe:
            let pi = next("pi_")
            let chID = next("ch_")
            let fact = event(m, .paymentSucceeded, provider: "stripe", eventID: next("evt_"), factKey: "\(pi):succeeded", t: t,
                             customer: canonicalCustomer(cust, .stripe),
                             payment: .init(id: pi, channel: "online", method: "card", card: card), amount: money, fee: fee,
                             invoice: inv, reference: reference, account: m.stripeAccount)
            var charge: [String: Any] = [
                "id": chID, "object": "charge", "amount": a, "amount_captured": a, "currency": c.code.lowercased(),
                "customer": cust.id, "payment_intent": pi, "description": reference, "paid": true, "status": "succeeded",
                "billing_details": billingDetails(cust),
                "payment_method_details": ["type": "card", "card": ["brand": card.brand!, "last4": card.last4!]],
                "balance_transaction": ["id": next("txn_"), "fee": fee?.value ?? 0, "currency": c.code.lowercased()],
            ]
            if let inv { charge["invoice"] = inv }
            var intent: [String: Any] = [
                "id": pi, "object": "payment_intent", "amount": a, "amount_received": a, "currency": c.code.lowercased(),
                "customer": cust.id, "description": reference, "status": "succeeded", "latest_charge": charge,
            ]
            if let inv { intent["invoice"] = inv }
            let main = stripe(m, "payment_intent.succeeded", fact, object: intent)
            var twin: SimDelivery?
            if rng.chance(0.3) {
                // Endpoints subscribed to both: charge.succeeded reports the same payment.
                let twinFact = event(m, .paymentSucceeded, provider: "stripe", eventID: next("evt_"), factKey: "\(pi):succeeded",
                                     t: t, customer: nil, payment: nil, amount: money, account: m.stripeAccount)
                var d = stripe(m, "charge.succeeded", twinFact, object: charge, record: false)
                d.isTwin = true
                twin = d
            }
            return (main, twin, pi)
        case .adyen:
            let psp = pspReference()
            var metadata = ["psp_reference": psp]
            if let inv { metadata["invoice_id"] = inv }
            let fact = event(m, .paymentSucceeded, provider: "adyen", eventID: "\(psp):AUTHORISATION", factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: psp, channel: "online", method: "card", card: card), amount: money,
                             invoice: inv, reference: reference, account: m.adyenMerchantAccount, metadata: metadata)
            return (adyen(m, "AUTHORISATION", success: true, fact, psp: psp, original: nil, cust: cust, card: card), nil, psp)
        case .phone:
            let call = next("call-")
            let fact = event(m, .paymentSucceeded, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .phone),
                             payment: .init(id: call, channel: "phone", method: "card", card: card), amount: money, fee: fee,
                             invoice: inv, reference: reference)
            return (api(fact, label: "payment.succeeded"), nil, call)
        }
    }

    mutating func refund(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, _ r: Int64, _ inv: String?,
        _ t: Date
    ) -> SimDelivery {
        let money = Money(value: r, currency: c)
        if ch != .adyen { cleared["\(m.id)|\(c.code)|\(ch.rawValue)", default: 0] -= r }
        let card = makeCard()
        switch ch {
        case .stripe:
            let re = next("re_")
            let chID = next("ch_")
            let fact = event(m, .paymentRefunded, provider: "stripe", eventID: next("evt_"), factKey: "\(re):refund", t: t,
                             customer: canonicalCustomer(cust, .stripe),
                             payment: .init(id: payment, channel: "online", method: "card", card: card), amount: money,
                             invoice: inv, account: m.stripeAccount, metadata: ["refund_id": re])
            var charge: [String: Any] = [
                "id": chID, "object": "charge", "amount": r, "amount_refunded": r, "currency": c.code.lowercased(),
                "customer": cust.id, "payment_intent": payment, "refunded": true, "billing_details": billingDetails(cust),
                "payment_method_details": ["type": "card", "card": ["brand": card.brand!, "last4": card.last4!]],
                "refunds": ["object": "list", "data": [["id": re, "object": "refund", "amount": r, "created": Int64(t.timeIntervalSince1970)]]],
            ]
            if let inv { charge["invoice"] = inv }
            return stripe(m, "charge.refunded", fact, object: charge)
        case .adyen:
            let psp = pspReference()
            var metadata = ["psp_reference": psp]
            if let inv { metadata["invoice_id"] = inv }
            let fact = event(m, .paymentRefunded, provider: "adyen", eventID: "\(psp):REFUND", factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: payment, channel: "online", method: "card", card: card), amount: money,
                             invoice: inv, account: m.adyenMerchantAccount, metadata: metadata)
            return adyen(m, "REFUND", success: true, fact, psp: psp, original: payment, cust: cust, card: card)
        case .phone:
            let fact = event(m, .paymentRefunded, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .phone), payment: .init(id: payment, channel: "phone"),
                             amount: money, invoice: inv)
            return api(fact, label: "payment.refunded")
        }
    }

    /// A dispute (`closed` nil) or its outcome.
    mutating func dispute(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, _ d: Int64, _ t: Date,
        closed: String?
    ) -> SimDelivery {
        let money = Money(value: d, currency: c)
        let type: PaymentEvent.EventType = closed == nil ? .paymentDisputed : .disputeClosed
        switch ch {
        case .stripe:
            let dp = "dp_\(payment.dropFirst(3))"
            var metadata = ["dispute_id": dp, "reason": "fraudulent"]
            if let closed { metadata["outcome"] = closed }
            let fact = event(m, type, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t, customer: nil,
                             payment: .init(id: payment, channel: "online"), amount: money, account: m.stripeAccount,
                             metadata: metadata)
            return stripe(m, closed == nil ? "charge.dispute.created" : "charge.dispute.closed", fact, object: [
                "id": dp, "object": "dispute", "amount": d, "currency": c.code.lowercased(), "charge": "ch_\(payment.dropFirst(3))",
                "payment_intent": payment, "reason": "fraudulent", "status": closed ?? "needs_response",
            ])
        case .adyen:
            let psp = pspReference()
            let code = closed == nil ? "CHARGEBACK" : "CHARGEBACK_REVERSED"
            var metadata = ["psp_reference": psp, "reason": "Fraud"]
            if closed != nil { metadata["outcome"] = "won" }
            let fact = event(m, type, provider: "adyen", eventID: "\(psp):\(code)", factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .adyen), payment: .init(id: payment, channel: "online"),
                             amount: money, account: m.adyenMerchantAccount, metadata: metadata)
            return adyen(m, code, success: true, fact, psp: psp, original: payment, cust: cust, card: nil, reason: "Fraud")
        case .phone:
            // The phone platform passes on the card scheme's dispute fee; it is not returned when won.
            let disputeFee: Int64 = closed == nil ? (["JPY": 2000, "BHD": 5000][c.code] ?? 1500) : 0
            var metadata: [String: String] = [:]
            if let closed { metadata["outcome"] = closed }
            let fact = event(m, type, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: .init(id: cust.id), payment: .init(id: payment, channel: "phone"), amount: money,
                             fee: disputeFee > 0 ? Money(value: disputeFee, currency: c) : nil, metadata: metadata)
            return api(fact, label: type.rawValue)
        }
    }

    // MARK: Payloads

    mutating func pspReference() -> String {
        // Adyen pspReferences are 16 alphanumeric characters.
        let alphabet = Array("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        return String((0..<16).map { _ in alphabet[rng.int(0...alphabet.count - 1)] })
    }

    func billingDetails(_ c: Customer) -> [String: Any] {
        var b: [String: Any] = ["name": c.name]
        if let e = c.email { b["email"] = e }
        if let p = c.phone { b["phone"] = p }
        return b
    }

    static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data())
    }

    mutating func stripe(_ m: Merchant, _ type: String, _ fact: PaymentEvent, object: [String: Any], record: Bool = true)
        -> SimDelivery
    {
        if record { facts[fact.id] = fact }
        var e: [String: Any] = [
            "id": fact.source.eventID, "object": "event", "api_version": "2024-06-20", "type": type, "livemode": false,
            "created": Int64(fact.occurredAt.timeIntervalSince1970), "pending_webhooks": 1,
            "data": ["object": object], "request": ["id": NSNull(), "idempotency_key": NSNull()],
        ]
        if let account = m.stripeAccount { e["account"] = account }
        return SimDelivery(route: .stripe, path: "/webhooks/stripe", body: Self.json(e), label: type, factID: fact.id)
    }

    mutating func adyen(
        _ m: Merchant, _ code: String, success: Bool, _ fact: PaymentEvent, psp: String, original: String?,
        cust: Customer, card: PaymentEvent.Card?, reason: String? = nil
    ) -> SimDelivery {
        facts[fact.id] = fact
        var additional: [String: Any] = ["shopperReference": cust.id, "shopperName": cust.name]
        if let e = cust.email { additional["shopperEmail"] = e }
        if let card { additional["cardSummary"] = card.last4! }
        if let inv = fact.invoiceID { additional["metadata.invoice_id"] = inv }
        var item: [String: Any] = [
            "additionalData": additional, "amount": ["value": fact.amount.value, "currency": fact.amount.currency.code],
            "eventCode": code, "eventDate": RFC3339.format(fact.occurredAt), "merchantAccountCode": m.adyenMerchantAccount!,
            "pspReference": psp, "success": success ? "true" : "false",
        ]
        if let card { item["paymentMethod"] = card.brand! }
        if let r = fact.reference { item["merchantReference"] = r }
        if let original { item["originalReference"] = original }
        if let reason { item["reason"] = reason }
        additional["hmacSignature"] = AdyenHMAC.sign(item, keyHex: channels.adyenKeyHex ?? "") ?? ""
        item["additionalData"] = additional
        let body: [String: Any] = ["live": "false", "notificationItems": [["NotificationRequestItem": item]]]
        return SimDelivery(route: .adyen, path: "/webhooks/adyen", body: Self.json(body), label: code, factID: fact.id)
    }

    /// One Adyen request carrying the items of both (each item keeps its own HMAC).
    static func mergeAdyen(_ a: SimDelivery, _ b: SimDelivery) -> SimDelivery? {
        guard let x = (try? JSONSerialization.jsonObject(with: Data(a.body))) as? [String: Any],
            let y = (try? JSONSerialization.jsonObject(with: Data(b.body))) as? [String: Any],
            let xi = x["notificationItems"] as? [Any], let yi = y["notificationItems"] as? [Any]
        else { return nil }
        var merged = x
        merged["notificationItems"] = xi + yi
        var d = a
        d.body = json(merged)
        d.label = a.label + "+" + b.label
        d.moreFactIDs = b.factIDs
        return d
    }

    mutating func api(_ fact: PaymentEvent, label: String) -> SimDelivery {
        facts[fact.id] = fact
        return SimDelivery(
            route: .api, path: "/v1/events", body: Array(EventCodec.encode(fact)), label: label, factID: fact.id,
            messageID: fact.source.eventID)
    }

    mutating func standard(_ fact: PaymentEvent, label: String) -> SimDelivery {
        facts[fact.id] = fact
        return SimDelivery(
            route: .standard, path: "/webhooks/standard/\(fact.source.provider)", body: Array(EventCodec.encode(fact)),
            label: label, factID: fact.id, messageID: "msg_\(fact.source.eventID)")
    }
}


extension SimGenerator {
    /// "Søren" → "soren", "Zoë" → "zoe": the name's letters as an ASCII mailbox local part.
    public static func asciiLocalPart(_ name: String) -> String {
        let map: [Character: String] = ["ø": "o", "æ": "ae", "å": "a", "ß": "ss", "đ": "d", "ł": "l", "œ": "oe"]
        let folded = name.lowercased().folding(options: .diacriticInsensitive, locale: nil)
        return folded.map { c in map[c] ?? String(c) }.joined().filter { $0.isASCII && ($0.isLetter || $0.isNumber) }
    }
}
