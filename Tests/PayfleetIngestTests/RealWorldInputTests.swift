import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import PayfleetCore
import PayfleetIngest
import Testing

/// What providers and integrators really send (issue 14): canonical events without `id`, Stripe
/// webhooks of API 2024-06-20 (ids, not expanded objects; no embedded refunds list; the change
/// in `previous_attributes`), dispute balance transactions, and the reversals after a success.
/// Payloads are built from Stripe's published fixtures (`Fixtures/stripe-objects.json`) and the
/// documented Adyen notification fields; expected values are the facts of each payload.
@Suite struct RealWorldInputTests {
    static let usd = Currency(code: "USD")!
    static let eur = Currency(code: "EUR")!

    func stripe(_ client: any TestClientProtocol, _ body: [UInt8]) async throws -> TestResponse {
        try await client.execute(
            uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body), body: ByteBuffer(bytes: body))
    }

    /// A Stripe event envelope with `previous_attributes`, as Stripe sends `*.updated` and `charge.refunded`.
    func stripeEvent(id: String, type: String, object: [String: Any], previous: [String: Any]? = nil) -> [UInt8] {
        var e = TestIngest.object("event")
        e["id"] = id
        e["type"] = type
        e["created"] = 1_732_443_300
        e["api_version"] = "2024-06-20"
        var data: [String: Any] = ["object": object]
        if let previous { data["previous_attributes"] = previous }
        e["data"] = data
        return Array(try! JSONSerialization.data(withJSONObject: e, options: [.sortedKeys]))
    }

    /// A Charge as webhooks of API ≥ 2022-11-15 carry it: no `refunds` list, ids for references.
    func charge(amount: Int64, refunded: Int64) -> [String: Any] {
        var c = TestIngest.object("charge")
        c.removeValue(forKey: "refunds")
        c["amount"] = amount
        c["amount_captured"] = amount
        c["captured"] = true
        c["amount_refunded"] = refunded
        c["refunded"] = refunded == amount
        c["payment_intent"] = "pi_3Real"
        c["balance_transaction"] = "txn_3Real"
        return c
    }

    func refund(id: String, amount: Int64, status: String = "succeeded") -> [String: Any] {
        var r = TestIngest.object("refund")
        r["id"] = id
        r["amount"] = amount
        r["charge"] = "ch_1PgafuB7WZ01zgkWXYmPNZs8"
        r["payment_intent"] = "pi_3Real"
        r["status"] = status
        return r
    }

    // MARK: 1. Canonical events without id

    @Test func canonicalEventsWithoutIdAreAcceptedOnBothRoutes() async throws {
        try await TestIngest.withApp { client, config in
            let api = TestIngest.canonical(eventID: "call-77", provider: "phone")
            #expect((try JSONSerialization.jsonObject(with: Data(api)) as? [String: Any])?["id"] == nil)
            var h: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(TestIngest.apiKey)"]
            h[HTTPField.Name("Idempotency-Key")!] = "k-77"
            let a = try await client.execute(uri: "/v1/events", method: .post, headers: h, body: ByteBuffer(bytes: api))
            #expect(a.status == .accepted, "\(String(buffer: a.body))")

            let bill = TestIngest.canonical(eventID: "inv-run-1", provider: "billing", type: "invoice.issued")
            let ts = Int64(Date().timeIntervalSince1970)
            let sh: HTTPFields = [
                HTTPField.Name("webhook-id")!: "msg_77", HTTPField.Name("webhook-timestamp")!: String(ts),
                HTTPField.Name("webhook-signature")!:
                    StandardWebhooks.sign(id: "msg_77", timestamp: ts, payload: bill, secret: TestIngest.standardSecret),
                .contentType: "application/json",
            ]
            let b = try await client.execute(uri: "/webhooks/standard/billing", method: .post, headers: sh, body: ByteBuffer(bytes: bill))
            #expect(b.status == .accepted, "\(String(buffer: b.body))")

            let events = try TestIngest.outbox(config)
            try #require(events.count == 2)
            #expect(TestIngest.json(a)["id"] as? String == events[0].id)
            #expect(TestIngest.json(b)["id"] as? String == events[1].id)
            #expect(events[0].source.eventID == "call-77" && events[1].source.eventID == "inv-run-1")
            let shape = try Regex("^evt_[0-9A-HJKMNP-TV-Z]{26}$")
            #expect(events.allSatisfy { $0.id.wholeMatch(of: shape) != nil })
            #expect(events[0].id != events[1].id)
        }
    }

    @Test func aSentIdIsIgnored() async throws {
        try await TestIngest.withApp { client, config in
            var h: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(TestIngest.apiKey)"]
            h[HTTPField.Name("Idempotency-Key")!] = "k-1"
            let plain = try await client.execute(
                uri: "/v1/events", method: .post, headers: h, body: ByteBuffer(bytes: TestIngest.canonical(eventID: "call-9")))
            h[HTTPField.Name("Idempotency-Key")!] = "k-2"
            let withID = try await client.execute(
                uri: "/v1/events", method: .post, headers: h,
                body: ByteBuffer(bytes: TestIngest.canonical(eventID: "call-9", id: "evt_chosen_by_client")))
            #expect(TestIngest.json(withID)["status"] as? String == "duplicate")
            #expect(TestIngest.json(withID)["id"] as? String == TestIngest.json(plain)["id"] as? String)
            #expect(try TestIngest.outbox(config).map(\.id) == [TestIngest.json(plain)["id"] as? String ?? ""])
        }
    }

    // MARK: 2. PaymentIntent receipts

    @Test func paymentIntentWithUnexpandedChargeTakesItsOwnReceiptEmail() async throws {
        try await TestIngest.withApp { client, config in
            var pi = TestIngest.object("payment_intent")
            pi["status"] = "succeeded"
            pi["amount_received"] = 1099
            pi["customer"] = "cus_NffrFeUfNV2Hib"
            pi["latest_charge"] = "ch_3Real"  // an id, as in every real webhook
            pi["receipt_email"] = "jenny.rosen@example.com"
            let r = try await stripe(client, stripeEvent(id: "evt_pi_real", type: "payment_intent.succeeded", object: pi))
            #expect(r.status == .accepted)
            let e = try #require(try TestIngest.outbox(config).first)
            #expect(e.customer?.id == "cus_NffrFeUfNV2Hib")
            #expect(e.customer?.email == "jenny.rosen@example.com")
            #expect(e.amount == Money(value: 1099, currency: Self.usd))
            #expect(e.fee == nil)  // the balance transaction is an id: the fee is not in the webhook
        }
    }

    @Test func expandedCustomerEmailIsUsedWhenTheIntentHasNoReceiptEmail() async throws {
        try await TestIngest.withApp { client, config in
            var pi = TestIngest.object("payment_intent")
            pi["status"] = "succeeded"
            pi["amount_received"] = 500
            pi["customer"] = ["id": "cus_X", "object": "customer", "email": "x@example.com", "name": "X Y"]
            pi["latest_charge"] = "ch_3Real"
            _ = try await stripe(client, stripeEvent(id: "evt_pi_cust", type: "payment_intent.succeeded", object: pi))
            #expect(try TestIngest.outbox(config).first?.customer?.email == "x@example.com")
        }
    }

    // MARK: 3. Partial refunds

    @Test func twoPartialRefundsBookFiveAndThreeNotThirteen() async throws {
        try await TestIngest.withApp { client, config in
            // 5.00 then 3.00 of a 20.00 charge: amount_refunded 500, then 800 (previously 500).
            let first = try await stripe(
                client, stripeEvent(id: "evt_r1", type: "charge.refunded", object: charge(amount: 2000, refunded: 500),
                                    previous: ["amount_refunded": 0, "refunded": false]))
            let second = try await stripe(
                client, stripeEvent(id: "evt_r2", type: "charge.refunded", object: charge(amount: 2000, refunded: 800),
                                    previous: ["amount_refunded": 500]))
            #expect(first.status == .accepted && second.status == .accepted)
            let events = try TestIngest.outbox(config)
            try #require(events.count == 2)
            #expect(events.map(\.type) == [.paymentRefunded, .paymentRefunded])
            #expect(events.map(\.amount.value) == [500, 300])
            #expect(events.map(\.amount.value).reduce(0, +) == 800)
            #expect(events.allSatisfy { $0.payment?.id == "pi_3Real" })
            // The same refunds reported by refund.created: one canonical event each, not two.
            let c1 = try await stripe(client, stripeEvent(id: "evt_rc1", type: "refund.created", object: refund(id: "re_1", amount: 500)))
            let c2 = try await stripe(client, stripeEvent(id: "evt_rc2", type: "refund.created", object: refund(id: "re_2", amount: 300)))
            #expect(TestIngest.json(c1)["status"] as? String == "duplicate")
            #expect(TestIngest.json(c2)["status"] as? String == "duplicate")
            #expect(TestIngest.json(c1)["id"] as? String == TestIngest.json(first)["id"] as? String)
            #expect(TestIngest.json(c2)["id"] as? String == TestIngest.json(second)["id"] as? String)
            // charge.refund.updated of a refund already known: still one event.
            let u = try await stripe(client, stripeEvent(id: "evt_ru1", type: "charge.refund.updated", object: refund(id: "re_1", amount: 500)))
            #expect(TestIngest.json(u)["status"] as? String == "duplicate")
            // The same webhook redelivered.
            let again = try await stripe(
                client, stripeEvent(id: "evt_r2", type: "charge.refunded", object: charge(amount: 2000, refunded: 800),
                                    previous: ["amount_refunded": 500]))
            #expect(TestIngest.json(again)["status"] as? String == "duplicate")
            #expect(try TestIngest.outbox(config).count == 2)
        }
    }

    @Test func refundCreatedFirstThenChargeRefundedIsOneEvent() async throws {
        try await TestIngest.withApp { client, config in
            let a = try await stripe(client, stripeEvent(id: "evt_rcA", type: "refund.created", object: refund(id: "re_A", amount: 700)))
            let b = try await stripe(
                client, stripeEvent(id: "evt_crA", type: "charge.refunded", object: charge(amount: 2000, refunded: 700),
                                    previous: ["amount_refunded": 0]))
            #expect(TestIngest.json(a)["status"] as? String == "accepted")
            #expect(TestIngest.json(b)["status"] as? String == "duplicate")
            #expect(TestIngest.json(a)["id"] as? String == TestIngest.json(b)["id"] as? String)
            let events = try TestIngest.outbox(config)
            #expect(events.count == 1)
            #expect(events.first?.amount.value == 700)
            #expect(events.first?.metadata["refund_id"] == "re_A")
        }
    }

    @Test func stripesOwnLibrarySignsAPartialRefund() async throws {
        let body = stripeEvent(
            id: "evt_py_refund", type: "charge.refunded", object: charge(amount: 2000, refunded: 800),
            previous: ["amount_refunded": 500])
        let ts = Int64(Date().timeIntervalSince1970)
        let b64 = Data(body).base64EncodedString()
        guard let sig = TestIngest.python(
            "import stripe, base64;print(stripe.WebhookSignature._compute_signature('\(ts).' + base64.b64decode('\(b64)').decode(), '\(TestIngest.stripeSecret)'))",
            needs: "stripe")
        else {
            print("skipped: python3 package 'stripe' missing (pip install stripe)")
            return
        }
        try await TestIngest.withApp { client, config in
            let h: HTTPFields = [HTTPField.Name("Stripe-Signature")!: "t=\(ts),v1=\(sig)", .contentType: "application/json"]
            let r = try await client.execute(uri: "/webhooks/stripe", method: .post, headers: h, body: ByteBuffer(bytes: body))
            #expect(r.status == .accepted)
            #expect(try TestIngest.outbox(config).first?.amount == Money(value: 300, currency: Self.usd))
        }
    }

    // MARK: 4. Dispute fees

    func dispute(status: String, transactions: [[String: Any]]) -> [String: Any] {
        var d = TestIngest.object("dispute")
        d["status"] = status
        d["amount"] = 1000
        d["balance_transactions"] = transactions
        return d
    }

    func bt(_ id: String, amount: Int64, fee: Int64, category: String) -> [String: Any] {
        var b = TestIngest.object("balance_transaction")
        b["id"] = id
        b["amount"] = amount
        b["fee"] = fee
        b["net"] = amount - fee
        b["currency"] = "usd"
        b["type"] = "adjustment"
        b["reporting_category"] = category
        return b
    }

    @Test func disputeFeeIsCountedOnceAndReturnedOnlyWhenItsTransactionSaysSo() async throws {
        try await TestIngest.withApp { client, config in
            let withdrawal = bt("txn_dw", amount: -1000, fee: 1500, category: "dispute")
            _ = try await stripe(client, stripeEvent(
                id: "evt_dc", type: "charge.dispute.created", object: dispute(status: "needs_response", transactions: [withdrawal])))
            _ = try await stripe(client, stripeEvent(
                id: "evt_dl", type: "charge.dispute.closed", object: dispute(status: "lost", transactions: [withdrawal])))
            var events = try TestIngest.outbox(config)
            try #require(events.count == 2)
            #expect(events[0].type == .paymentDisputed && events[0].fee == Money(value: 1500, currency: Self.usd))
            #expect(events[1].type == .disputeClosed && events[1].fee == nil)

            // A won dispute whose reinstatement returns the fee, and one whose does not.
            var won = dispute(status: "won", transactions: [withdrawal, bt("txn_rs", amount: 1000, fee: -1500, category: "dispute_reversal")])
            won["id"] = "dp_won_fee_back"
            _ = try await stripe(client, stripeEvent(id: "evt_dw1", type: "charge.dispute.closed", object: won))
            var wonKeep = dispute(status: "won", transactions: [withdrawal, bt("txn_rs2", amount: 1000, fee: 0, category: "dispute_reversal")])
            wonKeep["id"] = "dp_won_fee_kept"
            _ = try await stripe(client, stripeEvent(id: "evt_dw2", type: "charge.dispute.closed", object: wonKeep))
            events = try TestIngest.outbox(config)
            try #require(events.count == 4)
            #expect(events[2].metadata["outcome"] == "won" && events[2].fee == Money(value: 1500, currency: Self.usd))
            #expect(events[3].metadata["outcome"] == "won" && events[3].fee == nil)
        }
    }

    // MARK: 5. Reversals

    @Test func stripeFailedRefundsAndPayoutsAreReversals() async throws {
        try await TestIngest.withApp { client, config in
            let failed = refund(id: "re_F", amount: 400, status: "failed")
            let a = try await stripe(client, stripeEvent(id: "evt_rf1", type: "charge.refund.updated", object: failed,
                                                         previous: ["status": "succeeded"]))
            let b = try await stripe(client, stripeEvent(id: "evt_rf2", type: "refund.failed", object: failed))
            #expect(TestIngest.json(b)["status"] as? String == "duplicate")
            #expect(TestIngest.json(a)["id"] as? String == TestIngest.json(b)["id"] as? String)
            var payout = TestIngest.object("payout")
            payout["status"] = "failed"
            payout["failure_code"] = "account_closed"
            _ = try await stripe(client, stripeEvent(id: "evt_pof", type: "payout.failed", object: payout))
            let events = try TestIngest.outbox(config)
            try #require(events.count == 2)
            #expect(events[0].type == .refundFailed)
            #expect(events[0].amount == Money(value: 400, currency: Self.usd))
            #expect(events[0].payment?.id == "pi_3Real")
            #expect(events[0].metadata["refund_id"] == "re_F")
            #expect(events[1].type == .payoutFailed)
            #expect(events[1].amount == Money(value: 1100, currency: Self.usd))
            #expect(events[1].metadata["payout_id"] == "po_1Pgc79B7WZ01zgkWu1KToYf4")
            #expect(try TestIngest.recordedCount(config) == 0)  // nothing dropped as unmapped
        }
    }

    @Test("A failed refund names the refund as it was published: the charge's name when charge.refunded came first, its re_ id when refund.created did")
    func aFailedRefundNamesTheRefundAsPublished() async throws {
        try await TestIngest.withApp { client, config in
            let chargeID = try #require(TestIngest.object("charge")["id"] as? String)
            // charge.refunded first: no refund id on the charge (API ≥ 2022-11-15).
            _ = try await stripe(
                client, stripeEvent(id: "evt_cr1", type: "charge.refunded", object: charge(amount: 2000, refunded: 500),
                                    previous: ["amount_refunded": 0]))
            // The same refund fails later: Stripe names it re_L.
            var failed = refund(id: "re_L", amount: 500, status: "failed")
            failed["charge"] = chargeID
            _ = try await stripe(client, stripeEvent(id: "evt_rfL", type: "refund.failed", object: failed))
            // refund.created first for a second refund, then its failure.
            var second = refund(id: "re_M", amount: 300)
            second["charge"] = chargeID
            _ = try await stripe(client, stripeEvent(id: "evt_rcM", type: "refund.created", object: second))
            second["status"] = "failed"
            _ = try await stripe(client, stripeEvent(id: "evt_rfM", type: "refund.failed", object: second))
            let events = try TestIngest.outbox(config)
            try #require(events.count == 4, "\(events.map(\.type))")
            #expect(events.map(\.type) == [.paymentRefunded, .refundFailed, .paymentRefunded, .refundFailed])
            #expect(events[0].metadata["refund_id"] == "\(chargeID):refunded:500")
            #expect(events[1].metadata["refund_id"] == "\(chargeID):refunded:500")
            #expect(events[1].metadata["stripe_refund_id"] == "re_L")
            #expect(events[2].metadata["refund_id"] == "re_M")
            #expect(events[3].metadata["refund_id"] == "re_M")
            #expect(events[3].metadata["stripe_refund_id"] == nil)
            // A refund.created of re_L arriving after its failure is the refund already booked.
            var late = refund(id: "re_L", amount: 500)
            late["charge"] = chargeID
            let r = try await stripe(client, stripeEvent(id: "evt_rcL", type: "refund.created", object: late))
            #expect(TestIngest.json(r)["status"] as? String == "duplicate")
            #expect(TestIngest.json(r)["id"] as? String == events[0].id)
        }
    }

    @Test("A refund's failure before any report of the refund: the charge.refunded that reports it later takes the failure's re_ name (found by chaos: the CRM never undid such a refund)")
    func aFailureBeforeItsRefundGivesTheRefundItsName() async throws {
        try await TestIngest.withApp { client, config in
            let chargeID = try #require(TestIngest.object("charge")["id"] as? String)
            var failed = refund(id: "re_E", amount: 500, status: "failed")
            failed["charge"] = chargeID
            _ = try await stripe(client, stripeEvent(id: "evt_rfE", type: "refund.failed", object: failed))
            // A second refund of the same charge with another amount, reported only by the charge.
            _ = try await stripe(
                client, stripeEvent(id: "evt_crX", type: "charge.refunded", object: charge(amount: 2000, refunded: 300),
                                    previous: ["amount_refunded": 0]))
            _ = try await stripe(
                client, stripeEvent(id: "evt_crE", type: "charge.refunded", object: charge(amount: 2000, refunded: 800),
                                    previous: ["amount_refunded": 300]))
            // A late refund.created of re_E is the refund already booked.
            var late = refund(id: "re_E", amount: 500)
            late["charge"] = chargeID
            let r = try await stripe(client, stripeEvent(id: "evt_rcE", type: "refund.created", object: late))
            let events = try TestIngest.outbox(config)
            try #require(events.count == 3, "\(events.map(\.type))")
            #expect(events.map(\.type) == [.refundFailed, .paymentRefunded, .paymentRefunded])
            #expect(events[0].metadata["refund_id"] == "re_E")
            #expect(events[1].amount.value == 300 && events[1].metadata["refund_id"] == "\(chargeID):refunded:300")
            #expect(events[2].amount.value == 500 && events[2].metadata["refund_id"] == "re_E")
            #expect(TestIngest.json(r)["status"] as? String == "duplicate")
            #expect(TestIngest.json(r)["id"] as? String == events[2].id)
        }
    }

    func adyen(_ client: any TestClientProtocol, _ items: [[String: Any]]) async throws -> TestResponse {
        try await client.execute(
            uri: "/webhooks/adyen", method: .post, headers: [.contentType: "application/json"],
            body: ByteBuffer(bytes: TestIngest.adyenBody(items)))
    }

    @Test func adyenReversalsUndoTheirOriginals() async throws {
        try await TestIngest.withApp { client, config in
            let r = try await adyen(client, [
                TestIngest.adyenItem(psp: "PAY1", code: "AUTHORISATION", value: 5000),
                TestIngest.adyenItem(psp: "REF1", code: "REFUND", value: 2000, original: "PAY1"),
                TestIngest.adyenItem(psp: "REF1", code: "REFUND_FAILED", value: 2000, original: "PAY1"),
                TestIngest.adyenItem(psp: "REF2", code: "REFUND", value: 1000, original: "PAY1"),
                TestIngest.adyenItem(psp: "REF2", code: "REFUNDED_REVERSED", value: 1000, original: "PAY1"),
                TestIngest.adyenItem(psp: "CAP9", code: "CAPTURE_FAILED", value: 700, original: "PAY9"),
                TestIngest.adyenItem(psp: "COR1", code: "CANCEL_OR_REFUND", value: 300, original: "PAY1",
                                     extra: ["modification.action": "refund"]),
                TestIngest.adyenItem(psp: "COR2", code: "CANCEL_OR_REFUND", value: 900, original: "PAY8",
                                     extra: ["modification.action": "cancel"]),
            ])
            #expect(r.status == .ok)
            let events = try TestIngest.outbox(config)
            try #require(events.count == 8)
            #expect(events.map(\.type) == [
                .paymentSucceeded, .paymentRefunded, .refundFailed, .paymentRefunded, .refundFailed, .paymentReversed,
                .paymentRefunded, .paymentReversed,
            ])
            #expect(events[2].metadata["refund_id"] == "REF1" && events[2].payment?.id == "PAY1" && events[2].amount.value == 2000)
            #expect(events[4].metadata["refund_id"] == "REF2" && events[4].amount.value == 1000)
            #expect(events[5].payment?.id == "PAY9" && events[5].amount == Money(value: 700, currency: Self.eur))
            #expect(events[6].metadata["refund_id"] == "COR1" && events[6].payment?.id == "PAY1")
            #expect(events[7].payment?.id == "PAY8" && events[7].amount.value == 900)
        }
    }

    @Test func cancelBeforeCaptureUnderManualCaptureBooksNothing() async throws {
        try await TestIngest.withApp(TestIngest.configuration(capture: .manual)) { client, config in
            _ = try await adyen(client, [
                TestIngest.adyenItem(psp: "PAYM", code: "AUTHORISATION", value: 5000),
                TestIngest.adyenItem(psp: "CORM", code: "CANCEL_OR_REFUND", value: 5000, original: "PAYM",
                                     extra: ["modification.action": "cancel"]),
            ])
            #expect(try TestIngest.outbox(config).isEmpty)
            #expect(try TestIngest.recordedCount(config) == 2)
        }
    }
}
