import PayfleetCore

/// What a provider event became: a canonical event to publish, or a record only (unknown type,
/// an AUTHORISATION under manual capture, a failed refund…).
public enum MappedEvent: Sendable {
    case event(PaymentEvent)
    case recordOnly(provider: String, eventID: String, type: String, reason: String)
    /// A Stripe refund, which two webhooks report with nothing in common but the charge and the
    /// amount: `charge.refunded` (no refund id since API 2022-11-15; the amount is the change in
    /// `amount_refunded`) and `refund.created` / `charge.refund.updated` (the refund, with its id).
    /// The outbox links them so that one refund is one canonical event, whichever comes first.
    case refund(PaymentEvent, RefundLink)

    var canonicalID: String {
        switch self {
        case .event(let e), .refund(let e, _): return e.id
        case .recordOnly(let p, let id, _, _): return PaymentEvent.canonicalID(provider: p, eventID: id)
        }
    }

    var event: PaymentEvent? {
        switch self {
        case .event(let e), .refund(let e, _): return e
        case .recordOnly: return nil
        }
    }
}

/// What identifies one refund of a charge across Stripe's webhooks (see `MappedEvent.refund`).
public struct RefundLink: Sendable, Equatable {
    /// The charge refunded.
    public var charge: String
    /// The refund's id (`re_…`), when the webhook carries it.
    public var refundID: String?
    /// The refunded amount in minor units.
    public var amount: Int64
    /// `amount_refunded` after this refund, from `charge.refunded`.
    public var cumulativeAfter: Int64?
    /// A failure of the refund (`refund.failed`, a refund update to failed/canceled): not a
    /// report of the refund to dedupe, but one that must name the refund as it was published
    /// (`metadata.refund_id`), so the workers find what to undo.
    public var failure = false

    public init(charge: String, refundID: String?, amount: Int64, cumulativeAfter: Int64?, failure: Bool = false) {
        self.failure = failure
        self.charge = charge
        self.refundID = refundID
        self.amount = amount
        self.cumulativeAfter = cumulativeAfter
    }
}
