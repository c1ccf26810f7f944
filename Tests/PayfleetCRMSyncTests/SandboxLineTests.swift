import Foundation
import PayfleetCRMSync
import PayfleetCore
import Testing

/// The sandbox CRM's JSONL line, written without JSONSerialization: parsed back by Foundation's
/// JSON parser, it holds exactly the snapshot's values, keys sorted, on one line.
@Suite struct SandboxLineTests {
    @Test(arguments: ["cus_1", #"O"Brien \ Sons"#, "tab\tnew\nline\r\u{01}\u{1f}", "Zoë 日本 🎉", "a/b"])
    func lineParsesBackToTheSnapshot(customer: String) throws {
        let at = Date(timeIntervalSince1970: 1_764_000_000.25)
        let paidAt = Date(timeIntervalSince1970: 1_763_999_000)
        for last in [Optional("pi_1"), nil] {
            let s = CustomerSnapshot(
                customerID: customer, merchantID: "m_acme", currency: "GBP", outstanding: -125, paid: 9_007_199_254_740_993,
                refunded: 0, disputed: 42, status: "active", lastPaymentID: last, lastPaymentAmount: 100,
                lastPaymentAt: last == nil ? nil : paidAt, name: nil, email: nil, phone: nil, version: 7, at: at)
            let data = SandboxConnector.line(s, eventID: "evt_\(customer)")
            #expect(data.last == UInt8(ascii: "\n"))
            #expect(!data.dropLast().contains(UInt8(ascii: "\n")))
            let o = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            #expect(o["customer_id"] as? String == customer)
            #expect(o["event_id"] as? String == "evt_\(customer)")
            #expect(o["merchant_id"] as? String == "m_acme")
            #expect(o["currency"] as? String == "GBP")
            #expect((o["outstanding"] as? NSNumber)?.int64Value == -125)
            #expect((o["paid"] as? NSNumber)?.int64Value == 9_007_199_254_740_993)
            #expect((o["refunded"] as? NSNumber)?.int64Value == 0)
            #expect((o["disputed"] as? NSNumber)?.int64Value == 42)
            #expect((o["version"] as? NSNumber)?.int64Value == 7)
            #expect(o["status"] as? String == "active")
            #expect(o["at"] as? String == RFC3339.format(at))
            if let last {
                #expect(o["last_payment_id"] as? String == last)
                #expect(o["last_payment_at"] as? String == RFC3339.format(paidAt))
            } else {
                #expect(o["last_payment_id"] is NSNull)
                #expect(o["last_payment_at"] is NSNull)
            }
            #expect(o.count == 13)
            // Keys in sorted order, as before.
            let text = String(decoding: data, as: UTF8.self)
            let order = ["\"at\"", "\"currency\"", "\"customer_id\"", "\"disputed\"", "\"event_id\"", "\"last_payment_at\"",
                         "\"last_payment_id\"", "\"merchant_id\"", "\"outstanding\"", "\"paid\"", "\"refunded\"", "\"status\"", "\"version\""]
            let positions = order.map { text.range(of: $0 + ":")!.lowerBound }
            #expect(positions == positions.sorted())
        }
    }
}
