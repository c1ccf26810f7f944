/// An ISO 4217 currency with its minor-unit exponent (JPY 0, GBP 2, BHD 3).
///
/// Money in Payfleet is always an integer count of minor units; the exponent says how many
/// decimal places a major unit has. Unknown codes are rejected rather than guessed.
public struct Currency: Hashable, Sendable, Codable, CustomStringConvertible {
    public let code: String
    public let exponent: Int

    public init?(code: String) {
        let upper = code.uppercased()
        guard upper == code, let exponent = Currency.exponents[upper] else { return nil }
        self.code = upper
        self.exponent = exponent
    }

    public var description: String { code }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let cur = Currency(code: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "unknown currency '\(s)'")
        }
        self = cur
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(code)
    }

    /// 10^exponent as an integer.
    public var minorPerMajor: Int64 {
        var f: Int64 = 1
        for _ in 0..<exponent { f *= 10 }
        return f
    }

    /// A display symbol for receipts and reports; the code itself where none is common.
    public var symbol: String { Currency.symbols[code] ?? code + " " }

    static let symbols: [String: String] = [
        "GBP": "£", "EUR": "€", "USD": "$", "JPY": "¥", "CHF": "CHF ", "AUD": "A$", "CAD": "C$",
        "NZD": "NZ$", "SEK": "kr ", "NOK": "kr ", "DKK": "kr ", "INR": "₹", "BHD": "BD ", "KWD": "KD ",
    ]

    /// ISO 4217 active codes and their minor-unit exponents (ISO 4217 list one, 2024).
    static let exponents: [String: Int] = {
        var m: [String: Int] = [:]
        let zero = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
        let three = "BHD IQD JOD KWD LYD OMR TND"
        let four = "CLF UYW"
        let two = """
            AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN \
            BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP \
            GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK \
            LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK \
            NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD \
            SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VES VED WST XCD YER \
            ZAR ZMW ZWL
            """
        for c in zero.split(separator: " ") { m[String(c)] = 0 }
        for c in two.split(separator: " ") { m[String(c)] = 2 }
        for c in three.split(separator: " ") { m[String(c)] = 3 }
        for c in four.split(separator: " ") { m[String(c)] = 4 }
        return m
    }()
}
