import Foundation
import PayfleetCore
import PayfleetWorker

// The CRM effect's journal bytes, written directly: the same keys and values `JSONEncoder`
// writes for these structs (`JournalTests` decodes them back with `JSONDecoder`).

extension CRMChange: JournalEncodable {
    public var journalJSON: [UInt8] {
        var w = JSONObjectWriter(capacity: 256 + 512 * customers.count + 384 * payments.count)
        w.field("eventID", eventID)
        w.field("eventType", eventType)
        w.field("customers", customers) { $0.journalJSON }
        w.field("payments", payments) { $0.journalJSON }
        return w.finished()
    }
}

extension CustomerSnapshot {
    var journalJSON: [UInt8] {
        var w = JSONObjectWriter(capacity: 512)
        w.field("customerID", customerID)
        w.field("merchantID", merchantID)
        w.field("currency", currency)
        w.field("outstanding", outstanding)
        w.field("paid", paid)
        w.field("refunded", refunded)
        w.field("disputed", disputed)
        w.field("status", status)
        w.field("lastPaymentID", lastPaymentID)
        w.field("lastPaymentAmount", lastPaymentAmount)
        w.field("lastPaymentAt", lastPaymentAt)
        w.field("name", name)
        w.field("email", email)
        w.field("phone", phone)
        w.field("version", version)
        w.field("at", at)
        return w.finished()
    }
}

extension PaymentRecord {
    var journalJSON: [UInt8] {
        var w = JSONObjectWriter(capacity: 384)
        w.field("eventID", eventID)
        w.field("type", type)
        w.field("paymentID", paymentID)
        w.field("customerID", customerID)
        w.field("merchantID", merchantID)
        w.field("currency", currency)
        w.field("amount", amount)
        w.field("fee", fee)
        w.field("occurredAt", occurredAt)
        w.field("invoiceID", invoiceID)
        w.field("outcome", outcome)
        w.field("channel", channel)
        w.field("method", method)
        w.field("reference", reference)
        return w.finished()
    }
}
