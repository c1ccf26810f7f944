import Foundation

/// Loose readers for JSONSerialization values.
enum JSONValue {
    static func string(_ v: Any?) -> String? {
        switch v {
        case let s as String: return s
        case let n as NSNumber:
            return n.stringValue
        case let i as Int: return String(i)
        case let i as Int64: return String(i)
        default: return nil
        }
    }

    static func int64(_ v: Any?) -> Int64? {
        switch v {
        case let n as NSNumber:
            let text = n.stringValue
            guard !text.contains("."), !text.lowercased().contains("e") else { return nil }
            return Int64(text)
        case let s as String: return Int64(s)
        case let i as Int: return Int64(i)
        case let i as Int64: return i
        default: return nil
        }
    }
}
