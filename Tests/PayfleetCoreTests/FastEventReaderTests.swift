import Foundation
import Testing

@testable import PayfleetCore

/// `FastEventReader` must read every body it accepts exactly as `JSONDecoder` does, and give up
/// (so `JSONDecoder` decides, with its error message) on everything outside its subset.
@Suite struct FastEventReaderTests {
    static func reference(_ body: [UInt8]) -> PaymentEvent? { try? EventCodec.decodeWithJSONDecoder(Data(body)) }
    static func fast(_ body: [UInt8]) -> PaymentEvent? { body.withUnsafeBytes { FastEventReader.read($0) } }

    /// Events with every optional part present or absent, odd but legal strings, all currencies
    /// of different exponents, encoded by the wire encoder.
    static func generated(_ n: Int) -> [PaymentEvent] {
        var rng = SplitMix64(seed: 42)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        let strings = ["a", "cus_123", "Zoë Ünïcode", "O'Brien & Sons", "日本語", "x/y:z", "emoji 🎉", " spaced "]
        let currencies = ["GBP", "EUR", "USD", "JPY", "BHD"]
        return (0..<n).map { i in
            let type = PaymentEvent.EventType.allCases[i % PaymentEvent.EventType.allCases.count]
            let currency = Currency(code: pick(currencies))!
            var metadata: [String: String] = [:]
            if rng.next() % 2 == 0 { metadata["refund_id"] = "re_\(i)" }
            if rng.next() % 2 == 0 { metadata["outcome"] = pick(["won", "lost"]) }
            if rng.next() % 3 == 0 { metadata[pick(strings)] = pick(strings) }
            return PaymentEvent(
                id: rng.next() % 5 == 0 ? "evt_custom_\(i)" : PaymentEvent.canonicalID(provider: "stripe", eventID: "e\(i)"),
                type: type, occurredAt: Date(timeIntervalSince1970: Double(1_700_000_000 + i * 37)),
                receivedAt: rng.next() % 2 == 0 ? Date(timeIntervalSince1970: Double(1_700_000_100 + i)) : nil,
                source: .init(provider: pick(["stripe", "adyen", "phone"]), eventID: "e\(i)", account: rng.next() % 2 == 0 ? "acct_\(i)" : nil),
                merchantID: pick(["m_acme", "m_beta", "Mérchant"]),
                customer: rng.next() % 4 == 0 ? nil : .init(
                    id: rng.next() % 3 == 0 ? nil : "cus_\(i % 7)", name: rng.next() % 2 == 0 ? pick(strings) : nil,
                    email: rng.next() % 2 == 0 ? "c\(i)@example.com" : nil, phone: rng.next() % 2 == 0 ? "+4420\(i)" : nil),
                payment: rng.next() % 4 == 0 ? nil : .init(
                    id: "pi_\(i / 3)", channel: rng.next() % 2 == 0 ? "web" : nil, method: rng.next() % 2 == 0 ? "card" : nil,
                    card: rng.next() % 2 == 0 ? .init(brand: "visa", last4: "4242") : nil),
                amount: Money(value: Int64(rng.next() % 10_000_000) - (i % 11 == 0 ? 500 : 0), currency: currency),
                fee: rng.next() % 2 == 0 ? Money(value: Int64(rng.next() % 1000), currency: currency) : nil,
                invoiceID: rng.next() % 3 == 0 ? "in_\(i)" : nil, reference: rng.next() % 4 == 0 ? pick(strings) : nil,
                metadata: metadata)
        }
    }

    @Test func generatedBodiesReadAsJSONDecoderReadsThem() throws {
        var read = 0
        for e in Self.generated(2_000) {
            let body = Array(EventCodec.encode(e))
            let expected = try #require(Self.reference(body))
            #expect(expected == e)
            // Strings with a quote or a non-escaped character the encoder escapes fall back.
            if let got = Self.fast(body) {
                #expect(got == expected)
                read += 1
            }
        }
        // Only the bodies with an escaped character (none generated here) may fall back.
        #expect(read == 2_000)
    }

    let base = #"""
        {"amount":{"currency":"GBP","value":1250},"merchant_id":"m_acme","occurred_at":"2026-11-20T10:00:00Z",
         "schema":"payfleet.event/v1","source":{"event_id":"evt_1","provider":"stripe"},"type":"payment.succeeded"}
        """#

    func variant(_ from: String, _ to: String) -> [UInt8] {
        Array(base.replacingOccurrences(of: from, with: to).utf8)
    }

    @Test func legalVariantsAgree() throws {
        let cases: [[UInt8]] = [
            Array(base.utf8),
            variant(#""type":"payment.succeeded"}"#, #""type":"payment.succeeded","id":null,"customer":null,"fee":null}"#),
            variant(#""type":"payment.succeeded"}"#, #""type" : "payment.succeeded" , "metadata" : { } , "received_at":null }"#),
            variant(#""value":1250"#, #""value":-0"#),
            variant(#""value":1250"#, #""value":0"#),
            variant(#""type":"payment.succeeded"}"#, #""type":"payment.succeeded","payment":{"card":null,"id":"pi_1","method":null}}"#),
            variant(#""type":"payment.succeeded"}"#, #""type":"payment.succeeded","customer":{"name":"Zoë 🎉","id":null}}"#),
            variant(#""type":"payment.succeeded"}"#, "\t\r\n" + #""type":"payment.succeeded"}"# + "\n"),
        ]
        for body in cases {
            let expected = try #require(Self.reference(body), "\(String(decoding: body, as: UTF8.self))")
            let got = try #require(Self.fast(body), "\(String(decoding: body, as: UTF8.self))")
            #expect(got == expected)
        }
    }

    /// Outside the subset: the fast reader gives up; `EventCodec.decode` still gives JSONDecoder's answer.
    @Test func outsideTheSubsetFallsBack() throws {
        let cases: [(String, [UInt8])] = [
            ("escape", variant("m_acme", #"m_\u0061cme"#)),
            ("escaped quote", variant("m_acme", #"m_\"acme"#)),
            ("unknown key", variant(#""type":"#, #""extra":1,"type":"#)),
            ("float amount", variant(#""value":1250"#, #""value":1250.0"#)),
            ("exponent", variant(#""value":1250"#, #""value":1.25e3"#)),
            ("leading zero", variant(#""value":1250"#, #""value":01250"#)),
            ("19 digits", variant(#""value":1250"#, #""value":1000000000000000000"#)),
            ("duplicate key", variant(#""type":"#, #""merchant_id":"m_other","type":"#)),
            ("unknown type", variant("payment.succeeded", "payment.exploded")),
            ("lower-case currency", variant("GBP", "gbp")),
            ("bad date", variant("2026-11-20T10:00:00Z", "2026-11-20")),
            ("null schema", variant(#""payfleet.event/v1""#, "null")),
            ("array", Array("[\(base)]".utf8)),
            ("trailing garbage", Array((base + "x").utf8)),
            ("invalid UTF-8", Array(base.utf8).map { $0 == UInt8(ascii: "Z") ? 0xFF : $0 }),
            ("raw control character", variant("m_acme", "m_\u{01}acme")),
            ("metadata null value", variant(#""type":"#, #""metadata":{"a":null},"type":"#)),
        ]
        for (name, body) in cases {
            #expect(Self.fast(body) == nil, "\(name)")
            let viaCodec = Result { () throws(EventDecodingError) in try EventCodec.decode(Data(body)) }
            let reference = Result { () throws(EventDecodingError) in
                let e = try EventCodec.decodeWithJSONDecoder(Data(body))
                do { try e.validate() } catch let v { throw EventDecodingError(message: "\(v)") }
                return e
            }
            switch (viaCodec, reference) {
            case (.success(let a), .success(let b)): #expect(a == b, "\(name)")
            case (.failure(let a), .failure(let b)): #expect(a == b, "\(name)")
            default: Issue.record("\(name): codec \(viaCodec) vs JSONDecoder \(reference)")
            }
        }
        // An escaped body decodes to the unescaped value (through JSONDecoder).
        let escaped = try EventCodec.decode(Data(variant("m_acme", #"m_\u0061cme"#)))
        #expect(escaped.merchantID == "m_acme")
    }
}
