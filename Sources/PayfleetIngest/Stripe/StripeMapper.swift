import Foundation
import PayfleetCore

/// Stripe Event JSON → canonical events (DESIGN §2). Works on the parsed (and PAN-masked)
/// object. Canonical ids come from the business fact where two Stripe events report the same
/// one (`payment_intent.succeeded` and `charge.succeeded` of that intent; `charge.refunded`
/// and `refund.created` of one refund), so subscribing to both publishes it once.
public struct StripeMapper: Sendable {
    public let merchants: [Merchant]
    public let defaultMerchant: String?

    public init(merchants: [Merchant], defaultMerchant: String?) {
        self.merchants = merchants
        self.defaultMerchant = defaultMerchant
    }

    static let exemptKeys: Set<String> = [
        "id", "charge", "payment_intent", "customer", "balance_transaction", "payment_method", "invoice", "latest_charge",
        "destination", "source", "account", "application", "review", "on_behalf_of", "transfer", "failure_balance_transaction",
    ]

    /// The objects whose identifier fields are exempt: the event, its object, the previous
    /// attributes, and the objects Stripe documents as expandable inside them. Never anything
    /// under `metadata` (the sender's own keys and values).
    static let exemptParents: Set<String> = [
        "", "data.object", "data.previous_attributes", "request",
        "data.object.latest_charge", "data.object.charges.data[]", "data.object.refunds.data[]",
        "data.object.balance_transactions[]", "data.object.customer", "data.object.payment_intent",
        "data.object.charge", "data.object.invoice", "data.object.balance_transaction",
        "data.object.latest_charge.balance_transaction", "data.object.charges.data[].balance_transaction",
        "data.object.payment_method",
    ]

    /// Stripe object ids (`ch_…`, `pi_…`, `txn_…`) in the documented identifier fields at their
    /// documented places are exempt from the PAN guard; the same key elsewhere is scanned.
    public static func isExempt(path: String, key: String, value: String) -> Bool {
        guard exemptKeys.contains(key) else { return false }
        let parentEnd = path.count > key.count ? path.index(path.endIndex, offsetBy: -(key.count + 1)) : path.startIndex
        let parent = collapsingIndices(path[..<parentEnd])
        guard exemptParents.contains(parent), let us = value.lastIndex(of: "_"), us != value.startIndex else { return false }
        let prefix = value[..<us]
        let rest = value[value.index(after: us)...]
        return !rest.isEmpty && prefix.allSatisfy { ($0.isASCII && $0.isLowercase) || $0 == "_" }
            && rest.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
    }

    /// `path` with every `[<digits>]` written `[]` — what the regular expression `\[\d+\]`
    /// replaced, `\d` being any Unicode decimal digit (Nd) as in ICU — without compiling a
    /// regular expression per identifier field (11 % of ingest's CPU in the fleet benchmark).
    public static func collapsingIndices(_ path: Substring) -> String {
        guard path.utf8.contains(UInt8(ascii: "[")) else { return String(path) }
        let scalars = Array(path.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == "[" {
                var j = i + 1
                while j < scalars.count, scalars[j].properties.numericType == .decimal { j += 1 }
                if j > i + 1, j < scalars.count, scalars[j] == "]" {
                    out.append("[")
                    out.append("]")
                    i = j + 1
                    continue
                }
            }
            out.append(scalars[i])
            i += 1
        }
        return String(out)
    }

    public func map(_ event: [String: Any], receivedAt: Date) throws(IngestError) -> MappedEvent {
        guard let eventID = event["id"] as? String, !eventID.isEmpty else { throw .invalid("id", "missing Stripe event id") }
        guard let type = event["type"] as? String else { throw .invalid("type", "missing Stripe event type") }
        guard let object = (event["data"] as? [String: Any])?["object"] as? [String: Any] else {
            throw .invalid("data.object", "missing")
        }
        let record = MappedEvent.recordOnly(provider: "stripe", eventID: eventID, type: type, reason: "unmapped type")
        let canonicalType: PaymentEvent.EventType
        var factKey = eventID
        switch type {
        case "payment_intent.succeeded":
            canonicalType = .paymentSucceeded
            factKey = "\(str(object["id"]) ?? eventID):succeeded"
        case "charge.succeeded":
            canonicalType = .paymentSucceeded
            let pi = idOf(object["payment_intent"])
            factKey = "\(pi ?? str(object["id"]) ?? eventID):succeeded"
        case "payment_intent.payment_failed": canonicalType = .paymentFailed
        case "charge.refunded":
            canonicalType = .paymentRefunded
            if let r = latestRefund(object), let rid = str(r["id"]) {
                factKey = "\(rid):refund"
            } else {
                // Since API 2022-11-15 the charge carries no refunds: the refund is the change
                // in `amount_refunded`, named by the charge and the cumulative amount after it.
                factKey = "\(str(object["id"]) ?? eventID):refunded:\(JSONValue.int64(object["amount_refunded"]) ?? 0)"
            }
        case "refund.created", "refund.updated", "charge.refund.updated", "refund.failed":
            let rid = str(object["id"]) ?? eventID
            switch str(object["status"]) {
            case "failed", "canceled":
                // A refund that did not complete (or was returned by the bank): it undoes the refund.
                canonicalType = .refundFailed
                factKey = "\(rid):refund_failed"
            case _ where type == "refund.failed":
                canonicalType = .refundFailed
                factKey = "\(rid):refund_failed"
            default:
                canonicalType = .paymentRefunded
                factKey = "\(rid):refund"
            }
        case "charge.dispute.created": canonicalType = .paymentDisputed
        case "charge.dispute.closed": canonicalType = .disputeClosed
        case "payout.paid": canonicalType = .payoutPaid
        case "payout.failed":
            canonicalType = .payoutFailed
            factKey = "\(str(object["id"]) ?? eventID):payout_failed"
        case "invoice.finalized": canonicalType = .invoiceIssued
        default: return record
        }

        let merchant = try merchantID(account: event["account"] as? String)
        let currencyCode = (str(object["currency"]) ?? "").uppercased()
        guard let currency = Currency(code: currencyCode) else {
            throw .invalid("data.object.currency", "'\(currencyCode)' is not an ISO 4217 currency")
        }
        var metadata = (object["metadata"] as? [String: Any] ?? [:]).compactMapValues { JSONValue.string($0) }
        var amountValue: Int64?
        var paymentID: String?
        var card: PaymentEvent.Card?
        var fee: Money?
        var customer = customerOf(object["customer"])

        switch canonicalType {
        case .paymentSucceeded where type == "payment_intent.succeeded":
            amountValue = JSONValue.int64(object["amount_received"]) ?? JSONValue.int64(object["amount"])
            paymentID = str(object["id"])
            if let ch = chargeOf(pi: object) {
                card = cardOf(ch)
                fee = feeOf(ch, currency)
                customer = customer.map { merge($0, billingCustomer(ch)) } ?? billingCustomer(ch)
            }
            // In real webhooks `latest_charge` is an id: the intent's own `receipt_email` is where
            // the customer's address is, then an expanded customer's, then the expanded charge's.
            if let email = str(object["receipt_email"]) {
                var c = customer ?? PaymentEvent.Customer()
                c.email = email
                customer = c
            }
        case .paymentSucceeded:
            // charge.succeeded (payment_intent.succeeded is the case above).
            amountValue = JSONValue.int64(object["amount_captured"]).flatMap { $0 > 0 ? $0 : nil }
                ?? JSONValue.int64(object["amount"])
            paymentID = idOf(object["payment_intent"]) ?? str(object["id"])
            card = cardOf(object)
            fee = feeOf(object, currency)
            if let c = customer { customer = merge(c, billingCustomer(object)) } else { customer = billingCustomer(object) }
        case .paymentFailed:
            amountValue = JSONValue.int64(object["amount"])
            paymentID = str(object["id"])
            if let err = object["last_payment_error"] as? [String: Any] {
                if let code = str(err["code"]) { metadata["failure_code"] = code }
                if let pm = err["payment_method"] as? [String: Any], let c = pm["card"] as? [String: Any] {
                    card = PaymentEvent.Card(brand: str(c["brand"]), last4: str(c["last4"]))
                }
            }
        case .paymentRefunded where type == "charge.refunded":
            let r = latestRefund(object)
            let cumulative = JSONValue.int64(object["amount_refunded"])
            let previous = JSONValue.int64(
                ((event["data"] as? [String: Any])?["previous_attributes"] as? [String: Any])?["amount_refunded"])
            if let cumulative, let previous {
                guard cumulative > previous else {
                    return .recordOnly(provider: "stripe", eventID: eventID, type: type, reason: "amount_refunded did not grow")
                }
                amountValue = cumulative - previous
            } else {
                // No previous value: the first refund of the charge (or an old embedded list).
                amountValue = r.flatMap { JSONValue.int64($0["amount"]) } ?? cumulative
            }
            paymentID = idOf(object["payment_intent"]) ?? str(object["id"])
            card = cardOf(object)
            if let rid = r.flatMap({ str($0["id"]) }) {
                metadata["refund_id"] = rid
            } else if let charge = str(object["id"]), let cumulative {
                // No refund id on a charge since API 2022-11-15: the refund is named by its
                // charge and the cumulative amount, and a later failure of it names it the same
                // way (the outbox resolves `re_…` to this name), so every worker finds it.
                metadata["refund_id"] = "\(charge):refunded:\(cumulative)"
            }
            if let c = customer { customer = merge(c, billingCustomer(object)) } else { customer = billingCustomer(object) }
        case .paymentRefunded, .refundFailed:
            amountValue = JSONValue.int64(object["amount"])
            paymentID = idOf(object["payment_intent"]) ?? idOf(object["charge"])
            if let rid = str(object["id"]) { metadata["refund_id"] = rid }
            if canonicalType == .refundFailed, let reason = str(object["failure_reason"]) { metadata["failure_reason"] = reason }
        case .paymentDisputed, .disputeClosed:
            amountValue = JSONValue.int64(object["amount"])
            paymentID = idOf(object["payment_intent"]) ?? idOf(object["charge"])
            if let pmd = object["payment_method_details"] as? [String: Any], let c = pmd["card"] as? [String: Any] {
                card = PaymentEvent.Card(brand: str(c["brand"]), last4: str(c["last4"]))
            }
            if let id = str(object["id"]) { metadata["dispute_id"] = id }
            if let reason = str(object["reason"]) { metadata["reason"] = reason }
            // The dispute fee is on the dispute's balance transactions (the withdrawal carries a
            // positive fee). `charge.dispute.closed` repeats them: the fee is counted once, on
            // `payment.disputed`; a won dispute returns it only when a balance transaction of
            // its own says so (a reinstatement with a negative fee).
            let fees = disputeFees(object, currency)
            if canonicalType == .paymentDisputed {
                fee = fees.charged > 0 ? Money(value: fees.charged, currency: currency) : nil
            }
            if canonicalType == .disputeClosed {
                switch str(object["status"]) {
                case "won", "warning_closed":
                    metadata["outcome"] = "won"
                    if fees.returned > 0 { fee = Money(value: fees.returned, currency: currency) }
                case "lost": metadata["outcome"] = "lost"
                default: return .recordOnly(provider: "stripe", eventID: eventID, type: type, reason: "dispute not decided")
                }
            }
        case .payoutPaid, .payoutFailed:
            amountValue = JSONValue.int64(object["amount"])
            if let id = str(object["id"]) { metadata["payout_id"] = id }
            if canonicalType == .payoutFailed, let code = str(object["failure_code"]) { metadata["failure_code"] = code }
        case .invoiceIssued:
            amountValue = JSONValue.int64(object["amount_due"])
        case .settlementDayClosed, .paymentReversed, .feeAssessed:
            return record
        }
        guard let amountValue else { throw .invalid("data.object.amount", "missing or not an integer") }
        var invoiceID = metadata["invoice_id"] ?? idOf(object["invoice"])
        if canonicalType == .invoiceIssued { invoiceID = str(object["id"]) }
        let occurred = JSONValue.int64(event["created"]).map { Date(timeIntervalSince1970: TimeInterval($0)) } ?? receivedAt
        var payment: PaymentEvent.Payment?
        if paymentID != nil || card != nil {
            payment = PaymentEvent.Payment(id: paymentID, channel: "online", method: card != nil ? "card" : nil, card: card)
        }
        let e = PaymentEvent(
            id: PaymentEvent.canonicalID(provider: "stripe", eventID: factKey), type: canonicalType, occurredAt: occurred,
            receivedAt: receivedAt,
            source: .init(provider: "stripe", eventID: eventID, account: event["account"] as? String),
            merchantID: merchant, customer: customer, payment: payment,
            amount: Money(value: amountValue, currency: currency), fee: fee, invoiceID: invoiceID,
            reference: metadata["reference"] ?? str(object["description"]), metadata: metadata)
        do { try e.validate() } catch { throw IngestError.invalid(error.field, error.message) }
        if canonicalType == .refundFailed, let charge = idOf(object["charge"]), let rid = str(object["id"]) {
            return .refund(e, RefundLink(charge: charge, refundID: rid, amount: amountValue, cumulativeAfter: nil, failure: true))
        }
        if canonicalType == .paymentRefunded {
            let charge = type == "charge.refunded" ? str(object["id"]) : idOf(object["charge"])
            if let charge {
                let refundID = type == "charge.refunded" ? latestRefund(object).flatMap { str($0["id"]) } : str(object["id"])
                let cumulative = type == "charge.refunded" ? JSONValue.int64(object["amount_refunded"]) : nil
                return .refund(e, RefundLink(charge: charge, refundID: refundID, amount: amountValue, cumulativeAfter: cumulative))
            }
        }
        return .event(e)
    }

    /// Dispute fees from the dispute's `balance_transactions` in its own currency: charged
    /// (positive fees) and returned (negative fees, a reinstatement of a won dispute).
    func disputeFees(_ dispute: [String: Any], _ currency: Currency) -> (charged: Int64, returned: Int64) {
        guard let list = dispute["balance_transactions"] as? [Any] else { return (0, 0) }
        var charged: Int64 = 0
        var returned: Int64 = 0
        for case let bt as [String: Any] in list {
            guard (str(bt["currency"]) ?? "").uppercased() == currency.code, let f = JSONValue.int64(bt["fee"]) else { continue }
            if f > 0 { charged = charged &+ f } else if f < 0 { returned = returned &+ (0 &- f) }
        }
        return (charged, returned)
    }

    func merchantID(account: String?) throws(IngestError) -> String {
        if let account {
            guard let m = merchants.first(where: { $0.stripeAccount == account }) else {
                throw IngestError(.unprocessableContent, "unknown_merchant", "account: no merchant has stripe_account '\(account)'")
            }
            return m.id
        }
        if let d = defaultMerchant { return d }
        let withStripe = merchants.filter { $0.stripeAccount != nil }
        if withStripe.count == 1 { return withStripe[0].id }
        throw IngestError(.unprocessableContent, "unknown_merchant", "account: missing and no stripe.default_merchant configured")
    }

    func str(_ v: Any?) -> String? { JSONValue.string(v).flatMap { $0.isEmpty ? nil : $0 } }

    /// A Stripe reference is an id string or, when expanded, an object with `id`.
    func idOf(_ v: Any?) -> String? {
        if let s = v as? String { return s.isEmpty ? nil : s }
        if let o = v as? [String: Any] { return str(o["id"]) }
        return nil
    }

    func customerOf(_ v: Any?) -> PaymentEvent.Customer? {
        if let s = v as? String, !s.isEmpty { return .init(id: s) }
        if let o = v as? [String: Any] {
            return .init(id: str(o["id"]), name: str(o["name"]), email: str(o["email"]), phone: str(o["phone"]))
        }
        return nil
    }

    func billingCustomer(_ charge: [String: Any]) -> PaymentEvent.Customer? {
        guard let b = charge["billing_details"] as? [String: Any] else { return nil }
        let c = PaymentEvent.Customer(id: idOf(charge["customer"]), name: str(b["name"]), email: str(b["email"]) ?? str(charge["receipt_email"]), phone: str(b["phone"]))
        return c == PaymentEvent.Customer() ? nil : c
    }

    func merge(_ a: PaymentEvent.Customer, _ b: PaymentEvent.Customer?) -> PaymentEvent.Customer {
        guard let b else { return a }
        return .init(id: a.id ?? b.id, name: a.name ?? b.name, email: a.email ?? b.email, phone: a.phone ?? b.phone)
    }

    /// The intent's charge when present: expanded `latest_charge`, or `charges.data[0]` (older API versions).
    func chargeOf(pi: [String: Any]) -> [String: Any]? {
        if let c = pi["latest_charge"] as? [String: Any] { return c }
        if let list = pi["charges"] as? [String: Any], let data = list["data"] as? [[String: Any]] { return data.first }
        return nil
    }

    func cardOf(_ charge: [String: Any]) -> PaymentEvent.Card? {
        guard let pmd = charge["payment_method_details"] as? [String: Any], let c = pmd["card"] as? [String: Any] else {
            return nil
        }
        return PaymentEvent.Card(brand: str(c["brand"]), last4: str(c["last4"]))
    }

    /// The fee, when the balance transaction is expanded on the charge.
    func feeOf(_ charge: [String: Any], _ currency: Currency) -> Money? {
        guard let bt = charge["balance_transaction"] as? [String: Any], let fee = JSONValue.int64(bt["fee"]) else { return nil }
        // The fee is in the balance (settlement) currency; only carry it when it matches the charge.
        guard (str(bt["currency"]) ?? "").uppercased() == currency.code else { return nil }
        return Money(value: fee, currency: currency)
    }

    /// The newest refund of a charge (`refunds.data` is newest first).
    func latestRefund(_ charge: [String: Any]) -> [String: Any]? {
        guard let list = charge["refunds"] as? [String: Any], let data = list["data"] as? [[String: Any]] else { return nil }
        return data.max(by: { (JSONValue.int64($0["created"]) ?? 0) < (JSONValue.int64($1["created"]) ?? 0) })
    }
}
