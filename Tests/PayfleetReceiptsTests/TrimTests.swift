import Foundation
import Testing

@testable import PayfleetReceipts

/// `Trim` answers what Foundation's `trimmingCharacters(in:)` answers for the two sets it
/// replaces, scalar by scalar and on mixed strings.
@Suite struct TrimTests {
    static let scalars: [Unicode.Scalar] = (0...0x3100).compactMap(Unicode.Scalar.init)
        + [0xFEFF, 0x1F642, 0xE0020, 0x10FFFD].compactMap { Unicode.Scalar(UInt32($0)) }

    @Test("every scalar up to U+3100, alone and around text, trims as Foundation trims it")
    func sameAsFoundation() {
        var mismatches: [String] = []
        for u in Self.scalars {
            for s in ["\(u)", "\(u)x\(u)", "\(u)\(u) a b \(u)", "x\(u)"] {
                if Trim.whitespaces(s) != s.trimmingCharacters(in: .whitespaces) { mismatches.append("ws U+\(String(u.value, radix: 16))") }
                if Trim.whitespacesAndNewlines(s) != s.trimmingCharacters(in: .whitespacesAndNewlines) {
                    mismatches.append("wsnl U+\(String(u.value, radix: 16))")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(20))")
    }

    @Test("edge cases: empty, all blank, combining marks, emoji, CRLF")
    func edges() {
        for s in ["", " ", "\t\n\r ", " \u{301}x ", "\u{3000}山田\u{3000}", " 🙂 ", "a\r\n", "\u{2028}x\u{2029}", "\u{85}z\u{A0}"] {
            #expect(Trim.whitespaces(s) == s.trimmingCharacters(in: .whitespaces), "\(Array(s.unicodeScalars))")
            #expect(Trim.whitespacesAndNewlines(s) == s.trimmingCharacters(in: .whitespacesAndNewlines), "\(Array(s.unicodeScalars))")
        }
    }
}
