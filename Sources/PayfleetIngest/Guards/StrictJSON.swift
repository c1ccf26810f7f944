import Foundation

/// A strict pre-parse of a request body, on the raw bytes, before any JSON parser sees it:
/// nesting depth bounded, and no object with the same key twice (after unescaping: `"a"` and
/// `"\u0061"` are the same key). Two parsers that resolve duplicates differently (the guard's
/// last-wins, the decoder's first-wins) would let a card number past the guard; refusing
/// duplicates makes every parse of the body the same.
enum StrictJSON {
    enum Problem: Error, Equatable {
        case tooDeep
        case duplicateKey(String)
        case malformed
    }

    static func check(_ bytes: [UInt8], maxDepth: Int) -> Problem? {
        // The first pass builds no paths (most bodies have no problem); a duplicate key is
        // named by a second pass that does.
        let problem = check(bytes, maxDepth: maxDepth, paths: false)
        if case .duplicateKey? = problem { return check(bytes, maxDepth: maxDepth, paths: true) }
        return problem
    }

    static func check(_ bytes: [UInt8], maxDepth: Int, paths: Bool) -> Problem? {
        var p = Parser(bytes: bytes, maxDepth: maxDepth, paths: paths)
        do {
            p.skipSpace()
            try p.value(depth: 0, path: "")
            p.skipSpace()
            return p.i == bytes.count ? nil : .malformed
        } catch {
            return error
        }
    }

    struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        /// Whether to build each value's path (for the name of a duplicate key).
        let paths: Bool
        var i = 0

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 10 || bytes[i] == 13 { i += 1 }
        }

        mutating func value(depth: Int, path: String) throws(Problem) {
            guard i < bytes.count else { throw .malformed }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                guard depth < maxDepth else { throw .tooDeep }
                i += 1
                var keys = Set<[UInt8]>()
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw .malformed }
                    let key = try string()
                    var childPath = ""
                    if paths {
                        let name = String(decoding: key, as: UTF8.self)
                        childPath = path.isEmpty ? name : path + "." + name
                    }
                    guard keys.insert(key).inserted else { throw .duplicateKey(String(childPath.prefix(200))) }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw .malformed }
                    i += 1
                    skipSpace()
                    try value(depth: depth + 1, path: childPath)
                    skipSpace()
                    guard i < bytes.count else { throw .malformed }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return }
                    throw .malformed
                }
            case UInt8(ascii: "["):
                guard depth < maxDepth else { throw .tooDeep }
                i += 1
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return }
                var n = 0
                while true {
                    skipSpace()
                    try value(depth: depth + 1, path: paths ? path + "[\(n)]" : "")
                    n += 1
                    skipSpace()
                    guard i < bytes.count else { throw .malformed }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return }
                    throw .malformed
                }
            case UInt8(ascii: "\""):
                _ = try string(collect: false)
            default:
                // A number or a literal: the parser proper checks its grammar.
                let start = i
                while i < bytes.count, !(bytes[i] == UInt8(ascii: ",") || bytes[i] == UInt8(ascii: "}")
                    || bytes[i] == UInt8(ascii: "]") || bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 10 || bytes[i] == 13)
                {
                    i += 1
                }
                guard i > start else { throw .malformed }
            }
        }

        /// The unescaped UTF-8 of the string at `i` (which is at the opening quote).
        /// `collect: false` checks the string the same way without keeping its bytes (values).
        mutating func string(collect: Bool = true) throws(Problem) -> [UInt8] {
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") { i += 1; return out }
                if b < 0x20 { throw .malformed }  // raw control characters are not JSON
                if b != UInt8(ascii: "\\") {
                    if collect { out.append(b) }
                    i += 1
                    continue
                }
                guard i + 1 < bytes.count else { throw .malformed }
                let e = bytes[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(8)
                case UInt8(ascii: "f"): out.append(12)
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"),
                        bytes[i + 1] == UInt8(ascii: "u")
                    {
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw .malformed }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    let u = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw .malformed
                }
            }
            throw .malformed
        }

        mutating func hex4() throws(Problem) -> UInt32 {
            guard i + 4 <= bytes.count else { throw .malformed }
            var v: UInt32 = 0
            for k in i..<(i + 4) {
                let c = bytes[k]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                case 97...102: d = UInt32(c - 87)
                default: throw .malformed
                }
                v = v << 4 | d
            }
            i += 4
            return v
        }
    }
}
