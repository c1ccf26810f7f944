import Foundation
import PayfleetCore

/// A value of a canonical record field, before mapping.
public enum FieldValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    case money(Money)
    case date(Date)
    case null

    var plain: String? {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .money(let m): return m.majorString
        case .date(let d): return RFC3339.format(d)
        case .null: return nil
        }
    }
}

/// The kinds of records a connector sends and the fields each offers to a mapping.
public enum RecordKind: String, Sendable {
    case customer
    case payment

    public enum FieldType: Sendable { case string, int, money, date }

    public var fields: [String: FieldType] {
        switch self {
        case .customer:
            return [
                "customer_id": .string, "merchant_id": .string, "currency": .string, "outstanding": .money,
                "paid": .money, "refunded": .money, "disputed": .money, "status": .string,
                "last_payment_id": .string, "last_payment_amount": .money, "last_payment_at": .date, "name": .string,
                "email": .string, "phone": .string, "version": .int, "at": .date, "event_id": .string,
                "event_type": .string,
            ]
        case .payment:
            return [
                "event_id": .string, "type": .string, "payment_id": .string, "customer_id": .string,
                "merchant_id": .string, "currency": .string, "amount": .money, "fee": .money, "occurred_at": .date,
                "invoice_id": .string, "outcome": .string, "channel": .string, "method": .string,
                "reference": .string,
            ]
        }
    }

    public static func record(_ s: CustomerSnapshot, change: CRMChange) -> [String: FieldValue] {
        let cur = Currency(code: s.currency)
        func money(_ v: Int64?) -> FieldValue {
            guard let v, let cur else { return v.map { .int($0) } ?? .null }
            return .money(Money(value: v, currency: cur))
        }
        return [
            "customer_id": .string(s.customerID), "merchant_id": .string(s.merchantID), "currency": .string(s.currency),
            "outstanding": money(s.outstanding), "paid": money(s.paid), "refunded": money(s.refunded),
            "disputed": money(s.disputed), "status": .string(s.status),
            "last_payment_id": s.lastPaymentID.map { .string($0) } ?? .null,
            "last_payment_amount": money(s.lastPaymentAmount), "last_payment_at": s.lastPaymentAt.map { .date($0) } ?? .null,
            "name": s.name.map { .string($0) } ?? .null, "email": s.email.map { .string($0) } ?? .null,
            "phone": s.phone.map { .string($0) } ?? .null, "version": .int(s.version), "at": .date(s.at),
            "event_id": .string(change.eventID), "event_type": .string(change.eventType),
        ]
    }

    public static func record(_ p: PaymentRecord) -> [String: FieldValue] {
        let cur = Currency(code: p.currency)
        func money(_ v: Int64?) -> FieldValue {
            guard let v, let cur else { return v.map { .int($0) } ?? .null }
            return .money(Money(value: v, currency: cur))
        }
        func s(_ v: String?) -> FieldValue { v.map { .string($0) } ?? .null }
        return [
            "event_id": .string(p.eventID), "type": .string(p.type), "payment_id": s(p.paymentID),
            "customer_id": .string(p.customerID), "merchant_id": .string(p.merchantID), "currency": .string(p.currency),
            "amount": money(p.amount), "fee": money(p.fee), "occurred_at": .date(p.occurredAt),
            "invoice_id": s(p.invoiceID), "outcome": s(p.outcome), "channel": s(p.channel), "method": s(p.method),
            "reference": s(p.reference),
        ]
    }
}

/// An explicit mapping from canonical fields to a target system's fields, read from
/// configuration and validated at start-up (every error names the offending key).
///
/// Each rule (a list entry) has `target` (a field name; dots nest: `properties.balance`) and
/// either `source` (a canonical field) or `constant` (a literal string), plus an optional
/// `transform`:
/// - `money` — the amount in major units as a decimal string with the currency's exponent
///   (`19.99`, `1000` for JPY, `1.250` for BHD); `minor` — integer minor units;
/// - `date` — with `timezone` (IANA, default UTC) and `format` (default `yyyy-MM-dd'T'HH:mm:ssxxx`);
/// - `lookup` — `lookup:` a mapping of values to target values, `default:` when none matches
///   (without a default an unmatched value is a permanent error naming the field);
/// - `upper`, `lower`, `string`.
/// Absent values are sent as JSON null unless `omit_null: true`.
public struct FieldMapping: Sendable {
    public enum Transform: Sendable {
        case none, money, minor, upper, lower, string
        case date(timeZone: TimeZone, format: String)
        case lookup([String: String], default: String?)
    }
    public enum Value: Sendable {
        case field(String)
        case constant(String)
    }
    public struct Rule: Sendable {
        public var target: [String]
        public var value: Value
        public var transform: Transform
        public var omitNull: Bool
        public var key: String  // the config path, for errors
    }

    public let kind: RecordKind
    public let rules: [Rule]

    public init(kind: RecordKind, rules: [Rule]) {
        self.kind = kind
        self.rules = rules
    }

    /// Reads and validates `section.key` (a list of rules) for records of `kind`.
    public static func read(_ section: ConfigSection, key: String, kind: RecordKind, required: Bool = true)
        throws(ConfigError) -> FieldMapping?
    {
        let list = try section.sectionList(key)
        if list.isEmpty {
            if required { throw ConfigError(key: section.dotted(key), message: "required: a list of {target, source|constant, transform}") }
            return nil
        }
        var rules: [Rule] = []
        var targets = Set<String>()
        let fields = kind.fields
        for s in list {
            let target = try s.requiredString("target")
            let path = target.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !path.contains(where: \.isEmpty) else {
                throw ConfigError(key: s.dotted("target"), message: "'\(target)' is not a field name")
            }
            guard targets.insert(target).inserted else {
                throw ConfigError(key: s.dotted("target"), message: "'\(target)' is mapped twice")
            }
            let source = try s.string("source")
            let constant = try s.string("constant")
            let value: Value
            var type: RecordKind.FieldType = .string
            switch (source, constant) {
            case (let src?, nil):
                guard let t = fields[src] else {
                    throw ConfigError(
                        key: s.dotted("source"),
                        message: "unknown \(kind.rawValue) field '\(src)' (known: \(fields.keys.sorted().joined(separator: ", ")))")
                }
                type = t
                value = .field(src)
            case (nil, let c?): value = .constant(c)
            case (nil, nil): throw ConfigError(key: s.dotted("source"), message: "each mapping needs source or constant")
            default: throw ConfigError(key: s.dotted("constant"), message: "give source or constant, not both")
            }
            let name = try s.string("transform") ?? ""
            let transform: Transform
            switch name {
            case "": transform = .none
            case "money", "minor":
                guard type == .money else {
                    throw ConfigError(key: s.dotted("transform"), message: "'\(name)' needs a money field; '\(source ?? "constant")' is not one")
                }
                transform = name == "money" ? .money : .minor
            case "date":
                guard type == .date else {
                    throw ConfigError(key: s.dotted("transform"), message: "'date' needs a date field; '\(source ?? "constant")' is not one")
                }
                let tzName = try s.string("timezone", default: "UTC")
                guard let tz = TimeZone(identifier: tzName) else {
                    throw ConfigError(key: s.dotted("timezone"), message: "unknown time zone '\(tzName)'")
                }
                let format = try s.string("format", default: "yyyy-MM-dd'T'HH:mm:ssxxx")
                guard !format.isEmpty else { throw ConfigError(key: s.dotted("format"), message: "must not be empty") }
                transform = .date(timeZone: tz, format: format)
            case "lookup":
                let table = try s.section("lookup")
                var map: [String: String] = [:]
                for k in table.keys { map[k] = try table.string(k) }
                guard !map.isEmpty else {
                    throw ConfigError(key: s.dotted("lookup"), message: "transform lookup needs a non-empty lookup mapping")
                }
                transform = .lookup(map, default: try s.string("default"))
            case "upper": transform = .upper
            case "lower": transform = .lower
            case "string": transform = .string
            default:
                throw ConfigError(
                    key: s.dotted("transform"),
                    message: "unknown transform '\(name)' (money, minor, date, lookup, upper, lower, string)")
            }
            if case .lookup = transform {} else { s.ignore(["lookup", "default"]) }
            if case .date = transform {} else { s.ignore(["timezone", "format"]) }
            rules.append(Rule(target: path, value: value, transform: transform, omitNull: try s.bool("omit_null", default: false), key: s.dotted("target")))
        }
        // A target may not be both a value and a parent of another target.
        for t in targets where targets.contains(where: { $0.hasPrefix(t + ".") }) {
            throw ConfigError(key: section.dotted(key), message: "'\(t)' is both a value and an object")
        }
        return FieldMapping(kind: kind, rules: rules)
    }

    /// The target JSON object for one record. Throws a permanent `MappingError` for a value
    /// the mapping cannot translate (a lookup without default).
    public func render(_ record: [String: FieldValue]) throws -> [String: Any] {
        var out: [String: Any] = [:]
        for rule in rules {
            let v: Any?
            switch rule.value {
            case .constant(let c): v = c
            case .field(let f): v = try convert(record[f] ?? .null, rule)
            }
            if v == nil && rule.omitNull { continue }
            Self.set(&out, rule.target[...], v ?? NSNull())
        }
        return out
    }

    func convert(_ value: FieldValue, _ rule: Rule) throws -> Any? {
        if value == .null { return nil }
        switch rule.transform {
        case .none:
            switch value {
            case .string(let s): return s
            case .int(let i): return NSNumber(value: i)
            case .money(let m): return NSNumber(value: m.value)
            case .date(let d): return RFC3339.format(d)
            case .null: return nil
            }
        case .money:
            if case .money(let m) = value { return m.majorString }
            return value.plain
        case .minor:
            if case .money(let m) = value { return NSNumber(value: m.value) }
            return value.plain
        case .date(let tz, let format):
            guard case .date(let d) = value else { return value.plain }
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.calendar = Calendar(identifier: .gregorian)
            f.timeZone = tz
            f.dateFormat = format
            return f.string(from: d)
        case .lookup(let table, let def):
            let key = value.plain ?? ""
            if let hit = table[key] { return hit }
            if let def { return def }
            throw MappingError(field: rule.key, message: "no lookup entry for '\(key)' and no default")
        case .upper: return value.plain?.uppercased()
        case .lower: return value.plain?.lowercased()
        case .string: return value.plain
        }
    }

    static func set(_ obj: inout [String: Any], _ path: ArraySlice<String>, _ value: Any) {
        guard let head = path.first else { return }
        if path.count == 1 {
            obj[head] = value
            return
        }
        var child = obj[head] as? [String: Any] ?? [:]
        set(&child, path.dropFirst(), value)
        obj[head] = child
    }
}

/// A record the mapping cannot translate: permanent (the message names the mapping field).
public struct MappingError: Error, CustomStringConvertible {
    public let field: String
    public let message: String
    public var description: String { "mapping \(field): \(message)" }
}

/// A `{field}` template (URL paths, external ids), validated against a record kind.
public struct FieldTemplate: Sendable {
    enum Part: Sendable {
        case literal(String)
        case field(String)
    }
    let parts: [Part]
    public let text: String

    public init(_ text: String, kind: RecordKind, key: String) throws(ConfigError) {
        self.text = text
        var parts: [Part] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            parts.append(.literal(String(rest[..<open])))
            guard let close = rest[open...].firstIndex(of: "}") else {
                throw ConfigError(key: key, message: "unclosed '{' in '\(text)'")
            }
            let name = String(rest[rest.index(after: open)..<close])
            guard kind.fields[name] != nil else {
                throw ConfigError(
                    key: key,
                    message: "unknown \(kind.rawValue) field '{\(name)}' in '\(text)' (known: \(kind.fields.keys.sorted().joined(separator: ", ")))")
            }
            parts.append(.field(name))
            rest = rest[rest.index(after: close)...]
        }
        parts.append(.literal(String(rest)))
        self.parts = parts
    }

    /// The fields the template names, in order.
    public var fields: [String] {
        parts.compactMap { if case .field(let f) = $0 { return f } else { return nil } }
    }

    /// The literal text before the first field (the whole template when it names none).
    public var fixedPrefix: String {
        if case .literal(let s) = parts.first { return s }
        return ""
    }

    /// The template filled in; each field value percent-encoded as a path segment
    /// (`encodeSegment`), so event data can never add a path segment, a query or a dot
    /// segment to the URL.
    public func render(_ record: [String: FieldValue], encode: Bool = true) throws -> String {
        var out = ""
        for p in parts {
            switch p {
            case .literal(let s): out += s
            case .field(let f):
                guard let v = record[f]?.plain, !v.isEmpty else {
                    throw MappingError(field: f, message: "'{\(f)}' in '\(text)' has no value for this record")
                }
                out += encode ? Self.encodeSegment(v) : v
            }
        }
        return out
    }

    /// Percent-encodes `value` for use inside one URL path segment: every byte of its UTF-8
    /// except ASCII letters, digits, `-`, `_` and `~` — so `/`, `?`, `#`, `%` and also `.` are
    /// encoded (`..` → `%2E%2E`, which no client or server resolves as the parent path;
    /// RFC 3986 §6.2.2.2 normalizes only percent-encoded unreserved characters that were
    /// sent unencoded).
    public static func encodeSegment(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for b in value.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to n: Int) -> String {
        count >= n ? self : String(repeating: "0", count: n - count) + self
    }
}
