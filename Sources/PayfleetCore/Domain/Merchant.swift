import Foundation

/// A merchant as configured under `merchants:` (DESIGN §7).
///
/// Keys: `id` (required), `name`, `timezone` (IANA, default `UTC`), `cutoff` (`HH:MM`, default
/// `00:00`: the business day starts then), `currencies` (ISO codes), `stripe_account`,
/// `adyen_merchant_account`, `ledger_name` (account-name segment; default derived from the id).
public struct Merchant: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var timeZone: String
    public var cutoffMinutes: Int
    public var currencies: [String]
    public var stripeAccount: String?
    public var adyenMerchantAccount: String?
    public var ledgerName: String

    public init(
        id: String, name: String? = nil, timeZone: String = "UTC", cutoffMinutes: Int = 0,
        currencies: [String] = [], stripeAccount: String? = nil, adyenMerchantAccount: String? = nil,
        ledgerName: String? = nil
    ) {
        self.id = id
        self.name = name ?? id
        self.timeZone = timeZone
        self.cutoffMinutes = cutoffMinutes
        self.currencies = currencies
        self.stripeAccount = stripeAccount
        self.adyenMerchantAccount = adyenMerchantAccount
        self.ledgerName = ledgerName ?? Merchant.accountSegment(id)
    }

    /// Sanitizes an id into an account-name segment hledger, ledger and beancount all accept:
    /// first letter upper-cased, every character outside `[A-Za-z0-9-]` replaced by `-`.
    public static func accountSegment(_ raw: String) -> String {
        // Plain ASCII without a CR LF pair (one Character of two bytes) maps byte by byte, with
        // the same result as the Character walk below and a tenth of its cost.
        var bytes = Array(raw.utf8)
        if !bytes.isEmpty, bytes.allSatisfy({ $0 < 0x80 && $0 != UInt8(ascii: "\r") }) {
            for i in bytes.indices {
                let b = bytes[i]
                let keep = b.isASCIIAlphanumeric || b == 0x2D
                if !keep { bytes[i] = 0x2D }
            }
            if bytes[0] >= 0x61 && bytes[0] <= 0x7A {
                bytes[0] -= 0x20
            } else if bytes[0] == 0x2D {
                bytes.insert(UInt8(ascii: "X"), at: 0)
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        var out = String(raw.map { c -> Character in
            (c.isASCII && (c.isLetter || c.isNumber)) || c == "-" ? c : "-"
        })
        if out.isEmpty { out = "X" }
        let first = out.removeFirst()
        var head = String(first).uppercased()
        // beancount requires a component to start with a capital letter or digit.
        if !(first.isLetter || first.isNumber) { head = "X" + String(first) }
        return head + out
    }

    /// The merchant's business day for an instant: the local date in its time zone, shifted
    /// back by the cut-off (an event at 01:30 with a 02:00 cut-off belongs to the previous day).
    public func businessDay(for instant: Date) -> String {
        // Wall-clock arithmetic on the zone's offset at that instant (one cached TimeZone
        // lookup, no Calendar): the local time of day decides against the cut-off, so DST days
        // keep the configured cut-off hour. Equal to the Calendar computation (a test compares
        // them across DST zones and odd offsets).
        let zone = Merchant.zone(timeZone)
        let t = Int64(instant.timeIntervalSince1970.rounded(.down))
        let local = t + Int64(zone.secondsFromGMT(for: instant))
        var days = local >= 0 ? local / 86_400 : (local - 86_399) / 86_400
        let minutes = Int((local - days * 86_400) / 60)
        if minutes < cutoffMinutes { days -= 1 }
        let (y, m, d) = RFC3339.civil(fromDays: days)
        return Merchant.dayString(y, m, d)
    }

    /// TimeZones by identifier (creating one parses tzdata): made once per zone.
    static let zones = Locked<[String: TimeZone]>([:])
    static func zone(_ id: String) -> TimeZone {
        if let z = zones.withLock({ $0[id] }) { return z }
        let z = TimeZone(identifier: id) ?? TimeZone(identifier: "UTC")!
        zones.withLock { $0[id] = z }
        return z
    }

    static func dayString(_ y: Int, _ m: Int, _ d: Int) -> String {
        func pad(_ v: Int, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        return pad(y, 4) + "-" + pad(m, 2) + "-" + pad(d, 2)
    }

    /// Reads one entry of `merchants:`.
    public static func read(_ s: ConfigSection) throws(ConfigError) -> Merchant {
        let id = try s.requiredString("id")
        let tz = try s.string("timezone", default: "UTC")
        guard TimeZone(identifier: tz) != nil else {
            throw ConfigError(key: s.dotted("timezone"), message: "'\(tz)' is not an IANA time zone")
        }
        let cutoff = try s.string("cutoff", default: "00:00")
        guard let mins = parseCutoff(cutoff) else {
            throw ConfigError(key: s.dotted("cutoff"), message: "'\(cutoff)' is not HH:MM")
        }
        let currencies = try s.stringList("currencies") ?? []
        for (i, c) in currencies.enumerated() where Currency(code: c) == nil {
            throw ConfigError(key: s.dotted("currencies") + "[\(i)]", message: "'\(c)' is not an ISO 4217 code")
        }
        return Merchant(
            id: id, name: try s.string("name"), timeZone: tz, cutoffMinutes: mins, currencies: currencies,
            stripeAccount: try s.string("stripe_account"), adyenMerchantAccount: try s.string("adyen_merchant_account"),
            ledgerName: try s.string("ledger_name"))
    }

    public static func parseCutoff(_ s: String) -> Int? {
        let p = s.split(separator: ":")
        guard p.count == 2, let h = Int(p[0]), let m = Int(p[1]), (0..<24).contains(h), (0..<60).contains(m)
        else { return nil }
        return h * 60 + m
    }
}
