import Foundation

/// Finds and masks full card numbers (PCI DSS): 13–19 digits, single spaces or dashes allowed
/// between digits, that pass the Luhn check — anywhere inside a longer run of digits too
/// (`4111 1111 1111 1111 12/25`, `ref 1 4242424242424242`): every 13–19-digit window of a run
/// is checked, in O(1) each with prefix sums, so a long run cannot make the scan slow.
public enum PANGuard {
    /// A card number found at `field` (a JSON path such as `metadata.note` or `items[0].ref`).
    public struct Finding: Sendable, Equatable { public let field: String }

    /// Whether `path` / `key` / `value` is a provider identifier that stays unchanged.
    public typealias Exemption = (_ path: String, _ key: String, _ value: String) -> Bool

    /// Byte offsets (in `bytes`) of the digits to mask: every digit of each Luhn-valid window
    /// but its last four. Empty: no card number.
    static func maskOffsets(_ bytes: [UInt8]) -> [Int] {
        var out: [Int] = []
        var i = 0
        let n = bytes.count
        func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
        while i < n {
            guard isDigit(bytes[i]) else { i += 1; continue }
            // One run: digits, each separated from the next by at most one space or dash.
            var pos: [Int] = []
            var j = i
            while j < n {
                if isDigit(bytes[j]) {
                    pos.append(j)
                    j += 1
                } else if bytes[j] == 32 || bytes[j] == 45, j + 1 < n, isDigit(bytes[j + 1]) {
                    j += 1
                } else {
                    break
                }
            }
            i = j
            let count = pos.count
            guard count >= 13 else { continue }
            // p[par][k]: Luhn contribution of digits 0..<k when digits of index parity `par` are doubled.
            var p0 = [Int](repeating: 0, count: count + 1)
            var p1 = [Int](repeating: 0, count: count + 1)
            for k in 0..<count {
                let d = Int(bytes[pos[k]] - 48)
                let doubled = d * 2 > 9 ? d * 2 - 9 : d * 2
                p0[k + 1] = p0[k] + (k % 2 == 0 ? doubled : d)
                p1[k + 1] = p1[k] + (k % 2 == 1 ? doubled : d)
            }
            var masked = [Bool](repeating: false, count: count)
            for s in 0..<count {
                for len in 13...19 where s + len <= count {
                    let e = s + len
                    // Doubled from the right: index k is doubled when (e - 1 - k) is odd, i.e. k % 2 == e % 2.
                    let sum = e % 2 == 0 ? p0[e] - p0[s] : p1[e] - p1[s]
                    if sum % 10 == 0 { for k in s..<(e - 4) { masked[k] = true } }
                }
            }
            for k in 0..<count where masked[k] { out.append(pos[k]) }
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

    public static func containsPAN(_ s: String) -> Bool {
        // A card number has at least 13 digits: most strings (ids, names, emails) have fewer,
        // and are answered without copying their bytes.
        var digits = 0
        for b in s.utf8 where b >= 48 && b <= 57 {
            digits += 1
            if digits >= 13 { return !maskOffsets(Array(s.utf8)).isEmpty }
        }
        return false
    }

    /// Whether any key or value inside `value` holds a card number (what `redact` would mask
    /// were nothing exempt): when none does, `redact` has nothing to do.
    static func holdsPAN(_ value: Any) -> Bool {
        switch value {
        case let d as [String: Any]:
            for (k, v) in d where containsPAN(k) || holdsPAN(v) { return true }
            return false
        case let a as [Any]:
            return a.contains { holdsPAN($0) }
        case let s as String:
            return containsPAN(s)
        case let n as NSNumber:
            return containsPAN(n.stringValue)
        default:
            return false
        }
    }

    /// Every digit of a card number but the last four becomes `*`; separators stay.
    public static func mask(_ s: String) -> String {
        var bytes = Array(s.utf8)
        let offsets = maskOffsets(bytes)
        guard !offsets.isEmpty else { return s }
        for o in offsets { bytes[o] = UInt8(ascii: "*") }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func child(_ path: String, _ key: String) -> String { path.isEmpty ? key : path + "." + key }

    /// The first field holding a card number — in a value or in an object key — or nil.
    public static func firstFinding(in value: Any, path: String = "", exempt: Exemption = { _, _, _ in false }) -> Finding? {
        switch value {
        case let d as [String: Any]:
            for (k, v) in d.sorted(by: { $0.key < $1.key }) {
                let p = child(path, k)
                if containsPAN(k) { return Finding(field: child(path, "<key>")) }
                if let s = v as? String, exempt(p, k, s) { continue }
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

    /// Masks every card number (provider routes), in values and in object keys; returns the
    /// masked value and the fields masked. `exempt` keeps provider identifiers unchanged.
    public static func redact(_ value: Any, path: String = "", exempt: Exemption) -> (Any, [String]) {
        // The common case, a payload without a card number, is returned as it came: no copy,
        // no paths built (the scan below was 9 % of ingest's CPU in the fleet benchmark).
        if path.isEmpty && !holdsPAN(value) { return (value, []) }
        switch value {
        case let d as [String: Any]:
            var out: [String: Any] = [:]
            var fields: [String] = []
            for (k0, v) in d {
                var k = k0
                if containsPAN(k0) {
                    k = mask(k0)
                    fields.append(child(path, "<key>"))
                }
                let p = child(path, k)
                // Only a value that holds a card number can need its exemption.
                if let s = v as? String, containsPAN(s), exempt(p, k0, s) { out[k] = v; continue }
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
    /// Keys under `metadata` are the sender's: they collapse to `metadata.*`, so a label set
    /// stays bounded whatever keys a request carries.
    static func label(_ field: String) -> String {
        var l = field.replacingOccurrences(of: #"\[\d+\]"#, with: "[]", options: .regularExpression)
        if let r = l.range(of: "metadata.") { l = String(l[..<r.upperBound]) + "*" }
        return String(l.prefix(120))
    }
}
