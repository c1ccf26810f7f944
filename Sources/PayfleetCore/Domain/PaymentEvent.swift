import Crypto
import Foundation

/// The canonical Payfleet event (`payfleet.event/v1`, DESIGN §2): what ingest publishes and
/// every worker consumes. Amounts are integer minor units.
public struct PaymentEvent: Codable, Sendable, Equatable {
    public static let schemaV1 = "payfleet.event/v1"

    public var schema: String
    public var id: String
    public var type: EventType
    public var occurredAt: Date
    public var receivedAt: Date?
    public var source: Source
    public var merchantID: String
    public var customer: Customer?
    public var payment: Payment?
    public var amount: Money
    public var fee: Money?
    public var invoiceID: String?
    public var reference: String?
    public var metadata: [String: String]

    public struct Source: Codable, Sendable, Equatable {
        public var provider: String
        public var eventID: String
        public var account: String?
        public init(provider: String, eventID: String, account: String? = nil) {
            self.provider = provider
            self.eventID = eventID
            self.account = account
        }
        enum CodingKeys: String, CodingKey {
            case provider, account
            case eventID = "event_id"
        }
    }

    public struct Customer: Codable, Sendable, Equatable {
        public var id: String?
        public var name: String?
        public var email: String?
        public var phone: String?
        public init(id: String? = nil, name: String? = nil, email: String? = nil, phone: String? = nil) {
            self.id = id
            self.name = name
            self.email = email
            self.phone = phone
        }
    }

    public struct Card: Codable, Sendable, Equatable {
        public var brand: String?
        public var last4: String?
        public init(brand: String? = nil, last4: String? = nil) {
            self.brand = brand
            self.last4 = last4
        }
    }

    public struct Payment: Codable, Sendable, Equatable {
        public var id: String?
        public var channel: String?
        public var method: String?
        public var card: Card?
        public init(id: String? = nil, channel: String? = nil, method: String? = nil, card: Card? = nil) {
            self.id = id
            self.channel = channel
            self.method = method
            self.card = card
        }
    }

    public enum EventType: String, Codable, Sendable, CaseIterable {
        case paymentSucceeded = "payment.succeeded"
        case paymentFailed = "payment.failed"
        case paymentRefunded = "payment.refunded"
        case paymentDisputed = "payment.disputed"
        case disputeClosed = "dispute.closed"
        case invoiceIssued = "invoice.issued"
        case payoutPaid = "payout.paid"
        /// A refund that did not complete or was returned; names the payment and `metadata.refund_id`.
        case refundFailed = "refund.failed"
        /// A success that did not complete (Adyen `CAPTURE_FAILED`); amount = the payment's.
        case paymentReversed = "payment.reversed"
        /// A payout the bank returned (Stripe `payout.failed`); amount = the payout's.
        case payoutFailed = "payout.failed"
        /// A provider fee learnt after the payment it names; amount = the fee.
        case feeAssessed = "fee.assessed"
        case settlementDayClosed = "settlement.day_closed"

        /// Published by workers only; refused on every ingest route.
        public var isInternal: Bool { self == .settlementDayClosed }
        /// Undoes an earlier effect: never a receipt.
        public var isReversal: Bool { self == .refundFailed || self == .paymentReversed || self == .payoutFailed }
    }

    enum CodingKeys: String, CodingKey {
        case schema, id, type, source, customer, payment, amount, fee, reference, metadata
        case occurredAt = "occurred_at"
        case receivedAt = "received_at"
        case merchantID = "merchant_id"
        case invoiceID = "invoice_id"
    }

    public init(
        id: String, type: EventType, occurredAt: Date, receivedAt: Date? = nil, source: Source,
        merchantID: String, customer: Customer? = nil, payment: Payment? = nil, amount: Money,
        fee: Money? = nil, invoiceID: String? = nil, reference: String? = nil, metadata: [String: String] = [:]
    ) {
        self.schema = Self.schemaV1
        self.id = id
        self.type = type
        self.occurredAt = occurredAt
        self.receivedAt = receivedAt
        self.source = source
        self.merchantID = merchantID
        self.customer = customer
        self.payment = payment
        self.amount = amount
        self.fee = fee
        self.invoiceID = invoiceID
        self.reference = reference
        self.metadata = metadata
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        type = try c.decode(EventType.self, forKey: .type)
        occurredAt = try c.decode(Date.self, forKey: .occurredAt)
        receivedAt = try c.decodeIfPresent(Date.self, forKey: .receivedAt)
        source = try c.decode(Source.self, forKey: .source)
        // DESIGN §2: the id is derived from the source; integrators (a phone platform, a
        // billing system) have no id of ours to send, so it is never required on input.
        id = try c.decodeIfPresent(String.self, forKey: .id)
            ?? Self.canonicalID(provider: source.provider, eventID: source.eventID)
        merchantID = try c.decode(String.self, forKey: .merchantID)
        customer = try c.decodeIfPresent(Customer.self, forKey: .customer)
        payment = try c.decodeIfPresent(Payment.self, forKey: .payment)
        amount = try c.decode(Money.self, forKey: .amount)
        fee = try c.decodeIfPresent(Money.self, forKey: .fee)
        invoiceID = try c.decodeIfPresent(String.self, forKey: .invoiceID)
        reference = try c.decodeIfPresent(String.self, forKey: .reference)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
    }

    /// The stable canonical id: `evt_` + 26 base32 characters of SHA-256(provider ":" event id).
    /// The same provider event always maps to the same id, so a redelivered webhook dedupes.
    public static func canonicalID(provider: String, eventID: String) -> String {
        let digest = SHA256.hash(data: Data("\(provider):\(eventID)".utf8))
        return "evt_" + Base32.crockford(Array(digest).prefix(16)).prefix(26)
    }

    /// Semantic checks beyond the JSON shape; the error names the field.
    public func validate() throws(EventValidationError) {
        guard schema == Self.schemaV1 else {
            throw .init(field: "schema", message: "must be \(Self.schemaV1), got '\(schema)'")
        }
        guard !id.isEmpty, id.count <= 128 else { throw .init(field: "id", message: "must be 1–128 characters") }
        guard !merchantID.isEmpty else { throw .init(field: "merchant_id", message: "must not be empty") }
        guard !source.provider.isEmpty else { throw .init(field: "source.provider", message: "must not be empty") }
        guard !source.eventID.isEmpty else { throw .init(field: "source.event_id", message: "must not be empty") }
        switch type {
        case .payoutPaid, .paymentSucceeded, .paymentRefunded, .paymentDisputed, .invoiceIssued, .disputeClosed,
            .refundFailed, .paymentReversed, .payoutFailed, .feeAssessed:
            guard amount.value >= 0 else { throw .init(field: "amount.value", message: "must not be negative") }
        case .paymentFailed, .settlementDayClosed:
            break
        }
        if let fee {
            guard fee.currency == amount.currency else {
                throw .init(field: "fee.currency", message: "must equal amount.currency (\(amount.currency.code))")
            }
            guard fee.value >= 0 else { throw .init(field: "fee.value", message: "must not be negative") }
        }
        if [.paymentRefunded, .paymentDisputed, .disputeClosed, .refundFailed, .paymentReversed, .feeAssessed].contains(type) {
            guard let pid = payment?.id, !pid.isEmpty else {
                throw .init(field: "payment.id", message: "\(type.rawValue) must name the original payment")
            }
        }
        if type == .refundFailed {
            guard metadata["refund_id"]?.isEmpty == false else {
                throw .init(field: "metadata.refund_id", message: "refund.failed must name the refund")
            }
        }
        if type == .invoiceIssued {
            guard invoiceID?.isEmpty == false else {
                throw .init(field: "invoice_id", message: "invoice.issued must carry invoice_id")
            }
        }
        if type == .disputeClosed {
            guard let o = metadata["outcome"], o == "won" || o == "lost" else {
                throw .init(field: "metadata.outcome", message: "dispute.closed needs outcome 'won' or 'lost'")
            }
        }
    }

    /// The largest amount ingest accepts, in minor units (DESIGN §3): 10^15, a trillion dollars
    /// in cents, far above any real payment and far below Int64's limit, so sums of many
    /// amounts in the workers stay representable.
    public static let maxAmount: Int64 = 1_000_000_000_000_000
    /// Longest id (DESIGN §3), in UTF-8 bytes: ids travel in AMQP short strings (255 bytes).
    public static let maxIDBytes = 255
    public static let maxTextCharacters = 1000
    public static let maxMetadataKeys = 50
    /// Provider names that only their own routes may use.
    public static let reservedSources: Set<String> = ["stripe", "adyen", "payfleet"]
    /// 2000-01-01T00:00:00Z.
    public static let earliestOccurrence = Date(timeIntervalSince1970: 946_684_800)

    /// The canonical id of an event sent on a canonical route: its dedupe key is the source
    /// (the API key's or the route's) + merchant + `source.event_id` (DESIGN §3), so another
    /// merchant's event with the same event id is another event.
    public static func canonicalID(source: String, merchant: String, eventID: String) -> String {
        canonicalID(provider: source, eventID: "\(merchant)/\(eventID)")
    }

    /// The input rules of DESIGN §3 on top of `validate()`: bounded ids, texts, metadata and
    /// amounts; no control characters in ids and no NUL anywhere; `fee` ≤ amount; a sane
    /// `occurred_at`. Every ingest route applies them; the error names the field.
    public func validateInput(now: Date = Date()) throws(EventValidationError) {
        try validate()
        func checkID(_ field: String, _ v: String?) throws(EventValidationError) {
            guard let v else { return }
            guard !v.isEmpty else { throw .init(field: field, message: "must not be empty") }
            guard v.utf8.count <= Self.maxIDBytes else {
                throw .init(field: field, message: "longer than \(Self.maxIDBytes) bytes")
            }
            guard !v.unicodeScalars.contains(where: Self.isControl) else {
                throw .init(field: field, message: "contains a control character")
            }
        }
        func checkText(_ field: String, _ v: String?) throws(EventValidationError) {
            guard let v else { return }
            guard v.count <= Self.maxTextCharacters else {
                throw .init(field: field, message: "longer than \(Self.maxTextCharacters) characters")
            }
            guard !v.unicodeScalars.contains(where: { $0.value == 0 }) else {
                throw .init(field: field, message: "contains a NUL character")
            }
        }
        try checkID("id", self.id)
        try checkID("source.provider", source.provider)
        try checkID("source.event_id", source.eventID)
        try checkID("source.account", source.account)
        try checkID("merchant_id", merchantID)
        try checkID("customer.id", customer?.id)
        try checkID("payment.id", payment?.id)
        try checkID("invoice_id", invoiceID)
        try checkText("customer.name", customer?.name)
        try checkText("customer.email", customer?.email)
        try checkText("customer.phone", customer?.phone)
        try checkText("payment.channel", payment?.channel)
        try checkText("payment.method", payment?.method)
        try checkText("payment.card.brand", payment?.card?.brand)
        if let last4 = payment?.card?.last4 {
            guard last4.count <= 4, last4.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                throw .init(field: "payment.card.last4", message: "must be at most 4 digits")
            }
        }
        try checkText("reference", reference)
        guard metadata.count <= Self.maxMetadataKeys else {
            throw .init(field: "metadata", message: "more than \(Self.maxMetadataKeys) keys")
        }
        for (k, v) in metadata {
            try checkID("metadata.<key>", k)
            try checkText("metadata.\(k)", v)
        }
        for (k, v) in metadata where k == "refund_id" || k == "dispute_id" || k == "payout_id" {
            try checkID("metadata.\(k)", v)
        }
        let v = amount.value
        guard v >= 0, v <= Self.maxAmount else {
            throw .init(field: "amount.value", message: "must be between 0 and \(Self.maxAmount) minor units")
        }
        if v == 0, type != .invoiceIssued, type != .paymentFailed {
            throw .init(field: "amount.value", message: "must be greater than 0 for \(type.rawValue)")
        }
        if let fee {
            // A dispute fee is fixed (15.00 USD, 20.00 EUR) and may exceed a small disputed
            // amount: for disputes the bound is the maximum amount, not the disputed one.
            let disputeFee = type == .paymentDisputed || type == .disputeClosed
            guard fee.value <= (disputeFee ? Self.maxAmount : v) else {
                throw .init(field: "fee.value", message: "must not exceed amount.value (\(v))")
            }
        }
        guard occurredAt >= Self.earliestOccurrence else {
            throw .init(field: "occurred_at", message: "before 2000-01-01")
        }
        guard occurredAt <= now.addingTimeInterval(86_400) else {
            throw .init(field: "occurred_at", message: "more than 24 hours in the future")
        }
    }

    static func isControl(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || u.value == 0x7F || (0x80...0x9F).contains(u.value) || u.value == 0x2028 || u.value == 0x2029
    }

    /// The partition key for a worker: customer id (falling back to payment id, then merchant).
    public var customerKey: String { customer?.id ?? payment?.id ?? merchantID }
}

/// A semantic error in an event; `field` is the JSON path.
public struct EventValidationError: Error, Equatable, CustomStringConvertible {
    public let field: String
    public let message: String
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { "\(field): \(message)" }
}
