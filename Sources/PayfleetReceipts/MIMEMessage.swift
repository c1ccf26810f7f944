import Crypto
import Foundation

/// An RFC 5322 / MIME email: headers with RFC 2047 encoded words where needed, and a
/// `multipart/alternative` body (plain text first, HTML last: the last part is the preferred one).
///
/// Everything is deterministic given its inputs (the boundary derives from the Message-ID), so
/// a resend after an unknown outcome is byte-for-byte the same message.
public struct MIMEMessage: Sendable, Equatable {
    public var from: MailAddress
    public var to: MailAddress
    public var subject: String
    public var date: Date
    public var messageID: String
    public var text: String
    public var html: String?
    public var extraHeaders: [(String, String)] = []

    public init(
        from: MailAddress, to: MailAddress, subject: String, date: Date, messageID: String, text: String,
        html: String?, extraHeaders: [(String, String)] = []
    ) {
        self.from = from
        self.to = to
        self.subject = subject
        self.date = date
        self.messageID = messageID
        self.text = text
        self.html = html
        self.extraHeaders = extraHeaders
    }

    public static func == (a: MIMEMessage, b: MIMEMessage) -> Bool { a.bytes == b.bytes }

    /// `<receipt.<32 hex>@domain>`: the same event always gets the same Message-ID.
    public static func messageID(eventID: String, channel: String, domain: String) -> String {
        let digest = SHA256.hash(data: Data("\(channel):\(eventID)".utf8))
        let hex = digest.prefix(16).map { String(format: "%02x", $0) }.joined()
        return "<receipt.\(hex)@\(domain)>"
    }

    /// RFC 5322 §3.3 date-time, always in UTC (`Tue, 24 Nov 2026 10:15:00 +0000`).
    public static func rfc5322Date(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return f.string(from: date)
    }

    /// The wire form: CRLF line ends, 7-bit clean (quoted-printable bodies, encoded-word headers).
    public var bytes: [UInt8] { Array(rendered.utf8) }

    public var rendered: String {
        var h: [(String, String)] = [
            ("Date", Self.rfc5322Date(date)),
            ("From", from.header),
            ("To", to.header),
            ("Subject", MIMEEncoding.encodedWords(subject)),
            ("Message-ID", messageID),
            ("MIME-Version", "1.0"),
        ]
        h += extraHeaders
        var out = ""
        let textHeaders = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        let textBody = MIMEEncoding.quotedPrintable(text)
        if let html {
            let boundary = "=_payfleet_" + String(messageID.filter { $0.isLetter || $0.isNumber }.prefix(40))
            h.append(("Content-Type", "multipart/alternative; boundary=\"\(boundary)\""))
            for (k, v) in h { out += "\(k): \(v)\r\n" }
            out += "\r\nThis is a multi-part message in MIME format.\r\n"
            out += "\r\n--\(boundary)\r\n" + textHeaders + "\r\n" + textBody + "\r\n"
            out += "\r\n--\(boundary)\r\n"
            out += "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            out += MIMEEncoding.quotedPrintable(html) + "\r\n"
            out += "\r\n--\(boundary)--\r\n"
        } else {
            for (k, v) in h { out += "\(k): \(v)\r\n" }
            out += textHeaders + "\r\n" + textBody + "\r\n"
        }
        return out
    }
}

/// A mailbox: an address with an optional display name.
public struct MailAddress: Sendable, Equatable {
    public var name: String?
    public var address: String

    public init(name: String? = nil, address: String) {
        self.name = name
        self.address = address
    }

    /// Parses `Name <addr@host>` or `addr@host`; nil when the address part is not valid.
    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let lt = t.lastIndex(of: "<"), t.hasSuffix(">") {
            let addr = String(t[t.index(after: lt)..<t.index(before: t.endIndex)])
            var name = t[..<lt].trimmingCharacters(in: .whitespaces)
            if name.hasPrefix("\""), name.hasSuffix("\""), name.count >= 2 {
                name = String(name.dropFirst().dropLast())
            }
            guard MailAddress.isValid(addr) else { return nil }
            self.init(name: name.isEmpty ? nil : name, address: addr)
        } else {
            guard MailAddress.isValid(t) else { return nil }
            self.init(address: t)
        }
    }

    /// A pragmatic check of an addr-spec: one `@`, a dot-atom-ish local part of printable ASCII
    /// without spaces, and a domain of letters, digits, hyphens and dots (or an IP literal).
    /// SMTP servers decide the rest; what passes here can never break the SMTP dialogue or a header.
    public static func isValid(_ s: String) -> Bool {
        guard s.utf8.count <= 254, let at = s.lastIndex(of: "@") else { return false }
        let local = s[..<at]
        let domain = s[s.index(after: at)...]
        guard !local.isEmpty, local.utf8.count <= 64, !domain.isEmpty else { return false }
        let localOK = local.unicodeScalars.allSatisfy { c in
            c.isASCII && c.value > 32 && c.value < 127 && !"()<>[]:;@\\,\"".unicodeScalars.contains(c)
        }
        guard localOK, !local.hasPrefix("."), !local.hasSuffix("."), !local.contains("..") else { return false }
        if domain.hasPrefix("["), domain.hasSuffix("]") { return true }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { l in
            !l.isEmpty && l.count <= 63 && !l.hasPrefix("-") && !l.hasSuffix("-")
                && l.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }
        }
    }

    public var domain: String { String(address[address.index(after: address.lastIndex(of: "@")!)...]) }

    /// `"Name" <addr>` with the name as encoded words when it is not plain ASCII.
    public var header: String {
        guard let name, !name.isEmpty else { return "<\(address)>" }
        let plain = name.unicodeScalars.allSatisfy { $0.isASCII && $0.value >= 32 && $0 != "\"" && $0 != "\\" }
        return (plain ? "\"\(name)\"" : MIMEEncoding.encodedWords(name)) + " <\(address)>"
    }
}

enum MIMEEncoding {
    /// RFC 2047 `=?UTF-8?B?…?=` words (each at most 75 characters, split on character
    /// boundaries, folded with CRLF SP) — or the text itself when it is plain short ASCII.
    static func encodedWords(_ text: String) -> String {
        let plain = text.unicodeScalars.allSatisfy { $0.isASCII && $0.value >= 32 && $0.value < 127 }
        if plain && text.count <= 900 && !text.contains("=?") { return text }
        var words: [String] = []
        var chunk: [UInt8] = []
        for ch in text {
            let b = Array(String(ch).utf8)
            if chunk.count + b.count > 45 {  // 45 bytes → 60 base64 chars + 12 of framing
                words.append("=?UTF-8?B?" + Data(chunk).base64EncodedString() + "?=")
                chunk = []
            }
            chunk += b
        }
        if !chunk.isEmpty { words.append("=?UTF-8?B?" + Data(chunk).base64EncodedString() + "?=") }
        return words.joined(separator: "\r\n ")
    }

    /// RFC 2045 §6.7 quoted-printable with CRLF hard line breaks and soft breaks at 76 columns.
    static func quotedPrintable(_ text: String) -> String {
        let normalized = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        var out: [String] = []
        for line in normalized.split(separator: "\n", omittingEmptySubsequences: false) {
            let bytes = Array(line.utf8)
            var encoded: [String] = []
            for (i, b) in bytes.enumerated() {
                let last = i == bytes.count - 1
                if (b >= 33 && b <= 126 && b != 61) || ((b == 32 || b == 9) && !last) {
                    encoded.append(String(UnicodeScalar(b)))
                } else {
                    encoded.append(String(format: "=%02X", b))
                }
            }
            var current = ""
            var lines: [String] = []
            for token in encoded {
                if current.utf8.count + token.utf8.count > 75 {
                    lines.append(current + "=")
                    current = ""
                }
                current += token
            }
            lines.append(current)
            out.append(lines.joined(separator: "\r\n"))
        }
        return out.joined(separator: "\r\n")
    }
}
