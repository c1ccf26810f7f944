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

    @Test func everyKindOfTrafficIsPresent() {
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
                guard case .event(let e) = try stripe.map(o, receivedAt: Date()) else {
                    Issue.record("\(d.label) not mapped")
                    continue
                }
                mappedEvents = [e]
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
                var e = try EventCodec.decode(Data(d.body))
                e.id = PaymentEvent.canonicalID(provider: e.source.provider, eventID: e.source.eventID)
                mappedEvents = [e]
            }
            #expect(mappedEvents.count == d.factIDs.count, "\(d.label)")
            for (mapped, id) in zip(mappedEvents, d.factIDs) {
                let fact = try #require(plan.facts[id])
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
