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

/// Encoding and decoding of events on the wire (RFC 3339 dates, sorted keys).
public enum EventCodec {
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { dec in
            let c = try dec.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = RFC3339.parse(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not an RFC 3339 date-time")
            }
            return date
        }
        return d
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(RFC3339.format(date))
        }
        return e
    }

    /// Decodes and validates; any failure is an `EventDecodingError` that names the problem.
    public static func decode(_ data: Data) throws(EventDecodingError) -> PaymentEvent {
        let event: PaymentEvent
        do {
            event = try decoder().decode(PaymentEvent.self, from: data)
        } catch let e as DecodingError {
            if case .typeMismatch(_, let ctx) = e, ctx.codingPath.isEmpty {
                throw EventDecodingError(message: "body is not a JSON object")
            }
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty {
                throw EventDecodingError(message: "body is not a JSON object (not valid JSON)")
            }
            throw EventDecodingError(message: describe(e))
        } catch {
            throw EventDecodingError(message: "\(error)")
        }
        do { try event.validate() } catch { throw EventDecodingError(message: error.description) }
        return event
    }

    public static func encode(_ event: PaymentEvent) -> Data {
        // Encoding a value type of strings and integers cannot fail.
        (try? encoder().encode(event)) ?? Data()
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        switch e {
        case .keyNotFound(let k, let ctx):
            let p = path(ctx.codingPath + [k])
            return "\(p): required field missing"
        case .typeMismatch(let t, let ctx): return "\(path(ctx.codingPath)): expected \(t)"
        case .valueNotFound(let t, let ctx): return "\(path(ctx.codingPath)): expected \(t), found null"
        case .dataCorrupted(let ctx):
            let p = path(ctx.codingPath)
            return p.isEmpty ? ctx.debugDescription : "\(p): \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

public struct EventDecodingError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// RFC 3339 timestamps, UTC on output, any offset and optional fractions on input.
public enum RFC3339 {
    public static func format(_ date: Date) -> String {
        let t = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = t >= 0 ? t / 86_400 : (t - 86_399) / 86_400
        let secs = Int(t - days * 86_400)
        let (y, m, d) = civil(fromDays: days)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let year = String(repeating: "0", count: max(0, 4 - String(y).count)) + String(y)
        return "\(year)-\(two(m))-\(two(d))T\(two(secs / 3600)):\(two((secs % 3600) / 60)):\(two(secs % 60))Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (RFC 3339 §5.6) without a formatter:
    /// a hand-written parser is some 50 times faster, and every event carries two dates.
    public static func parse(_ s: String) -> Date? {
        var u = Array(s.utf8)
        guard u.count >= 20 else { return nil }
        func num(_ i: Int, _ n: Int) -> Int? {
            var v = 0
            for k in i..<(i + n) {
                guard k < u.count, u[k] >= 48, u[k] <= 57 else { return nil }
                v = v * 10 + Int(u[k] - 48)
            }
            return v
        }
        if u[10] == UInt8(ascii: "t") || u[10] == UInt8(ascii: " ") { u[10] = UInt8(ascii: "T") }
        guard let y = num(0, 4), u[4] == 45, let mo = num(5, 2), u[7] == 45, let d = num(8, 2), u[10] == 84,
            let h = num(11, 2), u[13] == 58, let mi = num(14, 2), u[16] == 58, let se = num(17, 2),
            (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61
        else { return nil }
        var i = 19
        var frac = 0.0
        if i < u.count, u[i] == 46 {
            i += 1
            var scale = 0.1
            let start = i
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                frac += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < u.count else { return nil }
        var offset = 0
        switch u[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard i + 1 == u.count else { return nil }
        case 43, 45:
            guard i + 6 == u.count, let oh = num(i + 1, 2), u[i + 3] == 58, let om = num(i + 4, 2) else { return nil }
            offset = (oh * 3600 + om * 60) * (u[i] == 45 ? -1 : 1)
        default:
            return nil
        }
        // Reject 31 February and friends.
        let days = daysFromCivil(y, mo, d)
        guard civil(fromDays: days) == (y, mo, d) else { return nil }
        let t = days * 86_400 + Int64(h * 3600 + mi * 60 + se) - Int64(offset)
        return Date(timeIntervalSince1970: Double(t) + frac)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    public static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = Int64(m <= 2 ? y0 - 1 : y0)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64((m + 9) % 12)
        let doy = (153 * mp + 2) / 5 + Int64(d) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// (year, month, day) of a day count since 1970-01-01.
    public static func civil(fromDays z0: Int64) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), Int(m), Int(d))
    }
}

enum Base32 {
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    static func crockford<S: Sequence<UInt8>>(_ bytes: S) -> String {
        var out = ""
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = (buffer << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return out
    }
}
