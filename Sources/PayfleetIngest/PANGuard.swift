import Foundation

/// Finds and masks full card numbers (PCI DSS): a run of 13–19 digits, single spaces or dashes
/// allowed between digits, bounded by non-digits, that passes the Luhn check.
///
/// Runs longer than 19 digits are not card numbers (long references); windows inside them are
/// not searched, which keeps long numeric identifiers from being flagged by chance.
public enum PANGuard {
    /// A card number found at `field` (a JSON path such as `metadata.note` or `items[0].ref`).
    public struct Finding: Sendable, Equatable { public let field: String }

    /// Ranges (in `chars`) of runs that are card numbers.
    static func panRuns(_ chars: [Character]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = 0
        while i < chars.count {
            guard chars[i].isASCIIDigitChar else { i += 1; continue }
            let start = i
            var digits: [UInt8] = []
            var end = i
            var j = i
            while j < chars.count {
                if chars[j].isASCIIDigitChar {
                    digits.append(chars[j].asciiValue! - 48)
                    end = j + 1
                    j += 1
                } else if (chars[j] == " " || chars[j] == "-"), j + 1 < chars.count, chars[j + 1].isASCIIDigitChar {
                    j += 1
                } else {
                    break
                }
            }
            if (13...19).contains(digits.count) && luhn(digits) { out.append(start..<end) }
            i = max(end, i + 1)
        }
        return out
    }

    public static func luhn(_ digits: [UInt8]) -> Bool {
        var sum = 0
        for (n, d) in digits.reversed().enumerated() {
            var v = Int(d)
            if n % 2 == 1 { v *= 2; if v > 9 { v -= 9 } }
            sum += v
        }
        return sum % 10 == 0
    }

    public static func containsPAN(_ s: String) -> Bool { !panRuns(Array(s)).isEmpty }

    /// Every digit of a card number but the last four becomes `*`; separators stay.
    public static func mask(_ s: String) -> String {
        var chars = Array(s)
        for r in panRuns(chars) {
            var keep = 4
            for k in r.reversed() where chars[k].isASCIIDigitChar {
                if keep > 0 { keep -= 1 } else { chars[k] = "*" }
            }
        }
        return String(chars)
    }

    /// The first field holding a card number (canonical routes reject it), or nil.
    public static func firstFinding(in value: Any, path: String = "", exempt: (String, String) -> Bool = { _, _ in false })
        -> Finding?
    {
        switch value {
        case let d as [String: Any]:
            for (k, v) in d.sorted(by: { $0.key < $1.key }) {
                let p = path.isEmpty ? k : path + "." + k
                if let s = v as? String, exempt(k, s) { continue }
                if let f = firstFinding(in: v, path: p, exempt: exempt) { return f }
            }
            return nil
        case let a as [Any]:
            for (i, v) in a.enumerated() {
                if let f = firstFinding(in: v, path: path + "[\(i)]", exempt: exempt) { return f }
            }
            return nil
        case let s as String:
            return containsPAN(s) ? Finding(field: path) : nil
        case let n as NSNumber:
            return containsPAN(n.stringValue) ? Finding(field: path) : nil
        default:
            return nil
        }
    }

    /// Masks every card number (provider routes); returns the masked value and the fields masked.
    /// `exempt(key, value)` keeps provider identifiers unchanged.
    public static func redact(_ value: Any, path: String = "", exempt: (String, String) -> Bool) -> (Any, [String]) {
        switch value {
        case let d as [String: Any]:
            var out: [String: Any] = [:]
            var fields: [String] = []
            for (k, v) in d {
                let p = path.isEmpty ? k : path + "." + k
                if let s = v as? String, exempt(k, s) { out[k] = v; continue }
                let (nv, f) = redact(v, path: p, exempt: exempt)
                out[k] = nv
                fields += f
            }
            return (out, fields)
        case let a as [Any]:
            var out: [Any] = []
            var fields: [String] = []
            for (i, v) in a.enumerated() {
                let (nv, f) = redact(v, path: path + "[\(i)]", exempt: exempt)
                out.append(nv)
                fields += f
            }
            return (out, fields)
        case let s as String:
            guard containsPAN(s) else { return (s, []) }
            return (mask(s), [path])
        case let n as NSNumber:
            let s = n.stringValue
            guard containsPAN(s) else { return (n, []) }
            return (mask(s), [path])
        default:
            return (value, [])
        }
    }

    /// The field path without array indices, for metric labels.
    static func label(_ field: String) -> String {
        field.replacingOccurrences(of: #"\[\d+\]"#, with: "[]", options: .regularExpression)
    }
}

/// Rejects JSON nested deeper than `limit` before it reaches the parser.
enum JSONDepth {
    static func exceeds(_ bytes: [UInt8], limit: Int) -> Bool {
        var depth = 0
        var inString = false
        var escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        return false
    }
}

extension Character {
    var isASCIIDigitChar: Bool { isASCII && ("0"..."9").contains(self) }
}
