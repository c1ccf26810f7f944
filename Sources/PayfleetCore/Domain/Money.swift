import Foundation

/// An amount of money: an integer number of minor units of one currency.
public struct Money: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Minor units (pence, cents, yen, fils).
    public var value: Int64
    public var currency: Currency

    public init(value: Int64, currency: Currency) {
        self.value = value
        self.currency = currency
    }

    enum CodingKeys: String, CodingKey { case value, currency }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        currency = try c.decode(Currency.self, forKey: .currency)
        do {
            value = try c.decode(Int64.self, forKey: .value)
        } catch DecodingError.keyNotFound(let k, let ctx) {
            throw DecodingError.keyNotFound(k, ctx)
        } catch {
            throw DecodingError.dataCorruptedError(
                forKey: .value, in: c, debugDescription: "must be an integer number of minor units")
        }
    }

    /// Parses a decimal string in major units (`"19.99"`, `"-0.5"`, `"1,234.50"` is refused)
    /// exactly, without floating point. More decimal places than the currency has are an error
    /// unless they are zeros.
    public init(major text: String, currency: Currency) throws(MoneyError) {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        var negative = false
        if s.hasPrefix("-") { negative = true; s = s.dropFirst() } else if s.hasPrefix("+") { s = s.dropFirst() }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard !s.isEmpty, parts.count <= 2, parts.allSatisfy({ $0.allSatisfy(\.isASCIIDigit) }),
              !(parts[0].isEmpty && (parts.count == 1 || parts[1].isEmpty))
        else { throw .invalidAmount(text) }
        var frac = parts.count == 2 ? String(parts[1]) : ""
        while frac.count > currency.exponent {
            guard frac.hasSuffix("0") else { throw .tooPrecise(text, currency.code) }
            frac.removeLast()
        }
        frac += String(repeating: "0", count: currency.exponent - frac.count)
        let digits = String(parts[0]) + frac
        guard let v = Int64(digits.isEmpty ? "0" : digits) else { throw .invalidAmount(text) }
        self.value = negative ? -v : v
        self.currency = currency
    }

    /// `19.99`, `-0.50`, `1000` (JPY), `1.250` (BHD): major units with exactly the exponent's digits.
    public var majorString: String {
        let e = currency.exponent
        let mag = value.magnitude
        let sign = value < 0 ? "-" : ""
        guard e > 0 else { return sign + String(mag) }
        let f = UInt64(currency.minorPerMajor)
        let frac = String(mag % f)
        return sign + String(mag / f) + "." + String(repeating: "0", count: e - frac.count) + frac
    }

    /// `£19.99`, `-£0.50`, `¥1000`.
    public var formatted: String {
        let m = Money(value: value.magnitude > 0 ? Int64(value.magnitude) : 0, currency: currency).majorString
        return (value < 0 ? "-" : "") + currency.symbol + m
    }

    public var description: String { "\(majorString) \(currency.code)" }
}

public enum MoneyError: Error, Equatable, CustomStringConvertible {
    case invalidAmount(String)
    case tooPrecise(String, String)

    public var description: String {
        switch self {
        case .invalidAmount(let s): return "'\(s)' is not a decimal amount"
        case .tooPrecise(let s, let c): return "'\(s)' has more decimal places than \(c) allows"
        }
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
