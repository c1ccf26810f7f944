import Foundation

/// A strict, allocation-light reader for the event bodies ingest itself writes (issue 17:
/// `JSONDecoder` was a tenth of a worker's time). It accepts only a subset of JSON: the known
/// keys of `payfleet.event/v1`, each at most once; strings without escapes or control characters;
/// integers in plain decimal. Anything else — an escape, an unknown key, a float, a duplicate,
/// invalid UTF-8, an unknown type or currency, a date RFC 3339 does not parse — returns nil and
/// the caller decodes with `JSONDecoder`, whose answer (or error message) stands. So for every
/// body it reads, the result is the one `JSONDecoder` gives (a test compares both on generated
/// and hand-made bodies); validation runs afterwards as before.
enum FastEventReader {
    static func read(_ body: UnsafeRawBufferPointer) -> PaymentEvent? {
        var r = Reader(bytes: body.bindMemory(to: UInt8.self))
        guard let e = r.event(), r.atEnd() else { return nil }
        return e
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func atEnd() -> Bool {
            skipSpace()
            return i == bytes.count
        }

        mutating func take(_ b: UInt8) -> Bool {
            skipSpace()
            guard i < bytes.count, bytes[i] == b else { return false }
            i += 1
            return true
        }

        mutating func takeNull() -> Bool {
            skipSpace()
            guard i + 4 <= bytes.count, bytes[i] == 0x6E, bytes[i + 1] == 0x75, bytes[i + 2] == 0x6C, bytes[i + 3] == 0x6C
            else { return false }
            i += 4
            return true
        }

        /// A string without escapes; its raw bytes (valid UTF-8 is checked by `string()`).
        mutating func rawString() -> UnsafeBufferPointer<UInt8>? {
            guard take(0x22) else { return nil }
            let start = i
            while i < bytes.count {
                let b = bytes[i]
                if b == 0x22 {
                    let s = UnsafeBufferPointer(rebasing: bytes[start..<i])
                    i += 1
                    return s
                }
                if b == 0x5C || b < 0x20 { return nil }
                i += 1
            }
            return nil
        }

        mutating func string() -> String? {
            guard let raw = rawString() else { return nil }
            return String(validating: raw, as: UTF8.self)
        }

        /// A string or null (nil: null); fails (outer nil) on anything else.
        mutating func optionalString() -> String?? {
            if takeNull() { return .some(nil) }
            guard let s = string() else { return nil }
            return .some(s)
        }

        mutating func int64() -> Int64? {
            skipSpace()
            let start = i
            if i < bytes.count, bytes[i] == 0x2D { i += 1 }
            let digits = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            let n = i - digits
            guard n > 0, n <= 18, !(n > 1 && bytes[digits] == 0x30) else { return nil }
            if i < bytes.count, bytes[i] == 0x2E || bytes[i] == 0x65 || bytes[i] == 0x45 { return nil }
            var v: Int64 = 0
            for k in digits..<i { v = v * 10 + Int64(bytes[k] - 0x30) }
            return bytes[start] == 0x2D ? -v : v
        }

        /// Walks an object's members: `member` reads the value of each key and returns false to
        /// give up. Duplicate keys are refused by the members' own bookkeeping.
        mutating func object(_ member: (inout Reader, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
            guard take(0x7B) else { return false }
            if take(0x7D) { return true }
            while true {
                guard let key = rawString(), take(0x3A), member(&self, key) else { return false }
                if take(0x2C) { continue }
                return take(0x7D)
            }
        }

        static func eq(_ key: UnsafeBufferPointer<UInt8>, _ name: StaticString) -> Bool {
            key.count == name.utf8CodeUnitCount
                && memcmp(key.baseAddress!, name.utf8Start, key.count) == 0
        }

        mutating func money() -> Money? {
            var value: Int64?
            var currency: Currency?
            let ok = object { r, key in
                if Self.eq(key, "value"), value == nil {
                    value = r.int64()
                    return value != nil
                }
                if Self.eq(key, "currency"), currency == nil {
                    currency = r.string().flatMap { Currency(code: $0) }
                    return currency != nil
                }
                return false
            }
            guard ok, let value, let currency else { return nil }
            return Money(value: value, currency: currency)
        }

        mutating func optionalMoney() -> Money?? {
            if takeNull() { return .some(nil) }
            guard let m = money() else { return nil }
            return .some(m)
        }

        /// The members of a flat object of optional strings, by index in `names`.
        mutating func strings(_ names: [StaticString], into out: inout [String?]) -> Bool {
            var seen = [Bool](repeating: false, count: names.count)
            return object { r, key in
                guard let k = names.firstIndex(where: { Self.eq(key, $0) }), !seen[k] else { return false }
                seen[k] = true
                guard case .some(let v) = r.optionalString() else { return false }
                out[k] = v
                return true
            }
        }

        mutating func date() -> Date? { string().flatMap { RFC3339.parse($0) } }

        mutating func event() -> PaymentEvent? {
            var schema: String?, id: String??, type: PaymentEvent.EventType?, occurredAt: Date?
            var receivedAt: Date??, source: PaymentEvent.Source?, merchantID: String?
            var customer: PaymentEvent.Customer??, payment: PaymentEvent.Payment??, amount: Money?
            var fee: Money??, invoiceID: String??, reference: String??, metadata: [String: String]??
            let ok = object { r, key in
                switch key.count {
                case 2 where Self.eq(key, "id") && id == nil:
                    id = r.optionalString()
                    return id != nil
                case 3 where Self.eq(key, "fee") && fee == nil:
                    fee = r.optionalMoney()
                    return fee != nil
                case 4 where Self.eq(key, "type") && type == nil:
                    type = r.string().flatMap { PaymentEvent.EventType(rawValue: $0) }
                    return type != nil
                case 6 where Self.eq(key, "schema") && schema == nil:
                    schema = r.string()
                    return schema != nil
                case 6 where Self.eq(key, "source") && source == nil:
                    var f: [String?] = [nil, nil, nil]
                    guard r.strings(["provider", "event_id", "account"], into: &f), let p = f[0], let e = f[1] else {
                        return false
                    }
                    source = PaymentEvent.Source(provider: p, eventID: e, account: f[2])
                    return true
                case 6 where Self.eq(key, "amount") && amount == nil:
                    amount = r.money()
                    return amount != nil
                case 8 where Self.eq(key, "customer") && customer == nil:
                    if r.takeNull() {
                        customer = .some(nil)
                        return true
                    }
                    var f: [String?] = [nil, nil, nil, nil]
                    guard r.strings(["id", "name", "email", "phone"], into: &f) else { return false }
                    customer = .some(PaymentEvent.Customer(id: f[0], name: f[1], email: f[2], phone: f[3]))
                    return true
                case 7 where Self.eq(key, "payment") && payment == nil:
                    if r.takeNull() {
                        payment = .some(nil)
                        return true
                    }
                    guard let p = r.payment() else { return false }
                    payment = .some(p)
                    return true
                case 8 where Self.eq(key, "metadata") && metadata == nil:
                    if r.takeNull() {
                        metadata = .some(nil)
                        return true
                    }
                    var m: [String: String] = [:]
                    let ok = r.object { r, key in
                        guard let k = String(validating: key, as: UTF8.self), m[k] == nil, let v = r.string() else {
                            return false
                        }
                        m[k] = v
                        return true
                    }
                    metadata = ok ? .some(m) : nil
                    return ok
                case 9 where Self.eq(key, "reference") && reference == nil:
                    reference = r.optionalString()
                    return reference != nil
                case 10 where Self.eq(key, "invoice_id") && invoiceID == nil:
                    invoiceID = r.optionalString()
                    return invoiceID != nil
                case 11 where Self.eq(key, "occurred_at") && occurredAt == nil:
                    occurredAt = r.date()
                    return occurredAt != nil
                case 11 where Self.eq(key, "received_at") && receivedAt == nil:
                    if r.takeNull() {
                        receivedAt = .some(nil)
                        return true
                    }
                    guard let d = r.date() else { return false }
                    receivedAt = .some(d)
                    return true
                case 11 where Self.eq(key, "merchant_id") && merchantID == nil:
                    merchantID = r.string()
                    return merchantID != nil
                default:
                    return false
                }
            }
            guard ok, let schema, let type, let occurredAt, let source, let merchantID, let amount else { return nil }
            var e = PaymentEvent(
                id: "", type: type, occurredAt: occurredAt, receivedAt: receivedAt ?? nil, source: source,
                merchantID: merchantID, customer: customer ?? nil, payment: payment ?? nil, amount: amount,
                fee: fee ?? nil, invoiceID: invoiceID ?? nil, reference: reference ?? nil, metadata: (metadata ?? nil) ?? [:])
            e.schema = schema
            e.id = (id ?? nil) ?? PaymentEvent.canonicalID(provider: source.provider, eventID: source.eventID)
            return e
        }

        mutating func payment() -> PaymentEvent.Payment? {
            var f: [String?] = [nil, nil, nil]
            var card: PaymentEvent.Card??
            var seen = [false, false, false]
            let ok = object { r, key in
                if Self.eq(key, "card") {
                    guard card == nil else { return false }
                    if r.takeNull() {
                        card = .some(nil)
                        return true
                    }
                    var c: [String?] = [nil, nil]
                    guard r.strings(["brand", "last4"], into: &c) else { return false }
                    card = .some(PaymentEvent.Card(brand: c[0], last4: c[1]))
                    return true
                }
                let names: [StaticString] = ["id", "channel", "method"]
                guard let k = names.firstIndex(where: { Self.eq(key, $0) }), !seen[k] else { return false }
                seen[k] = true
                guard case .some(let v) = r.optionalString() else { return false }
                f[k] = v
                return true
            }
            guard ok else { return nil }
            return PaymentEvent.Payment(id: f[0], channel: f[1], method: f[2], card: card ?? nil)
        }
    }
}
