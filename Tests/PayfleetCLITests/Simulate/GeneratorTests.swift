import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetIngest
import Testing

@Suite struct GeneratorTests {
    @Test func theSameSeedGivesTheSameTrafficAndAnotherSeedOther() {
        let a = SimFixtures.plan(seed: 7)
        let b = SimFixtures.plan(seed: 7)
        let c = SimFixtures.plan(seed: 8)
        #expect(a.deliveries.count == 600)
        #expect(a.deliveries == b.deliveries)
        #expect(a.facts == b.facts)
        #expect(a.deliveries != c.deliveries)
    }

    @Test("Customer emails are ASCII mailboxes (receipt-sender dead-letters SMTPUTF8 ones), names stay international")
    func emailsAreASCII() {
        let facts = SimFixtures.plan(count: 600).deliveredFacts()
        let emails = facts.compactMap { $0.customer?.email }
        #expect(!emails.isEmpty)
        #expect(emails.allSatisfy { $0.unicodeScalars.allSatisfy(\.isASCII) }, "\(emails.filter { !$0.unicodeScalars.allSatisfy(\.isASCII) }.prefix(3))")
        #expect(facts.contains { !($0.customer?.name ?? "").unicodeScalars.allSatisfy(\.isASCII) })
        #expect(SimGenerator.asciiLocalPart("Søren") == "soren" && SimGenerator.asciiLocalPart("Chloé") == "chloe")
    }

    @Test func everyKindOfTrafficIsPresent() throws {
        let plan = SimFixtures.plan(count: 600)
        let facts = plan.deliveredFacts()
        let types = Set(facts.map(\.type))
        for t in PaymentEvent.EventType.allCases where t != .settlementDayClosed {
            #expect(types.contains(t), "no \(t.rawValue)")
        }
        #expect(Set(facts.map(\.amount.currency.code)) == ["GBP", "EUR", "USD", "JPY", "BHD"])
        #expect(Set(facts.map(\.merchantID)).count == 4)
        #expect(Set(plan.deliveries.map(\.route)) == [.stripe, .adyen, .standard, .api])
        #expect(Set(facts.map(\.source.provider)) == ["stripe", "adyen", "phonepay", "billing"])
        let retries = plan.deliveries.filter(\.isRetry)
        #expect(retries.count > 10)
        // A retry repeats an earlier request byte for byte.
        for r in retries {
            #expect(plan.deliveries.contains { !$0.isRetry && $0.body == r.body && $0.factID == r.factID })
        }
        #expect(plan.deliveries.contains { $0.isTwin })
        #expect(plan.deliveries.contains { $0.route == .adyen && !$0.moreFactIDs.isEmpty })
        #expect(plan.outOfOrder > 0)
        let closed = facts.filter { $0.type == .disputeClosed }
        #expect(closed.contains { $0.metadata["outcome"] == "won" })
        #expect(closed.contains { $0.metadata["outcome"] == "lost" })
        #expect(facts.contains { $0.type == .paymentSucceeded && $0.invoiceID != nil })
        #expect(facts.contains { $0.type == .paymentRefunded && $0.invoiceID != nil })
        #expect(facts.contains { $0.type == .paymentSucceeded && $0.customer?.email == nil })
        // Reversals of each kind, through each way providers send them.
        let labels = Set(plan.deliveries.flatMap { $0.label.split(separator: "+").map(String.init) })
        for l in ["refund.created", "refund.failed", "payout.failed", "REFUND_FAILED", "REFUNDED_REVERSED", "CAPTURE_FAILED",
                  "CANCEL_OR_REFUND", "fee.assessed"] {
            #expect(labels.contains(l), "no \(l)")
        }
        #expect(facts.contains { $0.type == .refundFailed && $0.source.provider == "stripe" })
        #expect(facts.contains { $0.type == .refundFailed && $0.source.provider == "adyen" })
        #expect(facts.contains { $0.type == .refundFailed && $0.source.provider == "phonepay" })
        #expect(facts.contains { $0.type == .paymentDisputed && $0.source.provider == "stripe" && ($0.fee?.value ?? 0) > 0 })
        #expect(facts.contains { $0.type == .disputeClosed && $0.source.provider == "stripe" && ($0.fee?.value ?? 0) > 0 })
        // A refund reported twice (charge.refunded and refund.created), each order.
        let refundTwins = plan.deliveries.filter { $0.isTwin && $0.label == "refund.created" && !$0.isRetry }
        #expect(refundTwins.contains { t in plan.deliveries.firstIndex { $0.factID == t.factID } == plan.deliveries.firstIndex(of: t) })
        #expect(refundTwins.contains { t in plan.deliveries.firstIndex { $0.factID == t.factID } != plan.deliveries.firstIndex(of: t) })
        // Whichever notification of a fact comes second waits for the first one's answer.
        for (i, d) in plan.deliveries.enumerated() {
            let first = try #require(plan.deliveries.firstIndex { $0.factID == d.factID })
            if i != first, plan.deliveries[first].body != d.body { #expect(d.waitFor.map { $0 < i } == true, "\(d.label)") }
        }
    }

    /// What Stripe sends with API 2024-06-20 (DESIGN §2, issue 14): ids, not expanded objects,
    /// for `latest_charge` and `balance_transaction`; no `refunds` list on a Charge, the refund
    /// in `previous_attributes`; disputes with their balance transactions; canonical events
    /// without `id`.
    @Test func providerPayloadsHaveTheShapesProvidersSend() throws {
        let plan = SimFixtures.plan(count: 600)
        var partial = 0
        var disputesWithFees = 0
        for d in plan.deliveries {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any])
            switch d.route {
            case .stripe:
                let data = try #require(o["data"] as? [String: Any])
                let object = try #require(data["object"] as? [String: Any])
                #expect(o["api_version"] as? String == "2024-06-20")
                if let lc = object["latest_charge"] { #expect(lc is String, "\(d.label)") }
                if let bt = object["balance_transaction"] { #expect(bt is String, "\(d.label)") }
                #expect(object["refunds"] == nil, "\(d.label)")
                #expect(object["charges"] == nil, "\(d.label)")
                if d.label == "charge.refunded" {
                    let previous = try #require(data["previous_attributes"] as? [String: Any])
                    let before = try #require((previous["amount_refunded"] as? NSNumber)?.int64Value)
                    let after = try #require((object["amount_refunded"] as? NSNumber)?.int64Value)
                    let amount = try #require((object["amount"] as? NSNumber)?.int64Value)
                    #expect(after > before && after <= amount)
                    if before > 0 || after < amount { partial += 1 }
                    // The fact counted is the growth of amount_refunded.
                    #expect(plan.facts[d.factID]?.amount.value == after - before)
                }
                if d.label.hasPrefix("charge.dispute.") {
                    let bts = try #require(object["balance_transactions"] as? [[String: Any]])
                    #expect(!bts.isEmpty)
                    let fee = bts.compactMap { ($0["fee"] as? NSNumber)?.int64Value }.filter { $0 > 0 }.reduce(0, +)
                    if d.label == "charge.dispute.created" {
                        #expect(plan.facts[d.factID]?.fee?.value == (fee > 0 ? fee : nil))
                        if fee > 0 { disputesWithFees += 1 }
                    }
                }
            case .standard, .api:
                #expect(o["id"] == nil, "\(d.label)")
                #expect(o["schema"] as? String == PaymentEvent.schemaV1)
            case .adyen:
                break
            }
        }
        #expect(partial > 0)
        #expect(disputesWithFees > 0)
    }

    /// Every field of every Stripe object the simulator sends is a field of that object in
    /// Stripe's published fixtures (`invoice` on Charge and PaymentIntent, and a failed
    /// refund's `failure_*`, are fields of API 2024-06-20 the newer fixtures no longer show).
    @Test(.enabled(if: SimFixtures.stripeFixtures != nil)) func stripeObjectsUseOnlyStripesFields() throws {
        let fixtures = try #require(SimFixtures.stripeFixtures)
        let versionFields: Set<String> = ["invoice", "failure_reason", "failure_balance_transaction"]
        let plan = SimFixtures.plan(count: 600)
        var checked = Set<String>()
        for d in plan.deliveries where d.route == .stripe {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any])
            let event = try #require(fixtures["event"])
            #expect(Set(o.keys).subtracting(event.keys).subtracting(["account", "api_version", "created"]).isEmpty, "\(d.label)")
            let object = try #require((o["data"] as? [String: Any])?["object"] as? [String: Any])
            let kind = try #require(object["object"] as? String)
            let fixture = try #require(fixtures[kind], "\(kind)")
            let extra = Set(object.keys).subtracting(fixture.keys).subtracting(versionFields)
            #expect(extra.isEmpty, "\(d.label) \(kind): \(extra.sorted())")
            if kind == "dispute", let bts = object["balance_transactions"] as? [[String: Any]] {
                let bt = try #require(fixtures["balance_transaction"])
                for t in bts { #expect(Set(t.keys).subtracting(bt.keys).isEmpty) }
            }
            checked.insert(kind)
        }
        #expect(checked == ["payment_intent", "charge", "refund", "dispute", "payout", "invoice"])
    }

    @Test func everyRequestIsSignedAsTheProviderSignsIt() throws {
        let plan = SimFixtures.plan(count: 400)
        let now = Date()
        for d in plan.deliveries {
            let headers = Dictionary(d.headers(channels: SimFixtures.channels, now: now), uniquingKeysWith: { a, _ in a })
            switch d.route {
            case .stripe:
                try StripeSignature.verify(
                    header: headers["Stripe-Signature"], payload: d.body, secrets: ["whsec_other", SimFixtures.stripeSecret],
                    tolerance: 300, now: now)
                #expect(throws: StripeSignature.Failure.noMatch) {
                    try StripeSignature.verify(
                        header: headers["Stripe-Signature"], payload: d.body + [32], secrets: [SimFixtures.stripeSecret],
                        tolerance: 300, now: now)
                }
            case .adyen:
                let o = try #require(try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any])
                let items = try #require(o["notificationItems"] as? [[String: Any]])
                for entry in items {
                    let item = try #require(entry["NotificationRequestItem"] as? [String: Any])
                    #expect(AdyenHMAC.isValid(item, keyHex: SimFixtures.adyenKey))
                    #expect(!AdyenHMAC.isValid(item, keyHex: "00" + SimFixtures.adyenKey.dropFirst(2)))
                }
            case .standard:
                try StandardWebhooks.verify(
                    id: headers["webhook-id"], timestamp: headers["webhook-timestamp"], signature: headers["webhook-signature"],
                    payload: d.body, secrets: [SimFixtures.billingSecret], tolerance: 300, now: now)
            case .api:
                #expect(headers["Authorization"] == "Bearer \(SimFixtures.apiKey)")
                #expect(headers["Idempotency-Key"]?.isEmpty == false)
            }
        }
    }

    /// Ingest's own mappers turn each provider payload into exactly the fact the simulator
    /// counted (ids, amounts, fees, invoice, customer, payment, outcome, time).
    @Test func ingestMapsEveryRequestToTheFactTheSimulatorCounts() throws {
        let plan = SimFixtures.plan(count: 600)
        let stripe = StripeMapper(merchants: SimFixtures.merchants, defaultMerchant: nil)
        let adyen = AdyenMapper(merchants: SimFixtures.merchants, capture: .auto)
        var checked = 0
        for d in plan.deliveries {
            var mappedEvents: [PaymentEvent] = []
            switch d.route {
            case .stripe:
                let o = try #require(try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any])
                switch try stripe.map(o, receivedAt: Date()) {
                case .event(let e), .refund(let e, _): mappedEvents = [e]
                case .recordOnly:
                    Issue.record("\(d.label) not mapped")
                    continue
                }
            case .adyen:
                let o = try #require(try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any])
                let items = try #require(o["notificationItems"] as? [[String: Any]])
                for (i, entry) in items.enumerated() {
                    let item = try #require(entry["NotificationRequestItem"] as? [String: Any])
                    guard case .event(let e) = try adyen.map(item, index: i, receivedAt: Date()) else {
                        Issue.record("\(d.label) not mapped")
                        continue
                    }
                    mappedEvents.append(e)
                }
            case .standard, .api:
                // Canonical events carry no id: ingest derives it from source + merchant +
                // source.event_id (DESIGN §3).
                var e = try EventCodec.decode(Data(d.body))
                e.id = PaymentEvent.canonicalID(source: e.source.provider, merchant: e.merchantID, eventID: e.source.eventID)
                try e.validateInput(now: SimFixtures.now)
                mappedEvents = [e]
            }
            #expect(mappedEvents.count == d.factIDs.count, "\(d.label)")
            for (k, (mapped, id)) in zip(mappedEvents, d.factIDs).enumerated() {
                // A second notification reports the fact in its own shape (and, for a Stripe
                // refund, under its own id: ingest links the two and publishes the first).
                let fact = try #require(k == 0 ? (d.reported ?? plan.facts[id]) : plan.facts[id])
                try mapped.validateInput(now: SimFixtures.now)
                #expect(mapped.id == fact.id, "\(d.label)")
                #expect(mapped.type == fact.type, "\(d.label)")
                #expect(mapped.merchantID == fact.merchantID)
                #expect(mapped.amount == fact.amount, "\(d.label)")
                #expect(mapped.occurredAt == fact.occurredAt, "\(d.label)")
                #expect(mapped.payment?.id == fact.payment?.id, "\(d.label)")
                // A second notification of a payment (charge.succeeded) carries the same figures.
                #expect(mapped.fee == fact.fee, "\(d.label)")
                #expect(mapped.invoiceID == fact.invoiceID, "\(d.label)")
                #expect(mapped.customer == fact.customer, "\(d.label)")
                #expect(mapped.metadata["outcome"] == fact.metadata["outcome"], "\(d.label)")
                // A Stripe failure names Stripe's refund id here; the outbox renames it to the
                // name the refund was published under (RealWorldInputTests).
                #expect(mapped.metadata["refund_id"] == (fact.metadata["stripe_refund_id"] ?? fact.metadata["refund_id"]), "\(d.label)")
                #expect(mapped.source.provider == fact.source.provider)
            }
            checked += 1
        }
        #expect(checked == 600)
    }

    @Test func theExpectedBooksBalanceForEveryMerchantAndCurrency() {
        let plan = SimFixtures.plan(count: 800)
        let x = SimExpectation.compute(facts: plan.deliveredFacts(), merchants: SimFixtures.merchants)
        #expect(x.trialBalance.count == 4)
        for (m, byCurrency) in x.trialBalance {
            for (c, v) in byCurrency { #expect(v == 0, "\(m) \(c)") }
        }
        // Receivables equal the customers' outstanding balances, per currency.
        var receivable: [String: Int64] = [:]
        for (k, v) in x.ledger where k.account.contains(":Receivable:") { receivable[k.currency, default: 0] += v }
        var outstanding: [String: Int64] = [:]
        for (k, v) in x.customers { outstanding[k.currency, default: 0] += v.outstanding }
        #expect(receivable.filter { $0.value != 0 } == outstanding.filter { $0.value != 0 })
        #expect(!x.receipts.isEmpty)
    }
}
