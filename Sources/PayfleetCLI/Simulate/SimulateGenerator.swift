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
    /// `payment_intent.succeeded`, `refund.created` beside `charge.refunded`).
    public var isTwin = false
    /// What this request reports when it is not exactly the fact counted under `factID`: the
    /// other notification of the same fact, whose shape (and, for a Stripe refund, canonical
    /// id) differs. Ingest publishes whichever notification comes first.
    public var reported: PaymentEvent?
    /// An earlier request (index in the plan) that must be answered before this one is sent:
    /// the other notification of the same fact, so that which one comes first is known.
    public var waitFor: Int?

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

    /// The unique facts reported by `deliveries` (accepted ones when `accepted` is given): for
    /// a fact reported by two notifications, as the first one sent reports it (the sender
    /// holds the second until the first is answered).
    public func deliveredFacts(accepted: Set<Int>? = nil) -> [PaymentEvent] {
        var seen = Set<String>()
        var out: [PaymentEvent] = []
        for (i, d) in deliveries.enumerated() where accepted.map({ $0.contains(i) }) ?? true {
            for (k, id) in d.factIDs.enumerated() {
                guard seen.insert(id).inserted, let f = k == 0 ? (d.reported ?? facts[id]) : facts[id] else { continue }
                out.append(f)
            }
        }
        return out
    }

    /// Every canonical id this plan's requests may be answered with.
    public var allFactIDs: Set<String> {
        var ids = Set(facts.keys)
        for d in deliveries { if let r = d.reported { ids.insert(r.id) } }
        return ids
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
            case .paymentRefunded, .paymentDisputed, .disputeClosed, .refundFailed, .paymentReversed, .feeAssessed:
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
    /// Stripe charges by PaymentIntent id (refunds and disputes name the charge).
    var stripeCharges: [String: StripeCharge] = [:]
    /// Cards of Adyen payments by pspReference (later notifications repeat them).
    var adyenCards: [String: PaymentEvent.Card] = [:]
    var stripePayouts = 0
    /// Won Stripe disputes and failed Adyen refunds so far: every other won dispute returns its
    /// fee, failed refunds alternate REFUND_FAILED and REFUNDED_REVERSED.
    var stripeWins = 0
    var adyenRefundFailures = 0
    /// The payment id of the last success generated.
    var lastPayment = ""

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
            if rng.chance(0.07) {
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
        var deliveries = Array(out.prefix(count))
        // The second notification of a fact waits for the answer to the first (another body
        // reporting the same fact): which one ingest publishes is then the one sent first.
        var earlier: [String: [(index: Int, body: [UInt8])]] = [:]
        for i in deliveries.indices {
            let d = deliveries[i]
            if let j = earlier[d.factID]?.last(where: { $0.body != d.body })?.index { deliveries[i].waitFor = j }
            earlier[d.factID, default: []].append((i, d.body))
        }
        return SimPlan(deliveries: deliveries, facts: facts, reorderedStories: reordered)
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
        steps += paymentSucceeded(m, c, cust, channel, paid, invoice, t)
        let payment = lastPayment
        t = time(after: t)
        let follow = rng.int(0...99)
        if follow < 22 {
            steps += refunds(m, c, cust, channel, payment, paid, invoice, &t)
        } else if follow < 37 {
            // Stripe's dispute fee is on the dispute's balance transactions (DESIGN §5a: counted once).
            let fee: Int64 = channel == .stripe ? (["USD": 1500, "EUR": 2000, "GBP": 2000, "JPY": 2000][c.code] ?? 1500) : 0
            let withdrawal = channel == .stripe ? disputeTransaction(c, -paid, fee, payment, t) : [:]
            steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: nil, fee: fee, transactions: [withdrawal]))
            t = time(after: t)
            let outcome = rng.int(0...9)
            if outcome < 5 {
                // Won: Stripe reinstates the amount; the fee only when the reinstatement says so.
                stripeWins += channel == .stripe ? 1 : 0
                let returned: Int64 = stripeWins % 2 == 1 ? fee : 0
                let reinstatement = channel == .stripe ? disputeTransaction(c, paid, -returned, payment, t) : [:]
                steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: "won", fee: returned,
                                     transactions: [withdrawal, reinstatement]))
            } else if outcome < 8, channel != .adyen {
                steps.append(dispute(m, c, cust, channel, payment, paid, t, closed: "lost", fee: 0, transactions: [withdrawal]))
            }
        } else if follow < 47 {
            switch channel {
            case .adyen: steps.append(paymentReversed(m, c, cust, payment, paid, invoice, t))
            case .phone: steps.append(feeAssessed(m, c, payment, paid, t))
            case .stripe: break
            }
        }
        // Providers do not guarantee order: now and then the follow-up comes first.
        if steps.count >= 2, rng.chance(0.2) {
            steps.swapAt(steps.count - 1, steps.count - 2)
            reordered += 1
        }
        return steps
    }

    /// One payout of most of what one provider has cleared for the merchant; now and then
    /// the bank returns a Stripe payout (`payout.failed`).
    mutating func payout(_ m: Merchant) -> [SimDelivery] {
        var out: [SimDelivery] = []
        for c in m.currencies where out.isEmpty {
            for p in ["stripe", "phone"] where out.isEmpty {
                let key = "\(m.id)|\(c)|\(p)"
                guard let v = cleared[key], v > 0 else { continue }
                let amount = v * 6 / 10
                guard amount > 0 else { continue }
                cleared[key] = v - amount
                let t = now.addingTimeInterval(-TimeInterval(rng.int(120...900)))
                let cur = Currency(code: c)!
                if p == "stripe" {
                    let po = next("po_")
                    let fact = event(m, .payoutPaid, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t,
                                     customer: nil, payment: nil, amount: Money(value: amount, currency: cur),
                                     account: m.stripeAccount, metadata: ["payout_id": po])
                    let bank = next("ba_")
                    out.append(stripe(m, "payout.paid", fact, object: payoutObject(po, amount, c, t, bank: bank, failed: false)))
                    stripePayouts += 1
                    if stripePayouts % 3 == 1 {
                        cleared[key, default: 0] += amount
                        let later = time(after: t)
                        let failed = event(m, .payoutFailed, provider: "stripe", eventID: next("evt_"),
                                           factKey: "\(po):payout_failed", t: later, customer: nil, payment: nil,
                                           amount: Money(value: amount, currency: cur), account: m.stripeAccount,
                                           metadata: ["payout_id": po, "failure_code": "account_closed"])
                        out.append(stripe(m, "payout.failed", failed, object: payoutObject(po, amount, c, t, bank: bank, failed: true)))
                    }
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

    /// A canonical fact. Provider events are identified by their fact key (or event id); a
    /// canonical route's event by its source + merchant + `source.event_id` (DESIGN §3).
    func event(
        _ m: Merchant, _ type: PaymentEvent.EventType, provider: String, eventID: String, factKey: String?, t: Date,
        customer: PaymentEvent.Customer?, payment: PaymentEvent.Payment?, amount: Money, fee: Money? = nil,
        invoice: String? = nil, reference: String? = nil, account: String? = nil, metadata: [String: String] = [:]
    ) -> PaymentEvent {
        let id = provider == "stripe" || provider == "adyen"
            ? PaymentEvent.canonicalID(provider: provider, eventID: factKey ?? eventID)
            : PaymentEvent.canonicalID(source: provider, merchant: m.id, eventID: eventID)
        return PaymentEvent(
            id: id, type: type, occurredAt: t,
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
                "id": inv, "object": "invoice", "amount_due": a, "amount_paid": 0, "amount_remaining": a, "attempt_count": 0,
                "attempted": false, "auto_advance": true, "billing_reason": "manual", "collection_method": "charge_automatically",
                "created": Int64(t.timeIntervalSince1970), "currency": c.code.lowercased(), "customer": cust.id,
                "customer_email": cust.email ?? NSNull(), "customer_name": cust.name, "description": NSNull(),
                "due_date": NSNull(), "livemode": false, "metadata": [String: Any](), "status": "open", "subtotal": a, "total": a,
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
            var intent = paymentIntentObject(pi, a, c, cust, charge: next("ch_"), invoice: nil, reference: nil, t: t)
            intent["status"] = "requires_payment_method"
            intent["amount_received"] = 0
            intent["last_payment_error"] = [
                "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds.",
                "type": "card_error",
                "payment_method": ["id": next("pm_"), "object": "payment_method", "type": "card",
                                   "card": ["brand": card.brand!, "last4": card.last4!]],
            ]
            return stripe(m, "payment_intent.payment_failed", fact, object: intent)
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

    /// A Stripe charge as the webhooks of API 2024-06-20 carry it: `balance_transaction` an id,
    /// no `refunds` list; `amount_refunded` cumulative.
    struct StripeCharge {
        var id: String
        var paymentIntent: String
        var amount: Int64
        var refunded: Int64 = 0
        var card: PaymentEvent.Card
        var invoice: String?
        var reference: String?
        var balanceTransaction: String
        var paymentMethod: String
        var created: Int64
    }

    /// The success and (Stripe, now and then) its second notification; `lastPayment` is the
    /// payment id later events name.
    mutating func paymentSucceeded(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ a: Int64, _ inv: String?, _ t: Date
    ) -> [SimDelivery] {
        let money = Money(value: a, currency: c)
        let card = makeCard()
        // Webhooks carry no Stripe fee (it is on the balance transaction, not expanded); the
        // phone platform reports its 2 % in the event.
        let fee = feeFor(a, c, ch).map { Money(value: $0, currency: c) }
        if ch != .adyen { cleared["\(m.id)|\(c.code)|\(ch.rawValue)", default: 0] += a - (fee?.value ?? 0) }
        let reference = "order \(next("O-"))"
        switch ch {
        case .stripe:
            let pi = next("pi_")
            let charge = StripeCharge(
                id: next("ch_"), paymentIntent: pi, amount: a, card: card, invoice: inv, reference: reference,
                balanceTransaction: next("txn_"), paymentMethod: next("pm_"), created: Int64(t.timeIntervalSince1970))
            stripeCharges[pi] = charge
            lastPayment = pi
            // `latest_charge` is an id: the intent's own `receipt_email` is the customer's address.
            let fact = event(m, .paymentSucceeded, provider: "stripe", eventID: next("evt_"), factKey: "\(pi):succeeded", t: t,
                             customer: .init(id: cust.id, email: cust.email), payment: .init(id: pi, channel: "online"),
                             amount: money, invoice: inv, reference: reference, account: m.stripeAccount)
            var out = [stripe(m, "payment_intent.succeeded", fact,
                              object: paymentIntentObject(pi, a, c, cust, charge: charge.id, invoice: inv, reference: reference, t: t))]
            if rng.chance(0.3) {
                // Endpoints subscribed to both: charge.succeeded reports the same payment, with
                // the charge's billing details and card.
                let twinFact = event(m, .paymentSucceeded, provider: "stripe", eventID: next("evt_"), factKey: "\(pi):succeeded",
                                     t: t, customer: .init(id: cust.id, name: cust.name, email: cust.email, phone: cust.phone),
                                     payment: .init(id: pi, channel: "online", method: "card", card: card), amount: money,
                                     invoice: inv, reference: reference, account: m.stripeAccount)
                var d = stripe(m, "charge.succeeded", twinFact, object: chargeObject(charge, c, cust), record: false)
                d.isTwin = true
                d.reported = twinFact
                if rng.chance(0.3) { out.insert(d, at: 0) } else { out.append(d) }
            }
            return out
        case .adyen:
            let psp = pspReference()
            lastPayment = psp
            var metadata = ["psp_reference": psp]
            if let inv { metadata["invoice_id"] = inv }
            let fact = event(m, .paymentSucceeded, provider: "adyen", eventID: "\(psp):AUTHORISATION", factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: psp, channel: "online", method: "card", card: card), amount: money,
                             invoice: inv, reference: reference, account: m.adyenMerchantAccount, metadata: metadata)
            adyenCards[psp] = card
            return [adyen(m, "AUTHORISATION", success: true, fact, psp: psp, original: nil, cust: cust, card: card)]
        case .phone:
            let call = next("call-")
            lastPayment = call
            let fact = event(m, .paymentSucceeded, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .phone),
                             payment: .init(id: call, channel: "phone", method: "card", card: card), amount: money, fee: fee,
                             invoice: inv, reference: reference)
            return [api(fact, label: "payment.succeeded")]
        }
    }

    /// One refund (full or partial), or for Stripe now and then two partial ones of the same
    /// charge; now and then the last one fails afterwards (`refund.failed`).
    mutating func refunds(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, _ paid: Int64, _ inv: String?,
        _ t: inout Date
    ) -> [SimDelivery] {
        var amounts: [Int64]
        if ch == .stripe, paid >= 10, rng.chance(0.4) {
            let first = paid / 3
            let second = paid / 5 == first ? first - 1 : paid / 5
            amounts = [first, second]
        } else {
            amounts = [rng.chance(0.5) ? paid : max(1, paid / Int64(rng.int(2...5)))]
        }
        var out: [SimDelivery] = []
        var last = ("", "")
        for r in amounts {
            let (ds, refundID, published) = refund(m, c, cust, ch, payment, r, inv, t)
            out += ds
            last = (refundID, published)
            t = time(after: t)
        }
        if rng.chance(0.25) {
            out.append(refundFailed(m, c, cust, ch, payment, refundID: last.0, published: last.1, amounts.last!, inv, t))
            t = time(after: t)
        }
        return out
    }

    /// A refund's notification(s), the refund's id, and the name the refund is published under
    /// (`metadata.refund_id`): a Stripe `charge.refunded` carries no refund id, so the refund it
    /// reports first is named `<charge>:refunded:<amount_refunded>` (DESIGN §2, ingest).
    mutating func refund(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, _ r: Int64, _ inv: String?,
        _ t: Date
    ) -> ([SimDelivery], String, String) {
        let money = Money(value: r, currency: c)
        if ch != .adyen { cleared["\(m.id)|\(c.code)|\(ch.rawValue)", default: 0] -= r }
        switch ch {
        case .stripe:
            var charge = stripeCharges[payment]!
            let previous = charge.refunded
            charge.refunded += r
            stripeCharges[payment] = charge
            let re = next("re_")
            let chargeName = "\(charge.id):refunded:\(charge.refunded)"
            var published = chargeName
            // charge.refunded: the refund is the growth of `amount_refunded` (previous_attributes).
            let fact = event(m, .paymentRefunded, provider: "stripe", eventID: next("evt_"),
                             factKey: chargeName, t: t,
                             customer: .init(id: cust.id, name: cust.name, email: cust.email, phone: cust.phone),
                             payment: .init(id: payment, channel: "online", method: "card", card: charge.card), amount: money,
                             invoice: inv, reference: charge.reference, account: m.stripeAccount,
                             metadata: ["refund_id": chargeName])
            var out = [stripe(m, "charge.refunded", fact, object: chargeObject(charge, c, cust),
                              previous: ["amount_refunded": previous, "refunded": false])]
            if rng.chance(0.5) {
                // The same refund as refund.created: the refund object names the charge, not the
                // customer; the merchant's metadata names the invoice.
                var metadata = ["refund_id": re]
                if let inv { metadata["invoice_id"] = inv }
                let twinFact = event(m, .paymentRefunded, provider: "stripe", eventID: next("evt_"), factKey: "\(re):refund",
                                     t: t, customer: nil, payment: .init(id: payment, channel: "online"), amount: money,
                                     invoice: inv, account: m.stripeAccount, metadata: metadata)
                var d = stripe(m, "refund.created", twinFact, object: refundObject(re, charge, r, c, inv, t, status: "succeeded"),
                               record: false)
                d.factID = fact.id
                d.isTwin = true
                d.reported = twinFact
                if rng.chance(0.35) {
                    out.insert(d, at: 0)
                    published = re
                } else {
                    out.append(d)
                }
            }
            return (out, re, published)
        case .adyen:
            let psp = pspReference()
            var metadata = ["psp_reference": psp, "refund_id": psp]
            if let inv { metadata["invoice_id"] = inv }
            let card = adyenCards[payment]
            // A full refund is now and then a CANCEL_OR_REFUND that Adyen resolved as a refund.
            let cancelOrRefund = rng.chance(0.3)
            let code = cancelOrRefund ? "CANCEL_OR_REFUND" : "REFUND"
            let fact = event(m, .paymentRefunded, provider: "adyen", eventID: "\(psp):\(code)", factKey: "\(psp):REFUND", t: t,
                             customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: payment, channel: "online", method: card == nil ? nil : "card", card: card),
                             amount: money, invoice: inv, account: m.adyenMerchantAccount, metadata: metadata)
            return ([adyen(m, code, success: true, fact, psp: psp, original: payment, cust: cust, card: card,
                           extra: cancelOrRefund ? ["modification.action": "refund"] : [:])], psp, psp)
        case .phone:
            let rid = next("rf-")
            let fact = event(m, .paymentRefunded, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: canonicalCustomer(cust, .phone), payment: .init(id: payment, channel: "phone"),
                             amount: money, invoice: inv, metadata: ["refund_id": rid])
            return ([api(fact, label: "payment.refunded")], rid, rid)
        }
    }

    /// A refund that did not complete: Stripe `refund.failed`, Adyen `REFUND_FAILED` /
    /// `REFUNDED_REVERSED`, the phone platform's `refund.failed`.
    mutating func refundFailed(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, refundID: String,
        published: String? = nil, _ r: Int64, _ inv: String?, _ t: Date
    ) -> SimDelivery {
        let money = Money(value: r, currency: c)
        if ch != .adyen { cleared["\(m.id)|\(c.code)|\(ch.rawValue)", default: 0] += r }
        // The failure names the refund as it was published; Stripe's own id goes beside it.
        var metadata = ["refund_id": published ?? refundID]
        if let published, published != refundID { metadata["stripe_refund_id"] = refundID }
        if let inv { metadata["invoice_id"] = inv }
        switch ch {
        case .stripe:
            let charge = stripeCharges[payment]!
            metadata["failure_reason"] = "expired_or_canceled_card"
            let fact = event(m, .refundFailed, provider: "stripe", eventID: next("evt_"), factKey: "\(refundID):refund_failed",
                             t: t, customer: nil, payment: .init(id: payment, channel: "online"), amount: money, invoice: inv,
                             account: m.stripeAccount, metadata: metadata)
            var object = refundObject(refundID, charge, r, c, inv, t, status: "failed")
            object["failure_reason"] = "expired_or_canceled_card"
            object["failure_balance_transaction"] = next("txn_")
            return stripe(m, "refund.failed", fact, object: object)
        case .adyen:
            adyenRefundFailures += 1
            let code = adyenRefundFailures % 2 == 1 ? "REFUND_FAILED" : "REFUNDED_REVERSED"
            metadata["psp_reference"] = refundID
            let card = adyenCards[payment]
            let fact = event(m, .refundFailed, provider: "adyen", eventID: "\(refundID):\(code)",
                             factKey: "\(refundID):refund_failed", t: t, customer: canonicalCustomer(cust, .adyen),
                             payment: .init(id: payment, channel: "online", method: card == nil ? nil : "card", card: card),
                             amount: money, invoice: inv, account: m.adyenMerchantAccount, metadata: metadata)
            return adyen(m, code, success: true, fact, psp: refundID, original: payment, cust: cust, card: card)
        case .phone:
            let fact = event(m, .refundFailed, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                             customer: .init(id: cust.id), payment: .init(id: payment, channel: "phone"), amount: money,
                             invoice: inv, metadata: metadata)
            return api(fact, label: "refund.failed")
        }
    }

    /// An Adyen success that did not complete: `CAPTURE_FAILED`, or a `CANCEL_OR_REFUND` that
    /// Adyen resolved as a cancel (`modification.action: cancel`, before capture).
    mutating func paymentReversed(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ payment: String, _ a: Int64, _ inv: String?, _ t: Date
    ) -> SimDelivery {
        let psp = pspReference()
        let code = rng.chance(0.5) ? "CAPTURE_FAILED" : "CANCEL_OR_REFUND"
        var metadata = ["psp_reference": psp]
        if let inv { metadata["invoice_id"] = inv }
        let card = adyenCards[payment]
        let fact = event(m, .paymentReversed, provider: "adyen", eventID: "\(psp):\(code)", factKey: "\(payment):reversed", t: t,
                         customer: canonicalCustomer(cust, .adyen),
                         payment: .init(id: payment, channel: "online", method: card == nil ? nil : "card", card: card),
                         amount: Money(value: a, currency: c), invoice: inv, account: m.adyenMerchantAccount, metadata: metadata)
        return adyen(m, code, success: true, fact, psp: psp, original: payment, cust: cust, card: card,
                     extra: code == "CANCEL_OR_REFUND" ? ["modification.action": "cancel"] : [:])
    }

    /// A fee the phone platform learns after the payment (a scheme surcharge), on `/v1/events`.
    mutating func feeAssessed(_ m: Merchant, _ c: Currency, _ payment: String, _ paid: Int64, _ t: Date) -> SimDelivery {
        let f = max(1, paid / 100)
        cleared["\(m.id)|\(c.code)|phone", default: 0] -= f
        let fact = event(m, .feeAssessed, provider: channels.api!.source, eventID: next("pp_"), factKey: nil, t: t,
                         customer: nil, payment: .init(id: payment, channel: "phone"), amount: Money(value: f, currency: c),
                         metadata: ["fee_type": "scheme_surcharge"])
        return api(fact, label: "fee.assessed")
    }

    /// A dispute (`closed` nil) or its outcome. Stripe's carry the dispute's balance transactions
    /// (`fee` is what they charge or, negative, return); the phone platform passes on the
    /// scheme's dispute fee in `fee`.
    mutating func dispute(
        _ m: Merchant, _ c: Currency, _ cust: Customer, _ ch: Channel, _ payment: String, _ d: Int64, _ t: Date,
        closed: String?, fee: Int64, transactions: [[String: Any]]
    ) -> SimDelivery {
        let money = Money(value: d, currency: c)
        let type: PaymentEvent.EventType = closed == nil ? .paymentDisputed : .disputeClosed
        let feeMoney = fee > 0 ? Money(value: fee, currency: c) : nil
        switch ch {
        case .stripe:
            let charge = stripeCharges[payment]!
            let dp = "dp_\(payment.dropFirst(3))"
            var metadata = ["dispute_id": dp, "reason": "fraudulent"]
            if let closed { metadata["outcome"] = closed }
            let fact = event(m, type, provider: "stripe", eventID: next("evt_"), factKey: nil, t: t, customer: nil,
                             payment: .init(id: payment, channel: "online", method: "card", card: .init(brand: charge.card.brand)),
                             amount: money, fee: feeMoney, account: m.stripeAccount, metadata: metadata)
            return stripe(m, closed == nil ? "charge.dispute.created" : "charge.dispute.closed", fact, object: [
                "id": dp, "object": "dispute", "amount": d, "balance_transactions": transactions, "charge": charge.id,
                "created": charge.created + 3600, "currency": c.code.lowercased(),
                "evidence_details": ["due_by": charge.created + 86_400 * 14, "has_evidence": closed != nil, "past_due": false,
                                     "submission_count": closed == nil ? 0 : 1],
                "is_charge_refundable": false, "livemode": false, "metadata": [String: Any](), "payment_intent": payment,
                "payment_method_details": ["card": ["brand": charge.card.brand!, "case_type": "chargeback",
                                                    "network_reason_code": "10.4"], "type": "card"],
                "reason": "fraudulent", "status": closed ?? "needs_response",
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
        [
            "address": ["city": NSNull(), "country": NSNull(), "line1": NSNull(), "line2": NSNull(), "postal_code": NSNull(),
                        "state": NSNull()],
            "email": c.email ?? NSNull(), "name": c.name, "phone": c.phone ?? NSNull(),
        ]
    }

    /// A PaymentIntent of API 2024-06-20 (fields as in Stripe's published fixtures; `invoice`
    /// as that version still has it): `latest_charge` is the charge's id, not the charge.
    func paymentIntentObject(
        _ pi: String, _ a: Int64, _ c: Currency, _ cust: Customer, charge: String, invoice: String?, reference: String?, t: Date
    ) -> [String: Any] {
        [
            "id": pi, "object": "payment_intent", "amount": a, "amount_capturable": 0, "amount_details": ["tip": [String: Any]()],
            "amount_received": a, "application": NSNull(), "application_fee_amount": NSNull(),
            "automatic_payment_methods": ["enabled": true], "canceled_at": NSNull(), "cancellation_reason": NSNull(),
            "capture_method": "automatic", "confirmation_method": "automatic", "created": Int64(t.timeIntervalSince1970) - 5,
            "currency": c.code.lowercased(), "customer": cust.id, "description": reference ?? NSNull(),
            "invoice": invoice ?? NSNull(), "last_payment_error": NSNull(), "latest_charge": charge, "livemode": false,
            "metadata": [String: Any](), "next_action": NSNull(), "on_behalf_of": NSNull(), "payment_method": "pm_\(charge.dropFirst(3))",
            "payment_method_options": ["card": ["request_three_d_secure": "automatic"]], "payment_method_types": ["card"],
            "processing": NSNull(), "receipt_email": cust.email ?? NSNull(), "review": NSNull(), "setup_future_usage": NSNull(),
            "shipping": NSNull(), "source": NSNull(), "statement_descriptor": NSNull(), "statement_descriptor_suffix": NSNull(),
            "status": "succeeded", "transfer_data": NSNull(), "transfer_group": NSNull(),
        ]
    }

    /// A Charge of API 2024-06-20: `balance_transaction` an id, no `refunds` list (since
    /// 2022-11-15), `amount_refunded` cumulative.
    func chargeObject(_ ch: StripeCharge, _ c: Currency, _ cust: Customer) -> [String: Any] {
        [
            "id": ch.id, "object": "charge", "amount": ch.amount, "amount_captured": ch.amount, "amount_refunded": ch.refunded,
            "application": NSNull(), "application_fee": NSNull(), "application_fee_amount": NSNull(),
            "balance_transaction": ch.balanceTransaction, "billing_details": billingDetails(cust),
            "calculated_statement_descriptor": "PAYFLEET SANDBOX", "captured": true, "created": ch.created,
            "currency": c.code.lowercased(), "customer": cust.id, "description": ch.reference ?? NSNull(), "disputed": false,
            "failure_balance_transaction": NSNull(), "failure_code": NSNull(), "failure_message": NSNull(),
            "fraud_details": [String: Any](), "invoice": ch.invoice ?? NSNull(), "livemode": false, "metadata": [String: Any](),
            "on_behalf_of": NSNull(),
            "outcome": ["network_status": "approved_by_network", "reason": NSNull(), "risk_level": "normal",
                        "seller_message": "Payment complete.", "type": "authorized"],
            "paid": true, "payment_intent": ch.paymentIntent, "payment_method": ch.paymentMethod,
            "payment_method_details": ["card": ["brand": ch.card.brand!, "last4": ch.card.last4!, "exp_month": 8, "exp_year": 2030,
                                                "funding": "credit"], "type": "card"],
            "receipt_email": cust.email ?? NSNull(), "receipt_number": NSNull(), "refunded": ch.refunded == ch.amount,
            "review": NSNull(), "shipping": NSNull(), "source": NSNull(), "source_transfer": NSNull(),
            "statement_descriptor": NSNull(), "statement_descriptor_suffix": NSNull(), "status": "succeeded",
            "transfer_data": NSNull(), "transfer_group": NSNull(),
        ]
    }

    /// A Refund of API 2024-06-20.
    mutating func refundObject(
        _ re: String, _ ch: StripeCharge, _ r: Int64, _ c: Currency, _ inv: String?, _ t: Date, status: String
    ) -> [String: Any] {
        [
            "id": re, "object": "refund", "amount": r, "balance_transaction": next("txn_"), "charge": ch.id,
            "created": Int64(t.timeIntervalSince1970), "currency": c.code.lowercased(),
            "destination_details": ["card": ["reference_status": "pending", "type": "refund"], "type": "card"],
            "metadata": inv.map { ["invoice_id": $0] } ?? [String: String](), "payment_intent": ch.paymentIntent,
            "reason": "requested_by_customer", "receipt_number": NSNull(), "source_transfer_reversal": NSNull(),
            "status": status, "transfer_reversal": NSNull(),
        ]
    }

    /// A dispute's balance transaction: the withdrawal (negative amount, the dispute fee) or
    /// the reinstatement of a won dispute (positive amount; a negative fee returns the fee).
    mutating func disputeTransaction(_ c: Currency, _ amount: Int64, _ fee: Int64, _ payment: String, _ t: Date) -> [String: Any] {
        let created = Int64(t.timeIntervalSince1970)
        var details: [[String: Any]] = []
        if fee != 0 {
            details = [["amount": fee, "application": NSNull(), "currency": c.code.lowercased(), "description": "Dispute fee",
                        "type": "stripe_fee"]]
        }
        return [
            "id": next("txn_"), "object": "balance_transaction", "amount": amount, "available_on": created + 86_400,
            "created": created, "currency": c.code.lowercased(),
            "description": amount < 0 ? "Chargeback withdrawal for ch_\(payment.dropFirst(3))" : "Chargeback reversal for ch_\(payment.dropFirst(3))",
            "exchange_rate": NSNull(), "fee": fee, "fee_details": details, "net": amount - fee,
            "reporting_category": amount < 0 ? "dispute" : "dispute_reversal", "source": "dp_\(payment.dropFirst(3))",
            "status": "pending", "type": "adjustment",
        ]
    }

    func payoutObject(_ po: String, _ amount: Int64, _ currency: String, _ t: Date, bank: String, failed: Bool) -> [String: Any] {
        [
            "id": po, "object": "payout", "amount": amount, "application_fee": NSNull(), "application_fee_amount": NSNull(),
            "arrival_date": Int64(t.timeIntervalSince1970) + 86_400, "automatic": true, "balance_transaction": "txn_\(po.dropFirst(3))",
            "created": Int64(t.timeIntervalSince1970), "currency": currency.lowercased(), "description": "STRIPE PAYOUT",
            "destination": bank, "failure_balance_transaction": failed ? "txn_f\(po.dropFirst(3))" : NSNull(),
            "failure_code": failed ? "account_closed" : NSNull(),
            "failure_message": failed ? "The bank account has been closed." : NSNull(), "livemode": false,
            "metadata": [String: Any](), "method": "standard", "original_payout": NSNull(), "reconciliation_status": "completed",
            "reversed_by": NSNull(), "source_type": "card", "statement_descriptor": NSNull(), "status": failed ? "failed" : "paid",
            "type": "bank_account",
        ]
    }

    static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data())
    }

    mutating func stripe(
        _ m: Merchant, _ type: String, _ fact: PaymentEvent, object: [String: Any], previous: [String: Any]? = nil,
        record: Bool = true
    ) -> SimDelivery {
        if record { facts[fact.id] = fact }
        var data: [String: Any] = ["object": object]
        if let previous { data["previous_attributes"] = previous }
        var e: [String: Any] = [
            "id": fact.source.eventID, "object": "event", "api_version": "2024-06-20", "type": type, "livemode": false,
            "created": Int64(fact.occurredAt.timeIntervalSince1970), "pending_webhooks": 1,
            "data": data, "request": ["id": NSNull(), "idempotency_key": NSNull()],
        ]
        if let account = m.stripeAccount { e["account"] = account }
        return SimDelivery(route: .stripe, path: "/webhooks/stripe", body: Self.json(e), label: type, factID: fact.id)
    }

    mutating func adyen(
        _ m: Merchant, _ code: String, success: Bool, _ fact: PaymentEvent, psp: String, original: String?,
        cust: Customer, card: PaymentEvent.Card?, reason: String? = nil, extra: [String: String] = [:]
    ) -> SimDelivery {
        facts[fact.id] = fact
        var additional: [String: Any] = ["shopperReference": cust.id, "shopperName": cust.name]
        if let e = cust.email { additional["shopperEmail"] = e }
        if let card { additional["cardSummary"] = card.last4! }
        if let inv = fact.invoiceID { additional["metadata.invoice_id"] = inv }
        for (k, v) in extra { additional[k] = v }
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

    /// A canonical event as the phone platform and the billing system send it: no `id` (ingest
    /// derives it from source + merchant + `source.event_id`, DESIGN §2).
    static func canonicalBody(_ fact: PaymentEvent) -> [UInt8] {
        guard var o = (try? JSONSerialization.jsonObject(with: EventCodec.encode(fact))) as? [String: Any] else { return [] }
        o["id"] = nil
        return json(o)
    }

    mutating func api(_ fact: PaymentEvent, label: String) -> SimDelivery {
        facts[fact.id] = fact
        return SimDelivery(
            route: .api, path: "/v1/events", body: Self.canonicalBody(fact), label: label, factID: fact.id,
            messageID: fact.source.eventID)
    }

    mutating func standard(_ fact: PaymentEvent, label: String) -> SimDelivery {
        facts[fact.id] = fact
        return SimDelivery(
            route: .standard, path: "/webhooks/standard/\(fact.source.provider)", body: Self.canonicalBody(fact),
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
