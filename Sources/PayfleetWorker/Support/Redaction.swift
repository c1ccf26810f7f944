import Foundation

/// Removes personal data and credentials from text that leaves a process as a diagnostic:
/// reply excerpts of a CRM, an SMTP server or an SMS provider in errors (dead-letter headers,
/// journals, `/readyz`'s `last_error`). DESIGN §1: admin listeners carry no personal data.
///
/// What is replaced (by `[email]`, `[phone]`, `[redacted]`):
/// - email addresses (`local@domain.tld`, `local@[literal]`; the local part without `/`, `=`
///   or `?`, so a URL before it stays readable);
/// - phone numbers: a run of digits with spaces, dashes, dots or parentheses that starts with
///   `+` and holds at least 7 digits, or holds at least 9 digits without a `+` (so dates,
///   times, status codes and amounts of ordinary size stay readable);
/// - credentials: the value after `Bearer` / `Basic`, after a key named like a secret
///   (`token`, `access_token`, `api_key`, `password`, `secret`, `authorization`, … with `=`,
///   `:` or `"…": "…"`), and values with a known secret prefix (`sk_live_…`, `whsec_…`,
///   `pat-…`, JWTs), and `user:password@` in URLs;
/// - the exact `secrets` given (the configured credentials of the caller).
public enum Redaction {
    /// The patterns as written (pattern, replacement).
    static let sources: [(String, String)] = [
            // Key names that announce a secret, JSON or form or header style.
            (
                #"(?i)("?\b(?:access_token|refresh_token|id_token|token|api[_-]?key|apikey|password|passwd|secret|client_secret|authorization|auth_token)\b"?\s*[:=]\s*"?)(?:bearer\s+|basic\s+)?[^\s"',;&}\]]+"#,
                "$1[redacted]"
            ),
            (#"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}"#, "$1 [redacted]"),
            (#"(?i)\btoken\s+[A-Za-z0-9._\-]{8,}"#, "token [redacted]"),
            (#"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+"#, "[redacted]"),
            (#"\bwhsec_[A-Za-z0-9+/=]+"#, "[redacted]"),
            (#"\bpat-[a-z0-9]{2,4}-[A-Za-z0-9\-]{8,}"#, "[redacted]"),
            (#"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"#, "[redacted]"),
            // Credentials in URLs (`amqp://user:pass@host`).
            (#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"#, "$1[redacted]@"),
            // Email addresses, including address literals.
            (
                #"[A-Za-z0-9.!#$%&'*+^_`{|}~\-]+@(?:\[[^\]\s]*\]|[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+)"#,
                "[email]"
            ),
        ]

    /// Compiled without `try!`: a pattern that did not compile would be skipped, never crash a
    /// worker on its error path (a test checks that every one compiles).
    static let patterns: [(NSRegularExpression, String)] = sources.compactMap { p in
        (try? NSRegularExpression(pattern: p.0)).map { ($0, p.1) }
    }

    /// True when every pattern compiled.
    public static var allPatternsCompile: Bool { patterns.count == sources.count }

    /// `text` with emails, phone numbers and credentials replaced; `secrets` (values of at
    /// least 4 characters) are replaced wherever they occur.
    public static func redact(_ text: String, secrets: [String] = []) -> String {
        var s = text
        for secret in secrets where secret.count >= 4 {
            s = s.replacingOccurrences(of: secret, with: "[redacted]")
        }
        for (re, template) in patterns {
            let range = NSRange(s.startIndex..., in: s)
            s = re.stringByReplacingMatches(in: s, options: [], range: range, withTemplate: template)
        }
        return redactPhones(s)
    }

    /// Replaces phone-number-like runs (see the type's documentation).
    static func redactPhones(_ text: String) -> String {
        let chars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        func isDigit(_ c: Unicode.Scalar) -> Bool { c.value >= 48 && c.value <= 57 }
        func isSeparator(_ c: Unicode.Scalar) -> Bool { c == " " || c == "-" || c == "." || c == "(" || c == ")" }
        func isWordChar(_ c: Unicode.Scalar) -> Bool {
            isDigit(c) || (c.value >= 65 && c.value <= 90) || (c.value >= 97 && c.value <= 122) || c == "_"
        }
        while i < chars.count {
            let c = chars[i]
            let startsRun = (c == "+" && i + 1 < chars.count && isDigit(chars[i + 1])) || isDigit(c) || c == "("
            // A run starts at a word boundary only (not inside `evt_01J5…` or `v61.0`).
            if startsRun && (i == 0 || !isWordChar(chars[i - 1])) {
                var j = i + (c == "+" ? 1 : 0)
                var digits = 0
                var lastDigit = -1
                while j < chars.count {
                    let ch = chars[j]
                    if isDigit(ch) {
                        digits += 1
                        lastDigit = j
                    } else if isSeparator(ch) {
                        // Two separators in a row end a number, except `) ` and ` (`.
                        if j > i {
                            let prev = chars[j - 1]
                            if isSeparator(prev) && !((prev == ")" && ch == " ") || (prev == " " && ch == "(")) {
                                break
                            }
                        }
                    } else {
                        break
                    }
                    j += 1
                }
                let end = lastDigit + 1
                // Not followed by a letter or digit, nor by `:` (a time of day, `10:15`).
                let boundary = end >= chars.count || (!isWordChar(chars[end]) && chars[end] != ":")
                let plus = c == "+"
                if lastDigit >= 0 && boundary && ((plus && digits >= 7) || digits >= 9) {
                    out.append(contentsOf: "[phone]".unicodeScalars)
                    i = end
                    continue
                }
            }
            out.append(c)
            i += 1
        }
        return String(out)
    }
}
