import Foundation

/// The grouping key of `dlq list --group-by error`: the error class plus the message with ids,
/// numbers, quoted values and timestamps replaced by placeholders, so that "attempt 4 of 4
/// failing for evt_01J…" and "attempt 4 of 4 failing for evt_09K…" are one group.
public struct ErrorFingerprint: Sendable, Hashable {
    public let errorClass: String
    public let normalized: String
    /// 8 hex digits naming the group (`dlq replay W --error <id>`).
    public let id: String

    public init(_ error: String) {
        let (cls, message) = ErrorFingerprint.split(error)
        errorClass = cls
        normalized = ErrorFingerprint.normalize(message)
        id = String(ErrorFingerprint.digest(Array((cls + "\n" + normalized).utf8)).suffix(8))
    }

    /// A fingerprint as stored (the dead-letter index keeps class, normalized text and id).
    public init(errorClass: String, normalized: String, id: String) {
        self.errorClass = errorClass
        self.normalized = normalized
        self.id = id
    }

    public var text: String { normalized.isEmpty ? errorClass : "\(errorClass): \(normalized)" }

    /// `InvalidEvent: amount.value: must not be negative` → (`InvalidEvent`, the rest). A text
    /// without a leading identifier and colon has class `Error`.
    public static func split(_ error: String) -> (String, String) {
        if let r = error.range(of: ": ") {
            let head = error[..<r.lowerBound]
            if !head.isEmpty, head.count <= 64,
                head.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" })
            {
                return (String(head), String(error[r.upperBound...]))
            }
        }
        return ("Error", error)
    }

    public static let patterns: [(String, String)] = [
        // Quoted values are data ('…' and "…").
        (#"'[^']*'"#, "'<v>'"),
        (#""[^"]*""#, "\"<v>\""),
        (#"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"#, "<time>"),
        (#"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"#, "<uuid>"),
        // Prefixed ids: evt_01JD…, pi_3Q…, cus_12, acct_1Acme, ch_…
        // (a digit or a capital after the underscore: `evt_` + base32 may lack digits, while
        // `demo_fault` or `m_acme` are names).
        (#"\b[A-Za-z]{1,12}_(?=[A-Za-z0-9_\-]*[0-9A-Z])[A-Za-z0-9_\-]+\b"#, "<id>"),
        // Long tokens mixing letters and digits (base32/hex ids, references).
        (#"\b(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{8,}\b"#, "<id>"),
        (#"[-+]?\b\d+(\.\d+)?\b"#, "<n>"),
    ]
    /// The patterns are constants (a unit test checks each compiles); one that did not would be
    /// skipped rather than crash an operator's command.
    nonisolated(unsafe) public static let rules: [(NSRegularExpression, String)] = patterns.compactMap { p in
        (try? NSRegularExpression(pattern: p.0)).map { ($0, p.1) }
    }

    public static func normalize(_ message: String) -> String {
        var s = message
        for (re, template) in rules {
            s = re.stringByReplacingMatches(
                in: s, range: NSRange(s.startIndex..., in: s), withTemplate: NSRegularExpression.escapedTemplate(for: template))
        }
        return s.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    /// Whether `--error TEXT` selects this error: the group id, or a substring of the error as
    /// written or of its normalized form.
    public func matches(_ text: String, error: String) -> Bool {
        text.lowercased() == id || error.contains(text) || self.text.contains(text)
    }
}

extension ErrorFingerprint {
    /// FNV-1a 64 in hex: enough to name a group or an id-less body; not a security property.
    public static func digest(_ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }
}
