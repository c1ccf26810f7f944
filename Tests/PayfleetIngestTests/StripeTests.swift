import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import PayfleetCore
import PayfleetIngest
import Testing

@Suite struct StripeSignatureTests {
    let body = Array(#"{"id":"evt_1","type":"payment_intent.succeeded"}"#.utf8)
    let now = Date(timeIntervalSince1970: 1_732_443_300)
    var t: Int64 { Int64(now.timeIntervalSince1970) }

    @Test func validSignatureVerifies() throws {
        let h = StripeSignature.sign(payload: body, secret: "whsec_a", timestamp: t)
        try StripeSignature.verify(header: h, payload: body, secrets: ["whsec_a"], tolerance: 300, now: now)
    }

    @Test func knownHexDigest() {
        // HMAC-SHA256("whsec_a", "1732443300.{…}") computed independently with Python's hmac module.
        let h = StripeSignature.sign(payload: Array("{}".utf8), secret: "whsec_a", timestamp: 1_732_443_300)
        #expect(h == "t=1732443300,v1=" + hmacHex(key: "whsec_a", message: "1732443300.{}"))
    }

    func hmacHex(key: String, message: String) -> String {
        TestIngest.python(
            "import hmac,hashlib;print(hmac.new(b'\(key)', b'\(message)', hashlib.sha256).hexdigest())", needs: "hmac")
            ?? ""
    }

    @Test func wrongSecretChangedByteMissingHeaderAreRejected() {
        let h = StripeSignature.sign(payload: body, secret: "whsec_other", timestamp: t)
        #expect(throws: StripeSignature.Failure.noMatch) {
            try StripeSignature.verify(header: h, payload: body, secrets: ["whsec_a"], tolerance: 300, now: now)
        }
        let good = StripeSignature.sign(payload: body, secret: "whsec_a", timestamp: t)
        var changed = body
        changed[5] ^= 1
        #expect(throws: StripeSignature.Failure.noMatch) {
            try StripeSignature.verify(header: good, payload: changed, secrets: ["whsec_a"], tolerance: 300, now: now)
        }
        #expect(throws: StripeSignature.Failure.missingHeader) {
            try StripeSignature.verify(header: nil, payload: body, secrets: ["whsec_a"], tolerance: 300, now: now)
        }
        #expect(throws: StripeSignature.Failure.malformedHeader) {
            try StripeSignature.verify(header: "v1=abcd", payload: body, secrets: ["whsec_a"], tolerance: 300, now: now)
        }
    }

    @Test func staleTimestampIsRejectedAndToleranceConfigurable() throws {
        let h = StripeSignature.sign(payload: body, secret: "whsec_a", timestamp: t - 301)
        #expect(throws: StripeSignature.Failure.stale) {
            try StripeSignature.verify(header: h, payload: body, secrets: ["whsec_a"], tolerance: 300, now: now)
        }
        try StripeSignature.verify(header: h, payload: body, secrets: ["whsec_a"], tolerance: 600, now: now)
    }

    @Test func rotatedSecretsAndSeveralV1Entries() throws {
        // Signed with the old secret while both are configured (rotation window).
        let old = StripeSignature.sign(payload: body, secret: "whsec_old", timestamp: t)
        try StripeSignature.verify(header: old, payload: body, secrets: ["whsec_new", "whsec_old"], tolerance: 300, now: now)
        // Stripe sends one v1 per active secret; only the second matches ours.
        let other = StripeSignature.sign(payload: body, secret: "whsec_unknown", timestamp: t)
        let mine = StripeSignature.sign(payload: body, secret: "whsec_new", timestamp: t)
        let v1a = other.split(separator: ",")[1]
        let v1b = mine.split(separator: ",")[1]
        try StripeSignature.verify(
            header: "t=\(t),\(v1a),\(v1b),v0=deadbeef", payload: body, secrets: ["whsec_new"], tolerance: 300, now: now)
    }

    @Test func stripesOwnLibrarySignatureIsAccepted() throws {
        let payload = #"{"id":"evt_py","object":"event"}"#
        let ts = Int64(Date().timeIntervalSince1970)
        guard let sig = TestIngest.python(
            "import stripe;print(stripe.WebhookSignature._compute_signature('\(ts).' + '\(payload)', 'whsec_py'))",
            needs: "stripe")
        else {
            print("skipped: python3 package 'stripe' missing (pip install stripe)")
            return
        }
        try StripeSignature.verify(
            header: "t=\(ts),v1=\(sig)", payload: Array(payload.utf8), secrets: ["whsec_py"], tolerance: 300)
    }
}

@Suite struct StripeWebhookTests {
    func post(_ client: any TestClientProtocol, _ body: [UInt8], headers: HTTPFields? = nil) async throws -> TestResponse {
        try await client.execute(
            uri: "/webhooks/stripe", method: .post, headers: headers ?? TestIngest.stripeHeaders(body),
            body: ByteBuffer(bytes: body))
    }

    @Test func paymentIntentSucceededIsNormalizedFieldByField() async throws {
        try await TestIngest.withApp { client, config in
            var charge = TestIngest.object("charge")
            var bt = TestIngest.object("balance_transaction")
            bt["fee"] = 62
            charge["balance_transaction"] = bt
            var pi = TestIngest.object("payment_intent")
            pi["status"] = "succeeded"
            pi["amount_received"] = 1099
            pi["customer"] = "cus_NffrFeUfNV2Hib"
            pi["metadata"] = ["invoice_id": "inv_77", "order": "5521"]
            pi["latest_charge"] = charge
            let body = TestIngest.stripeEvent(id: "evt_pi_1", type: "payment_intent.succeeded", object: pi, account: "acct_1Globex")
            let r = try await post(client, body)
            #expect(r.status == .accepted)
            let events = try TestIngest.outbox(config)
            try #require(events.count == 1)
            let e = events[0]
            #expect(TestIngest.json(r)["id"] as? String == e.id)
            #expect(TestIngest.json(r)["status"] as? String == "accepted")
            #expect(e.type == .paymentSucceeded)
            #expect(e.merchantID == "m_globex")
            #expect(e.amount == Money(value: 1099, currency: Currency(code: "USD")!))
            #expect(e.fee == Money(value: 62, currency: Currency(code: "USD")!))
            #expect(e.customer?.id == "cus_NffrFeUfNV2Hib")
            #expect(e.customer?.name == "Jenny Rosen")
            #expect(e.payment?.id == "pi_1PgafyB7WZ01zgkWSjxsAJo3")
            #expect(e.payment?.card == PaymentEvent.Card(brand: "visa", last4: "4242"))
            #expect(e.invoiceID == "inv_77")
            #expect(e.metadata["order"] == "5521")
            #expect(e.source == .init(provider: "stripe", eventID: "evt_pi_1", account: "acct_1Globex"))
            #expect(e.occurredAt == Date(timeIntervalSince1970: 1_732_443_300))
            #expect(e.id == PaymentEvent.canonicalID(provider: "stripe", eventID: "pi_1PgafyB7WZ01zgkWSjxsAJo3:succeeded"))
        }
    }

    @Test func chargeRefundedDisputeAndPayoutAreNormalized() async throws {
        try await TestIngest.withApp { client, config in
            var charge = TestIngest.object("charge")
            charge["amount_refunded"] = 100
            charge["refunded"] = true
            charge["invoice"] = "in_1Old"  // older API versions carry invoice on the charge
            charge["refunds"] = ["object": "list", "data": [TestIngest.object("refund")], "has_more": false]
            #expect(try await post(client, TestIngest.stripeEvent(id: "evt_ref", type: "charge.refunded", object: charge)).status == .accepted)
            var dispute = TestIngest.object("dispute")
            dispute["status"] = "needs_response"
            #expect(try await post(client, TestIngest.stripeEvent(id: "evt_dp", type: "charge.dispute.created", object: dispute)).status == .accepted)
            dispute["status"] = "lost"
            #expect(try await post(client, TestIngest.stripeEvent(id: "evt_dpc", type: "charge.dispute.closed", object: dispute)).status == .accepted)
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            #expect(try await post(client, TestIngest.stripeEvent(id: "evt_po", type: "payout.paid", object: payout)).status == .accepted)

            let events = try TestIngest.outbox(config)
            try #require(events.count == 4)
            let usd = Currency(code: "USD")!
            let refund = events[0]
            #expect(refund.type == .paymentRefunded)
            #expect(refund.amount == Money(value: 100, currency: usd))
            #expect(refund.payment?.id == "ch_1PgafuB7WZ01zgkWXYmPNZs8")
            #expect(refund.payment?.card?.last4 == "4242")
            #expect(refund.metadata["refund_id"] == "re_1Pgc72B7WZ01zgkWqPvrRrPE")
            #expect(refund.invoiceID == "in_1Old")
            #expect(refund.merchantID == "m_acme")
            let disputed = events[1]
            #expect(disputed.type == .paymentDisputed)
            #expect(disputed.amount == Money(value: 1000, currency: usd))
            #expect(disputed.payment?.id == "ch_1PgafuB7WZ01zgkWXYmPNZs8")
            #expect(disputed.payment?.card?.brand == "visa")
            #expect(disputed.metadata["dispute_id"] == "dp_1Pgc71B7WZ01zgkWMevJiAUx")
            let closed = events[2]
            #expect(closed.type == .disputeClosed)
            #expect(closed.metadata["outcome"] == "lost")
            let payoutEvent = events[3]
            #expect(payoutEvent.type == .payoutPaid)
            #expect(payoutEvent.amount == Money(value: 1100, currency: usd))
            #expect(payoutEvent.metadata["payout_id"] == "po_1Pgc79B7WZ01zgkWu1KToYf4")
        }
    }

    @Test func refundCreatedAndChargeRefundedOfOneRefundPublishOnce() async throws {
        try await TestIngest.withApp { client, config in
            var charge = TestIngest.object("charge")
            charge["amount_refunded"] = 100
            charge["refunds"] = ["object": "list", "data": [TestIngest.object("refund")], "has_more": false]
            let a = try await post(client, TestIngest.stripeEvent(id: "evt_a", type: "charge.refunded", object: charge))
            let b = try await post(client, TestIngest.stripeEvent(id: "evt_b", type: "refund.created", object: TestIngest.object("refund")))
            #expect(TestIngest.json(a)["id"] as? String == TestIngest.json(b)["id"] as? String)
            #expect(TestIngest.json(b)["status"] as? String == "duplicate")
            #expect(try TestIngest.outbox(config).count == 1)
        }
    }

    @Test func sameEventTwiceIsOneEventAndADuplicateAnswer() async throws {
        try await TestIngest.withApp { client, config in
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            let body = TestIngest.stripeEvent(id: "evt_twice", type: "payout.paid", object: payout)
            let first = try await post(client, body)
            let second = try await post(client, body)
            #expect(first.status == .accepted && second.status == .accepted)
            #expect(TestIngest.json(first)["status"] as? String == "accepted")
            #expect(TestIngest.json(second)["status"] as? String == "duplicate")
            #expect(TestIngest.json(first)["id"] as? String == TestIngest.json(second)["id"] as? String)
            #expect(try TestIngest.outbox(config).count == 1)
        }
    }

    @Test func badSignaturesAre401AndNothingIsKept() async throws {
        try await TestIngest.withApp { client, config in
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            let body = TestIngest.stripeEvent(id: "evt_bad", type: "payout.paid", object: payout)
            var changed = body
            changed[changed.count - 3] = UInt8(ascii: "X")
            let cases: [([UInt8], HTTPFields)] = [
                (changed, TestIngest.stripeHeaders(body)),
                (body, TestIngest.stripeHeaders(body, at: Int64(Date().timeIntervalSince1970) - 3600)),
                (body, TestIngest.stripeHeaders(body, secret: "whsec_wrong")),
                (body, [.contentType: "application/json"]),
            ]
            for (b, h) in cases {
                let r = try await post(client, b, headers: h)
                #expect(r.status == .unauthorized)
                #expect(TestIngest.errorCode(r) == "invalid_signature")
            }
            // The previous secret still verifies during rotation.
            let rotated = try await post(client, body, headers: TestIngest.stripeHeaders(body, secret: TestIngest.stripeOldSecret))
            #expect(rotated.status == .accepted)
            #expect(try TestIngest.outbox(config).count == 1)
        }
    }

    @Test func unknownTypesAreAcceptedRecordedAndNotPublished() async throws {
        try await TestIngest.withApp { client, config in
            let fixture = TestIngest.object("event")  // Stripe's own fixture: a plan.created event
            let body = TestIngest.stripeEvent(
                id: fixture["id"] as! String, type: fixture["type"] as! String,
                object: (fixture["data"] as! [String: Any])["object"] as! [String: Any])
            let r = try await post(client, body)
            #expect(r.status == .accepted)
            #expect(try TestIngest.outbox(config).isEmpty)
            #expect(try TestIngest.recordedCount(config) == 1)
            let m = try await client.execute(uri: "/metrics", method: .get)
            #expect(String(buffer: m.body).contains(#"payfleet_ingest_unmapped_total{source="stripe",type="plan.created"} 1"#))
        }
    }

    @Test func cardNumberInAStripeWebhookIsMaskedAndCounted() async throws {
        try await TestIngest.withApp { client, config in
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            payout["metadata"] = ["note": "card 4111 1111 1111 1111 used"]
            payout["description"] = "5500-0000-0000-0004"
            let r = try await post(client, TestIngest.stripeEvent(id: "evt_pan", type: "payout.paid", object: payout))
            #expect(r.status == .accepted)
            let bodies = try TestIngest.outboxBodies(config)
            try #require(bodies.count == 1)
            #expect(!bodies[0].contains("4111 1111 1111 1111"))
            #expect(!bodies[0].contains("5500-0000-0000-0004"))
            let e = try TestIngest.outbox(config)[0]
            #expect(e.metadata["note"] == "card **** **** **** 1111 used")
            #expect(e.reference == "****-****-****-0004")
            // No digits anywhere in the state directory.
            let dir = (config.statePath as NSString).deletingLastPathComponent
            for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
                let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f))
                #expect(data.range(of: Data("4111 1111 1111 1111".utf8)) == nil)
                #expect(data.range(of: Data("4111111111111111".utf8)) == nil)
            }
            let m = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(m.contains(#"payfleet_pan_redacted_total{source="stripe",field="data.object.metadata.*"} 1"#))
        }
    }

    @Test func unknownConnectAccountIs422() async throws {
        try await TestIngest.withApp { client, config in
            let r = try await post(client, TestIngest.stripeEvent(
                id: "evt_acct", type: "payout.paid", object: TestIngest.object("payout"), account: "acct_nobody"))
            #expect(r.status == .unprocessableContent)
            #expect(TestIngest.errorCode(r) == "unknown_merchant")
            #expect(try TestIngest.outbox(config).isEmpty)
        }
    }
}
