import Foundation
import PayfleetCore
import PayfleetWorker
import Testing

@testable import PayfleetCRMSync

/// The CRM effect's journal bytes are written by hand (`CRMChange.journalJSON`): they must be
/// what `JSONEncoder` writes — the same object once parsed — and decode with `JSONDecoder` to
/// the same change, including nil optionals, escapes, non-ASCII text and fractional dates.
@Suite struct JournalEncodingTests {
    static func parsed(_ bytes: [UInt8]) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? NSDictionary)
    }

    static let full = CustomerSnapshot(
        customerID: "cus_\"quoted\"\\", merchantID: "m_ü", currency: "BHD", outstanding: -1_250, paid: Int64.max,
        refunded: 0, disputed: 7, status: "disputed", lastPaymentID: "pi_1\n\t\u{1}", lastPaymentAmount: Int64.min,
        lastPaymentAt: Date(timeIntervalSince1970: 1_764_000_000.123), name: "Zoë 山田 🙂", email: "zoe@example.com",
        phone: "+447700900123", version: 42, at: Date(timeIntervalSince1970: 1_764_000_123.001))
    static let bare = CustomerSnapshot(
        customerID: "cus_2", merchantID: "m_1", currency: "JPY", outstanding: 0, paid: 1_500, refunded: 0, disputed: 0,
        status: "active", lastPaymentID: nil, lastPaymentAmount: nil, lastPaymentAt: nil, name: nil, email: nil,
        phone: nil, version: 1, at: Date(timeIntervalSinceReferenceDate: 0.00001))
    static let payment = PaymentRecord(
        eventID: "evt_1", type: "payment.succeeded", paymentID: "pi_1", customerID: "cus_2", merchantID: "m_1",
        currency: "GBP", amount: 1_999, fee: 59, occurredAt: Date(timeIntervalSince1970: 1_764_000_000.5),
        invoiceID: "in_1", outcome: "succeeded", channel: "card", method: "visa", reference: "ref/1")
    static let sparse = PaymentRecord(
        eventID: "evt_2", type: "payment.refunded", paymentID: nil, customerID: "cus_2", merchantID: "m_1",
        currency: "GBP", amount: 300, fee: nil, occurredAt: Date(timeIntervalSince1970: 0), invoiceID: nil,
        outcome: nil, channel: nil, method: nil, reference: nil)

    @Test("the hand-written journal JSON is what JSONEncoder writes, and decodes to the same change", arguments: [
        CRMChange(eventID: "evt_1", eventType: "payment.succeeded", customers: [full, bare], payments: [payment, sparse]),
        CRMChange(eventID: "evt_3", eventType: "payment.disputed", customers: [], payments: []),
        CRMChange(eventID: "évt_4", eventType: "payment.refunded", customers: [bare], payments: [sparse]),
    ])
    func sameAsJSONEncoder(_ change: CRMChange) throws {
        let fast = change.journalJSON
        let reference = Array(try JSONEncoder().encode(change))
        #expect(try Self.parsed(fast) == (try Self.parsed(reference)), "\(String(decoding: fast, as: UTF8.self))")
        #expect(try JSONDecoder().decode(CRMChange.self, from: Data(fast)) == change)
    }
}
