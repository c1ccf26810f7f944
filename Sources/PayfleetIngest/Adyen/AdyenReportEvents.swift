import Foundation
import PayfleetCore

/// Canonical events from the facts of an Adyen Settlement Details Report, which only the report
/// carries (Adyen has no events API and its webhooks carry no fees): each fee column of a line
/// as `fee.assessed` naming the payment, and each batch's `MerchantPayout` as `payout.paid`.
/// `payfleet settlement reconcile --provider adyen --post` accepts them through
/// `Outbox.accept`, the durable path every webhook and the Stripe fee fetcher take, so every
/// worker sees each once. Ids derive from the line's psp reference (its `Modification
/// Reference`: the payment's, or its refund's or chargeback's) + fee kind + batch (payouts: batch +
/// currency): reconciling the same report again is a duplicate in the outbox, never a second posting.
public enum AdyenReportEvents {
    /// One fee of one report line.
    public struct Fee: Sendable, Equatable {
        /// The payment's psp reference (the fee names it).
        public var pspReference: String
        /// The line's own psp reference (`Modification Reference`: a refund's or chargeback's;
        /// a payment's line has the payment's), so a refund's commission is not the payment's.
        public var modificationReference: String
        /// `commission`, `markup`, `scheme_fees`, `interchange`.
        public var kind: String
        public var batch: String
        public var merchantID: String
        public var merchantAccount: String?
        public var currency: String
        /// Minor units, > 0.
        public var amount: Int64
        public var occurredAt: Date
        /// The report line's type (`Settled`, `Refunded`, …) and number, for the metadata.
        public var lineType: String
        public var line: Int

        public init(pspReference: String, modificationReference: String? = nil, kind: String, batch: String, merchantID: String, merchantAccount: String?,
                    currency: String, amount: Int64, occurredAt: Date, lineType: String, line: Int) {
            self.pspReference = pspReference
            self.modificationReference = modificationReference ?? pspReference
            self.kind = kind
            self.batch = batch
            self.merchantID = merchantID
            self.merchantAccount = merchantAccount
            self.currency = currency
            self.amount = amount
            self.occurredAt = occurredAt
            self.lineType = lineType
            self.line = line
        }

        /// The provider event id the canonical id derives from.
        public var sourceEventID: String { "\(modificationReference):fee:\(kind):\(batch)" }
    }

    /// One batch's payout in one currency.
    public struct Payout: Sendable, Equatable {
        public var batch: String
        public var merchantID: String
        public var merchantAccount: String?
        public var currency: String
        public var amount: Int64
        public var occurredAt: Date

        public init(batch: String, merchantID: String, merchantAccount: String?, currency: String, amount: Int64, occurredAt: Date) {
            self.batch = batch
            self.merchantID = merchantID
            self.merchantAccount = merchantAccount
            self.currency = currency
            self.amount = amount
            self.occurredAt = occurredAt
        }

        public var sourceEventID: String { "batch:\(batch):\(currency):payout" }
    }

    public struct InvalidFact: Error, CustomStringConvertible {
        public var description: String
    }

    public static func feeEventID(_ f: Fee) -> String { PaymentEvent.canonicalID(provider: "adyen", eventID: f.sourceEventID) }
    public static func payoutEventID(_ p: Payout) -> String { PaymentEvent.canonicalID(provider: "adyen", eventID: p.sourceEventID) }

    public static func event(_ f: Fee, receivedAt: Date = Date()) throws -> PaymentEvent {
        guard let currency = Currency(code: f.currency) else { throw InvalidFact(description: "fee currency '\(f.currency)' is not ISO 4217") }
        let e = PaymentEvent(
            id: feeEventID(f), type: .feeAssessed, occurredAt: min(f.occurredAt, receivedAt), receivedAt: receivedAt,
            source: .init(provider: "adyen", eventID: f.sourceEventID, account: f.merchantAccount), merchantID: f.merchantID,
            payment: .init(id: f.pspReference), amount: Money(value: f.amount, currency: currency),
            metadata: ["fee_kind": f.kind, "batch_number": f.batch, "psp_reference": f.pspReference, "modification_reference": f.modificationReference, "line_type": f.lineType,
                       "report_line": String(f.line)])
        try check(e)
        return e
    }

    public static func event(_ p: Payout, receivedAt: Date = Date()) throws -> PaymentEvent {
        guard let currency = Currency(code: p.currency) else { throw InvalidFact(description: "payout currency '\(p.currency)' is not ISO 4217") }
        let e = PaymentEvent(
            id: payoutEventID(p), type: .payoutPaid, occurredAt: min(p.occurredAt, receivedAt), receivedAt: receivedAt,
            source: .init(provider: "adyen", eventID: p.sourceEventID, account: p.merchantAccount), merchantID: p.merchantID,
            amount: Money(value: p.amount, currency: currency), metadata: ["payout_id": p.batch, "batch_number": p.batch])
        try check(e)
        return e
    }

    static func check(_ e: PaymentEvent) throws {
        do { try e.validateInput(now: e.receivedAt ?? Date()) } catch {
            throw InvalidFact(description: "\(e.type.rawValue) \(e.source.eventID): \(error.field): \(error.message)")
        }
    }

    /// Accepts `events` into ingest's outbox (one durable commit); per event its id and whether
    /// it was already there.
    public static func post(_ events: [PaymentEvent], outbox: Outbox) async throws -> [(id: String, duplicate: Bool)] {
        guard !events.isEmpty else { return [] }
        switch try await outbox.accept(events.map { .event($0) }, traceparent: StripeFeeFetcher.traceparent()) {
        case .accepted(let out): return out
        case .conflict(let id): throw InvalidFact(description: "outbox answered an idempotency conflict for \(id)")
        }
    }

    /// `2026-11-20 10:15:31` (the report's own time, taken as UTC: only its day matters to the books).
    public static func date(_ s: String) -> Date? {
        let t = s.trimmingCharacters(in: .whitespaces)
        if let d = RFC3339.parse(t) { return d }
        if t.count == 19, let d = RFC3339.parse(t.replacingOccurrences(of: " ", with: "T") + "Z") { return d }
        if t.count == 10, let d = RFC3339.parse(t + "T00:00:00Z") { return d }
        return nil
    }
}
