import Foundation
import Testing

@testable import PayfleetCore

/// `EventCodec.encode` writes the canonical event by hand (`EventWriter`); it must write what
/// `JSONEncoder` (the wire encoder before, sorted keys, slashes unescaped) writes: byte for byte
/// where both sort the metadata keys alike, and always the same JSON value, read back as the event.
@Suite struct EventWriterTests {
    static func parsed(_ d: Data) -> NSDictionary? { (try? JSONSerialization.jsonObject(with: d)) as? NSDictionary }

    @Test func generatedEventsAreWrittenAsJSONEncoderWritesThem() throws {
        var identical = 0
        for e in FastEventReaderTests.generated(2_000) {
            let mine = EventCodec.encode(e)
            let reference = EventCodec.encodeWithJSONEncoder(e)
            #expect(Self.parsed(mine) == Self.parsed(reference), "\(String(decoding: mine, as: UTF8.self))")
            #expect(try EventCodec.decodeWithJSONDecoder(mine) == e)
            let asciiKeys = e.metadata.keys.allSatisfy { $0.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F } }
            if asciiKeys {
                #expect(mine == reference, "\(String(decoding: mine, as: UTF8.self)) vs \(String(decoding: reference, as: UTF8.self))")
                identical += 1
            }
        }
        #expect(identical > 1_000)
    }

    /// Strings that need escapes, or look as if they might: quotes, backslashes, slashes, every
    /// control character, DEL, U+2028/2029, non-BMP, combining marks; Int64's extremes.
    @Test func awkwardStringsAndAmounts() throws {
        var tricky = ["\"", "\\", "/", "a/b", "</script>", "\u{7F}", "\u{2028}\u{2029}", "🎉", "e\u{301}", "", " "]
        tricky += (0..<0x20).map { String(UnicodeScalar(UInt8($0))) + "x" }
        for (i, s) in tricky.enumerated() {
            let cur = Currency(code: "GBP")!
            let e = PaymentEvent(
                id: "evt_\(i)", type: .paymentSucceeded, occurredAt: Date(timeIntervalSince1970: 1_700_000_000),
                receivedAt: Date(timeIntervalSince1970: 1_700_000_001), source: .init(provider: "stripe", eventID: s, account: s),
                merchantID: s, customer: .init(id: s, name: s, email: s, phone: s),
                payment: .init(id: s, channel: s, method: s, card: .init(brand: s, last4: s)),
                amount: Money(value: i % 2 == 0 ? Int64.max : Int64.min, currency: cur), fee: Money(value: 0, currency: cur),
                invoiceID: s, reference: s, metadata: ["refund_id": s, "outcome": s])
            let mine = EventCodec.encode(e)
            let reference = EventCodec.encodeWithJSONEncoder(e)
            #expect(Self.parsed(mine) != nil)
            #expect(Self.parsed(mine) == Self.parsed(reference), "\(Array(s.unicodeScalars))")
            #expect(try EventCodec.decodeWithJSONDecoder(mine) == e)
        }
    }

    /// Metadata keys of any script: the same JSON object (key order is not part of the value).
    @Test func metadataKeysOfAnyScript() throws {
        let keys = ["Z", "a", "é", "日本", "A1", "a10", "a2", "_", "🎉", "b\"q", "ä", "Ä"]
        var md: [String: String] = [:]
        for (i, k) in keys.enumerated() { md[k] = "v\(i)" }
        let e = PaymentEvent(
            id: "evt_md", type: .paymentSucceeded, occurredAt: Date(timeIntervalSince1970: 1_700_000_000),
            source: .init(provider: "phone", eventID: "1"), merchantID: "m_acme",
            amount: Money(value: 1, currency: Currency(code: "JPY")!), metadata: md)
        let mine = EventCodec.encode(e)
        #expect(Self.parsed(mine) == Self.parsed(EventCodec.encodeWithJSONEncoder(e)))
        #expect(try EventCodec.decodeWithJSONDecoder(mine).metadata == md)
    }
}
