import Foundation
import PayfleetCore

/// Adyen NotificationRequestItem → canonical event (DESIGN §2). An Adyen event is identified
/// by pspReference + eventCode; `success` is always checked.
public struct AdyenMapper: Sendable {
    public let merchants: [Merchant]
    public let capture: IngestConfiguration.Capture

    public init(merchants: [Merchant], capture: IngestConfiguration.Capture) {
        self.merchants = merchants
        self.capture = capture
    }

    /// pspReference / originalReference are provider identifiers, not card numbers.
    /// Exempt only at the item's top level (`notificationItems[i].NotificationRequestItem.<key>`)
    /// and the signature in `additionalData`; the same key names elsewhere are scanned.
    public static func isExempt(path: String, key: String, value: String) -> Bool {
        let item = #"^notificationItems\[\d+\]\.NotificationRequestItem\."#
        if key == "pspReference" || key == "originalReference" {
            return path.range(of: item + key + "$", options: .regularExpression) != nil
        }
        if key == "hmacSignature" {
            return path.range(of: item + "additionalData\\.hmacSignature$", options: .regularExpression) != nil
        }
        return false
    }

    public func map(_ item: [String: Any], index: Int, receivedAt: Date) throws(IngestError) -> MappedEvent {
        let path = "notificationItems[\(index)].NotificationRequestItem"
        guard let psp = JSONValue.string(item["pspReference"]), !psp.isEmpty else {
            throw .invalid(path + ".pspReference", "missing")
        }
        guard let code = JSONValue.string(item["eventCode"]), !code.isEmpty else {
            throw .invalid(path + ".eventCode", "missing")
        }
        let eventID = "\(psp):\(code)"
        let success = JSONValue.string(item["success"])?.lowercased() == "true"
        func record(_ why: String) -> MappedEvent { .recordOnly(provider: "adyen", eventID: eventID, type: code, reason: why) }
        let type: PaymentEvent.EventType
        var metadata: [String: String] = [:]
        // The fact this item reports: two notifications of one fact publish it once.
        var factKey = eventID
        let additionalRaw = item["additionalData"] as? [String: Any] ?? [:]
        let original = JSONValue.string(item["originalReference"]).flatMap { $0.isEmpty ? nil : $0 }
        switch (code, success) {
        case ("AUTHORISATION", true):
            guard capture == .auto else { return record("authorisation under manual capture") }
            type = .paymentSucceeded
        case ("AUTHORISATION", false): type = .paymentFailed
        case ("CAPTURE", true):
            guard capture == .manual else { return record("capture under automatic capture") }
            type = .paymentSucceeded
        case ("REFUND", true):
            type = .paymentRefunded
            metadata["refund_id"] = psp
        case ("REFUND_FAILED", true), ("REFUNDED_REVERSED", true):
            // pspReference is the refund's, originalReference the payment's: the refund is undone.
            type = .refundFailed
            metadata["refund_id"] = psp
            factKey = "\(psp):refund_failed"
        case ("CAPTURE_FAILED", true):
            // The payment (pspReference of the capture, originalReference of the payment) never
            // completed. Only a success booked under manual capture is a CAPTURE; under automatic
            // capture the AUTHORISATION was booked, and both are reversed.
            type = .paymentReversed
            factKey = "\(original ?? psp):reversed"
        case ("CANCEL_OR_REFUND", true):
            // Adyen says which it did in `additionalData.modification.action`: `refund` when the
            // payment had been captured, `cancel` before capture. A cancel under automatic capture
            // undoes a booked AUTHORISATION; under manual capture nothing was booked yet.
            switch JSONValue.string(additionalRaw["modification.action"])?.lowercased() {
            case "refund":
                type = .paymentRefunded
                metadata["refund_id"] = psp
                factKey = "\(psp):REFUND"  // the same refund as a REFUND notification of it
            case "cancel":
                guard capture == .auto else { return record("cancelled before capture: no success was booked") }
                type = .paymentReversed
                factKey = "\(original ?? psp):reversed"
            default:
                return record("CANCEL_OR_REFUND without additionalData.modification.action")
            }
        case ("CHARGEBACK", true): type = .paymentDisputed
        case ("CHARGEBACK_REVERSED", true):
            type = .disputeClosed
            metadata["outcome"] = "won"
        default: return record(success ? "unmapped event code" : "success=false")
        }
        guard let account = JSONValue.string(item["merchantAccountCode"]),
            let merchant = merchants.first(where: { $0.adyenMerchantAccount == account })
        else {
            throw IngestError(
                .unprocessableContent, "unknown_merchant",
                "\(path).merchantAccountCode: no merchant has adyen_merchant_account '\(JSONValue.string(item["merchantAccountCode"]) ?? "")'")
        }
        let amount = item["amount"] as? [String: Any] ?? [:]
        let code3 = JSONValue.string(amount["currency"]) ?? ""
        guard let currency = Currency(code: code3) else {
            throw .invalid(path + ".amount.currency", "'\(code3)' is not an ISO 4217 currency")
        }
        guard let value = JSONValue.int64(amount["value"]) else {
            throw .invalid(path + ".amount.value", "must be an integer number of minor units")
        }
        let additional = additionalRaw.compactMapValues { JSONValue.string($0) }
        for (k, v) in additional where k.hasPrefix("metadata.") { metadata[String(k.dropFirst(9))] = v }
        if let reason = JSONValue.string(item["reason"]), !reason.isEmpty, type != .paymentSucceeded {
            metadata["reason"] = reason
        }
        metadata["psp_reference"] = psp
        var card: PaymentEvent.Card?
        let brand = JSONValue.string(item["paymentMethod"])
        let last4 = additional["cardSummary"]
        if brand != nil || last4 != nil { card = .init(brand: brand, last4: last4) }
        let paymentID = (type == .paymentSucceeded || type == .paymentFailed) && code == "AUTHORISATION" ? psp : (original ?? psp)
        var customer: PaymentEvent.Customer?
        if additional["shopperReference"] != nil || additional["shopperEmail"] != nil {
            customer = .init(id: additional["shopperReference"], name: additional["shopperName"], email: additional["shopperEmail"])
        }
        let occurred = JSONValue.string(item["eventDate"]).flatMap(RFC3339.parse) ?? receivedAt
        let e = PaymentEvent(
            id: PaymentEvent.canonicalID(provider: "adyen", eventID: factKey), type: type, occurredAt: occurred,
            receivedAt: receivedAt, source: .init(provider: "adyen", eventID: eventID, account: account),
            merchantID: merchant.id, customer: customer,
            payment: .init(id: paymentID, channel: "online", method: card != nil ? "card" : nil, card: card),
            amount: Money(value: value, currency: currency), invoiceID: metadata["invoice_id"],
            reference: JSONValue.string(item["merchantReference"]), metadata: metadata)
        do { try e.validate() } catch { throw IngestError.invalid(error.field, error.message) }
        return .event(e)
    }
}
