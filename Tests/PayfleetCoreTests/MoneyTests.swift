import Foundation
import PayfleetCore
import Testing

struct MoneyTests {
    @Test("ISO 4217 exponents", arguments: [("JPY", 0), ("GBP", 2), ("EUR", 2), ("BHD", 3), ("KWD", 3), ("CLF", 4)])
    func exponents(code: String, exponent: Int) throws {
        #expect(try #require(Currency(code: code)).exponent == exponent)
    }

    @Test func unknownAndLowercaseCodesAreRefused() {
        #expect(Currency(code: "XXZ") == nil)
        #expect(Currency(code: "gbp") == nil)
        #expect(Currency(code: "") == nil)
    }

    @Test("Major-unit strings convert exactly", arguments: [
        ("19.99", "GBP", Int64(1999)), ("0.5", "GBP", 50), ("1000", "JPY", 1000), ("1.250", "BHD", 1250),
        ("-3.10", "EUR", -310), ("12.300", "GBP", 1230), ("0.1", "BHD", 100), ("92233720368547758.07", "USD", 9_223_372_036_854_775_807),
    ])
    func parseMajor(text: String, code: String, minor: Int64) throws {
        #expect(try Money(major: text, currency: Currency(code: code)!).value == minor)
    }

    @Test("Bad amounts name the problem", arguments: ["1.999", "abc", "", "1,50", "1.2.3", ".", "-", "10.5"])
    func parseBad(text: String) {
        let cur = text == "10.5" ? Currency(code: "JPY")! : Currency(code: "GBP")!
        #expect(throws: MoneyError.self) { try Money(major: text, currency: cur) }
    }

    @Test func formatting() {
        #expect(Money(value: 1999, currency: Currency(code: "GBP")!).majorString == "19.99")
        #expect(Money(value: -5, currency: Currency(code: "GBP")!).majorString == "-0.05")
        #expect(Money(value: 1000, currency: Currency(code: "JPY")!).majorString == "1000")
        #expect(Money(value: 1005, currency: Currency(code: "BHD")!).majorString == "1.005")
        #expect(Money(value: 1999, currency: Currency(code: "GBP")!).formatted == "£19.99")
        #expect(Money(value: -1999, currency: Currency(code: "EUR")!).formatted == "-€19.99")
    }

    @Test func roundTripEveryValueOfAnExponent() throws {
        let bhd = Currency(code: "BHD")!
        for v in stride(from: Int64(-2000), through: 2000, by: 7) {
            let m = Money(value: v, currency: bhd)
            #expect(try Money(major: m.majorString, currency: bhd).value == v)
        }
    }
}
