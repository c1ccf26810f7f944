import Foundation

/// `trimmingCharacters(in: .whitespaces)` and `(in: .whitespacesAndNewlines)` without bridging to
/// `NSString` (4 % of receipt-sender's samples, on every receipt's subject, name and SMS body).
/// The same sets: `.whitespaces` is General Category Zs plus TAB; `.whitespacesAndNewlines` is
/// all of Z* (Zs, Zl, Zp) plus U+000A–U+000D and U+0085; and, as swift-corelibs-foundation has
/// it, U+200B ZERO WIDTH SPACE in both (`TrimTests` compares them with Foundation's on every
/// scalar up to U+3100 and on edge cases).
enum Trim {
    static func isWhitespace(_ u: Unicode.Scalar) -> Bool {
        if u.value < 0x80 { return u.value == 0x20 || u.value == 0x09 }
        return u.value == 0x200B || u.properties.generalCategory == .spaceSeparator
    }

    static func isWhitespaceOrNewline(_ u: Unicode.Scalar) -> Bool {
        if u.value < 0x80 { return u.value == 0x20 || (0x09...0x0D).contains(u.value) }
        if u.value == 0x85 || u.value == 0x200B { return true }
        switch u.properties.generalCategory {
        case .spaceSeparator, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    static func trimmed(_ s: String, _ drop: (Unicode.Scalar) -> Bool) -> String {
        let v = s.unicodeScalars
        var a = v.startIndex
        var b = v.endIndex
        while a < b, drop(v[a]) { a = v.index(after: a) }
        while b > a, drop(v[v.index(before: b)]) { b = v.index(before: b) }
        if a == v.startIndex, b == v.endIndex { return s }
        return String(v[a..<b])
    }

    static func whitespaces(_ s: String) -> String { trimmed(s, isWhitespace) }
    static func whitespacesAndNewlines(_ s: String) -> String { trimmed(s, isWhitespaceOrNewline) }
}
