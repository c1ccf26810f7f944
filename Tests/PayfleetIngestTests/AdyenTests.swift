import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import PayfleetCore
import PayfleetIngest
import Testing

@Suite struct AdyenTests {
    func post(_ client: any TestClientProtocol, _ items: [[String: Any]]) async throws -> TestResponse {
        try await client.execute(
            uri: "/webhooks/adyen", method: .post, headers: [.contentType: "application/json"],
            body: ByteBuffer(bytes: TestIngest.adyenBody(items)))
    }

    @Test func signingStringJoinsFieldsUnescapedWithEmptyAbsentFields() {
        let item = TestIngest.adyenItem(psp: "7914073381342284", code: "AUTHORISATION", reference: "order:5521:a\\b")
        #expect(AdyenHMAC.signingString(item) == "7914073381342284::AcmeLtdECOM:order:5521:a\\b:1000:EUR:AUTHORISATION:true")
    }

    @Test func matchesAdyensOwnLibrary() throws {
        let item = TestIngest.adyenItem(
            psp: "7914073381342284", code: "REFUND", original: "8313547924770610", reference: "ref:with:colons")
        let script = """
            import Adyen.util as u
            item = {"pspReference": "7914073381342284", "originalReference": "8313547924770610",
                    "merchantAccountCode": "AcmeLtdECOM", "merchantReference": "ref:with:colons",
                    "amount": {"value": 1000, "currency": "EUR"}, "eventCode": "REFUND", "success": "true"}
            print(u.generate_notification_sig(item, "\(TestIngest.adyenKey)").decode())
            """
        guard let theirs = TestIngest.python(script, needs: "Adyen") else {
            print("skipped: python3 package 'Adyen' missing (pip install Adyen)")
            return
        }
        #expect(AdyenHMAC.sign(item, keyHex: TestIngest.adyenKey) == theirs)
        #expect(AdyenHMAC.isValid(item, keyHex: TestIngest.adyenKey))
    }

    @Test func batchIsNormalizedOneEventPerItem() async throws {
        try await TestIngest.withApp { client, config in
            let items = [
                TestIngest.adyenItem(psp: "8813547924770610", code: "AUTHORISATION", value: 1999, currency: "GBP",
                                     reference: "order:5521", extra: ["metadata.invoice_id": "inv_9"]),
                TestIngest.adyenItem(psp: "8813547924770611", code: "AUTHORISATION", success: false, value: 500),
                TestIngest.adyenItem(psp: "8813547924770612", code: "REFUND", value: 700, original: "8813547924770610"),
                TestIngest.adyenItem(psp: "8813547924770613", code: "CHARGEBACK", value: 1999, currency: "GBP", original: "8813547924770610"),
                TestIngest.adyenItem(psp: "8813547924770614", code: "REPORT_AVAILABLE"),
            ]
            let r = try await post(client, items)
            #expect(r.status == .ok)
            #expect(String(buffer: r.body) == "[accepted]")
            let events = try TestIngest.outbox(config)
            try #require(events.count == 4)
            let gbp = Currency(code: "GBP")!
            #expect(events[0].type == .paymentSucceeded)
            #expect(events[0].id == PaymentEvent.canonicalID(provider: "adyen", eventID: "8813547924770610:AUTHORISATION"))
            #expect(events[0].amount == Money(value: 1999, currency: gbp))
            #expect(events[0].merchantID == "m_acme")
            #expect(events[0].reference == "order:5521")
            #expect(events[0].invoiceID == "inv_9")
            #expect(events[0].payment?.id == "8813547924770610")
            #expect(events[0].payment?.card == .init(brand: "visa", last4: "1111"))
            #expect(events[0].customer?.id == "cus_ada")
            #expect(events[1].type == .paymentFailed)
            #expect(events[2].type == .paymentRefunded)
            #expect(events[2].payment?.id == "8813547924770610")
            #expect(events[2].amount.value == 700)
            #expect(events[3].type == .paymentDisputed)
            #expect(try TestIngest.recordedCount(config) == 1)
            // Adyen retries the same batch: all duplicates, nothing new.
            #expect(try await post(client, items).status == .ok)
            #expect(try TestIngest.outbox(config).count == 4)
        }
    }

    @Test func oneBadSignatureRejectsTheWholeBatch() async throws {
        try await TestIngest.withApp { client, config in
            let good = TestIngest.adyenItem(psp: "8813547924770620", code: "AUTHORISATION")
            var bad = TestIngest.adyenItem(psp: "8813547924770621", code: "AUTHORISATION")
            bad["amount"] = ["value": 100_000, "currency": "EUR"]  // changed after signing
            let r = try await post(client, [good, bad])
            #expect(r.status == .unauthorized)
            #expect(TestIngest.errorMessage(r).contains("notificationItems[1]"))
            let wrongKey = TestIngest.adyenItem(psp: "8813547924770622", code: "AUTHORISATION", key: String(repeating: "AB", count: 32))
            #expect(try await post(client, [wrongKey]).status == .unauthorized)
            #expect(try TestIngest.outbox(config).isEmpty)
            #expect(try TestIngest.recordedCount(config) == 0)
        }
    }

    @Test func manualCaptureMakesCaptureThePayment() async throws {
        try await TestIngest.withApp(TestIngest.configuration(capture: .manual)) { client, config in
            let r = try await post(client, [
                TestIngest.adyenItem(psp: "8813547924770630", code: "AUTHORISATION"),
                TestIngest.adyenItem(psp: "8813547924770631", code: "CAPTURE", original: "8813547924770630"),
            ])
            #expect(r.status == .ok)
            let events = try TestIngest.outbox(config)
            try #require(events.count == 1)
            #expect(events[0].type == .paymentSucceeded)
            #expect(events[0].payment?.id == "8813547924770630")
            #expect(try TestIngest.recordedCount(config) == 1)
        }
    }

    @Test func luhnValidPspReferenceIsKeptAndCardNumbersElsewhereMasked() async throws {
        try await TestIngest.withApp { client, config in
            #expect(PANGuard.luhn(Array("4111111111111111".utf8).map { $0 - 48 }))
            // A 16-digit pspReference that passes Luhn is an identifier, not a card number.
            let item = TestIngest.adyenItem(
                psp: "4111111111111111", code: "AUTHORISATION", reference: "paid with 4242424242424242")
            let r = try await post(client, [item])
            #expect(r.status == .ok)
            let e = try #require(try TestIngest.outbox(config).first)
            #expect(e.payment?.id == "4111111111111111")
            #expect(e.reference == "paid with ************4242")
            #expect(try !TestIngest.outboxBodies(config)[0].contains("4242424242424242"))
        }
    }
}
