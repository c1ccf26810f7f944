import Foundation
import PayfleetCore
import Testing

struct EventTests {
    static let valid = """
        {"schema":"payfleet.event/v1","id":"evt_1","type":"payment.succeeded","occurred_at":"2026-11-24T10:15:00Z",
         "source":{"provider":"stripe","event_id":"evt_1Q"},"merchant_id":"m_acme",
         "customer":{"id":"cus_123","email":"ada@example.com"},"payment":{"id":"pi_1","card":{"brand":"visa","last4":"4242"}},
         "amount":{"value":1999,"currency":"GBP"},"fee":{"value":45,"currency":"GBP"},"invoice_id":"inv_77","metadata":{}}
        """

    @Test func decodesTheDesignExample() throws {
        let e = try EventCodec.decode(Data(Self.valid.utf8))
        #expect(e.amount == Money(value: 1999, currency: Currency(code: "GBP")!))
        #expect(e.fee?.value == 45)
        #expect(e.invoiceID == "inv_77")
        #expect(e.occurredAt == Date(timeIntervalSince1970: 1_795_515_300))
    }

    @Test func roundTrips() throws {
        let e = try EventCodec.decode(Data(Self.valid.utf8))
        #expect(try EventCodec.decode(EventCodec.encode(e)) == e)
    }

    @Test("Each class of bad input is named", arguments: [
        ("not json", "not a JSON object"),
        ("[1,2]", "not a JSON object"),
        (valid.replacingOccurrences(of: "payfleet.event/v1", with: "v0"), "schema"),
        (valid.replacingOccurrences(of: "\"GBP\"", with: "\"GBX\""), "unknown currency 'GBX'"),
        (valid.replacingOccurrences(of: "1999", with: "19.99"), "amount.value"),
        (valid.replacingOccurrences(of: "\"merchant_id\":\"m_acme\",", with: ""), "merchant_id: required field missing"),
        (valid.replacingOccurrences(of: "payment.succeeded", with: "payment.teleported"), "type"),
        (valid.replacingOccurrences(of: "2026-11-24T10:15:00Z", with: "yesterday"), "occurred_at"),
        (valid.replacingOccurrences(of: "\"fee\":{\"value\":45,\"currency\":\"GBP\"}", with: "\"fee\":{\"value\":45,\"currency\":\"EUR\"}"), "fee.currency"),
        (valid.replacingOccurrences(of: "\"value\":1999", with: "\"value\":-5"), "amount.value"),
    ])
    func badInput(body: String, expected: String) {
        do {
            _ = try EventCodec.decode(Data(body.utf8))
            Issue.record("accepted: \(body)")
        } catch {
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test func refundMustNameItsPayment() {
        let body = Self.valid.replacingOccurrences(of: "payment.succeeded", with: "payment.refunded")
            .replacingOccurrences(of: "\"id\":\"pi_1\",", with: "")
        #expect(throws: EventDecodingError.self) { try EventCodec.decode(Data(body.utf8)) }
    }

    @Test func canonicalIDsAreStableAndDistinct() {
        let a = PaymentEvent.canonicalID(provider: "stripe", eventID: "evt_1")
        #expect(a == PaymentEvent.canonicalID(provider: "stripe", eventID: "evt_1"))
        #expect(a != PaymentEvent.canonicalID(provider: "adyen", eventID: "evt_1"))
        #expect(a.hasPrefix("evt_") && a.count == 30)
    }
}

struct RFC3339Tests {
    @Test("Parses what RFC 3339 allows", arguments: [
        ("2026-11-24T10:15:00Z", 1_795_515_300.0), ("2026-11-24T10:15:00.250Z", 1_795_515_300.25),
        ("2026-11-24T11:15:00+01:00", 1_795_515_300.0), ("2026-11-24T05:15:00-05:00", 1_795_515_300.0),
        ("1970-01-01T00:00:00Z", 0), ("2024-02-29T00:00:00Z", 1_709_164_800),
    ])
    func parses(text: String, epoch: Double) {
        #expect(RFC3339.parse(text)?.timeIntervalSince1970 == epoch)
    }

    @Test("Refuses what it does not allow", arguments: [
        "2026-11-24", "2026-02-30T00:00:00Z", "2026-11-24T25:00:00Z", "2026-11-24T10:15:00", "yesterday",
        "2026-11-24T10:15:00+0100", "2026-11-24T10:15:00.Z",
    ])
    func refuses(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test func formatsUTCAndRoundTrips() {
        for t in stride(from: -86_400.0 * 400, through: 86_400.0 * 20_000, by: 86_400.0 * 37 + 3_661) {
            let d = Date(timeIntervalSince1970: t)
            #expect(RFC3339.parse(RFC3339.format(d)) == d)
        }
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1_795_515_300)) == "2026-11-24T10:15:00Z")
    }
}
