import Crypto
import PayfleetCore
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

    /// A message that must not be sent: a header would break (CR or LF in a value, a bad
    /// header name) or an address is not a strict addr-spec.
    public struct Invalid: Error, CustomStringConvertible, Sendable, Equatable {
        public let field: String
        public let reason: String
        public var description: String { "\(field): \(reason)" }
    }

    /// Checks everything that goes into a header or the SMTP envelope, before anything is sent:
    /// both addresses strictly (`MailAddress.isValid`, address literals only a dotted quad or
    /// `IPv6:`), no CR, LF or other control character in display names, subject, Message-ID
    /// or extra header values, header names of printable ASCII without `:`. Throws the first
    /// problem found; every transport calls it, so no header is ever injected.
    public func validate() throws(Invalid) {
        for (field, a) in [("from", from), ("to", to)] {
            guard MailAddress.isValid(a.address) else { throw Invalid(field: field, reason: "not a valid address") }
            if let n = a.name, MIMEEncoding.hasControl(n) {
                throw Invalid(field: field, reason: "display name contains CR, LF or another control character")
            }
        }
        if MIMEEncoding.hasControl(subject) {
            throw Invalid(field: "Subject", reason: "contains CR, LF or another control character")
        }
        guard messageID.hasPrefix("<"), messageID.hasSuffix(">"), messageID.count > 2,
            messageID.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 }),
            !messageID.dropFirst().dropLast().contains(where: { "<>".contains($0) })
        else { throw Invalid(field: "Message-ID", reason: "not <id@domain> of printable ASCII") }
        for (k, v) in extraHeaders {
            guard !k.isEmpty, k.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 && $0 != ":" }) else {
                throw Invalid(field: "header name", reason: "not printable ASCII without ':'")
            }
            guard !MIMEEncoding.hasControl(v) else {
                throw Invalid(field: k, reason: "contains CR, LF or another control character")
            }
        }
    }

    /// `<receipt.<32 hex>@domain>`: the same event always gets the same Message-ID.
    public static func messageID(eventID: String, channel: String, domain: String) -> String {
        let digest = SHA256.hash(data: Data("\(channel):\(eventID)".utf8))
        let digits = Array("0123456789abcdef".utf8)
        let hex = String(decoding: digest.prefix(16).flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }, as: UTF8.self)
        return "<receipt.\(hex)@\(domain)>"
    }

    /// RFC 5322 §3.3 date-time, always in UTC (`Tue, 24 Nov 2026 10:15:00 +0000`). Written out
    /// by hand: a `DateFormatter` per message (an ICU formatter opened each time) was an eighth
    /// of receipt-sender's time.
    public static func rfc5322Date(_ date: Date) -> String {
        let t = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = t >= 0 ? t / 86_400 : (t - 86_399) / 86_400
        let secs = Int(t - days * 86_400)
        let (y, m, d) = RFC3339.civil(fromDays: days)
        // 1970-01-01 was a Thursday.
        let weekday = Int(((days % 7) + 7 + 3) % 7)
        let names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : String(n) }
        return "\(names[weekday]), \(two(d)) \(months[m - 1]) \(y) \(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60)) +0000"
    }

    /// `=_payfleet_` and the first 40 letters and digits of the Message-ID. An ASCII id (every
    /// id this worker makes) is filtered byte by byte: the `Character` properties were a
    /// fiftieth of receipt-sender's time. Anything else takes the general rule.
    static func boundary(_ messageID: String) -> String {
        let utf8 = messageID.utf8
        guard utf8.allSatisfy({ $0 < 0x80 }) else { return unicodeBoundary(messageID) }
        var kept: [UInt8] = []
        kept.reserveCapacity(40)
        for b in utf8 where kept.count < 40 {
            if b.isASCIIAlphanumeric { kept.append(b) }
        }
        return "=_payfleet_" + String(decoding: kept, as: UTF8.self)
    }

    /// The general rule: any Unicode letter or number.
    static func unicodeBoundary(_ messageID: String) -> String {
        "=_payfleet_" + String(messageID.filter { $0.isLetter || $0.isNumber }.prefix(40))
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
            let boundary = Self.boundary(messageID)
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

    /// A strict check of an addr-spec: one `@`; a dot-atom local part of printable ASCII
    /// without spaces or specials; a domain of LDH labels (letters, digits, hyphens) joined by
    /// dots, or an address literal that is exactly `[a.b.c.d]` (a dotted quad, each 0–255,
    /// no leading zeros) or `[IPv6:…]` (an IPv6 address, RFC 5321 §4.1.3). No CR, LF, space or
    /// other control character can pass, so what passes never breaks the SMTP dialogue
    /// (`MAIL FROM`, `RCPT TO`) or a header.
    public static func isValid(_ s: String) -> Bool {
        guard s.utf8.count <= 254, s.utf8.allSatisfy({ $0 > 32 && $0 < 127 }),
            let at = s.lastIndex(of: "@")
        else { return false }
        let local = s[..<at]
        let domain = s[s.index(after: at)...]
        guard !local.isEmpty, local.utf8.count <= 64, !domain.isEmpty else { return false }
        // Every byte is printable ASCII here (checked above): the specials are bytes.
        let localOK = local.utf8.allSatisfy { b in
            switch b {
            case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "["),
                UInt8(ascii: "]"), UInt8(ascii: ":"), UInt8(ascii: ";"), UInt8(ascii: "@"), UInt8(ascii: "\\"),
                UInt8(ascii: ","), UInt8(ascii: "\""):
                return false
            default: return true
            }
        }
        guard localOK, !local.hasPrefix("."), !local.hasSuffix("."), !local.contains("..") else { return false }
        if domain.hasPrefix("[") || domain.hasSuffix("]") {
            guard domain.hasPrefix("["), domain.hasSuffix("]"), domain.count > 2 else { return false }
            let literal = String(domain.dropFirst().dropLast())
            if literal.hasPrefix("IPv6:") { return isIPv6(String(literal.dropFirst(5))) }
            return isDottedQuad(literal)
        }
        guard domain.utf8.count <= 253 else { return false }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { l in
            !l.isEmpty && l.utf8.count <= 63 && !l.hasPrefix("-") && !l.hasSuffix("-")
                && l.unicodeScalars.allSatisfy { c in
                    (c.value >= 48 && c.value <= 57) || (c.value >= 65 && c.value <= 90) || (c.value >= 97 && c.value <= 122)
                        || c == "-"
                }
        }
    }

    /// `1.2.3.4`: four decimal numbers 0–255 without leading zeros, nothing else.
    static func isDottedQuad(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy { $0.isASCII && $0.isNumber } && (p.count == 1 || p.first != "0")
                && Int(p)! <= 255
        }
    }

    /// An IPv6 address in text form (RFC 4291 §2.2: hex groups, one `::`, an optional
    /// trailing dotted quad), checked by hand so nothing but those characters can pass.
    static func isIPv6(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 45, s.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
        var text = Substring(s)
        var maxGroups = 8
        // A trailing IPv4 part counts as two groups.
        if text.contains(".") {
            guard let colon = text.lastIndex(of: ":"), isDottedQuad(String(text[text.index(after: colon)...])) else {
                return false
            }
            text = text[...colon]
            if text.hasSuffix("::") {
                // "::1.2.3.4" / "::ffff:1.2.3.4": keep the "::".
            } else {
                text = text.dropLast()
            }
            maxGroups = 6
        }
        let pieces = text.components(separatedBy: "::")
        guard pieces.count <= 2 else { return false }
        func groups(_ p: String) -> [Substring]? {
            if p.isEmpty { return [] }
            let g = p.split(separator: ":", omittingEmptySubsequences: false)
            guard g.allSatisfy({ !$0.isEmpty && $0.count <= 4 }) else { return nil }
            return g
        }
        guard let head = groups(pieces[0]) else { return false }
        if pieces.count == 2 {
            guard let tail = groups(pieces[1]) else { return false }
            return head.count + tail.count <= maxGroups - 1
        }
        return head.count == maxGroups
    }

    public var domain: String { String(address[address.index(after: address.lastIndex(of: "@")!)...]) }

    /// `"Name" <addr>` with the name as encoded words when it is not plain ASCII.
    public var header: String {
        guard let name, !name.isEmpty else { return "<\(address)>" }
        let plain = name.unicodeScalars.allSatisfy { $0.value >= 32 && $0.value < 127 && $0 != "\"" && $0 != "\\" }
        return (plain ? "\"\(name)\"" : MIMEEncoding.encodedWords(name)) + " <\(address)>"
    }
}

enum MIMEEncoding {
    /// True when `text` holds CR, LF, NUL or another C0/C1 control character (or DEL).
    static func hasControl(_ text: String) -> Bool { text.unicodeScalars.contains(where: isControl) }

    /// C0, DEL and C1 controls: never in a header value.
    static func isControl(_ u: Unicode.Scalar) -> Bool { u.value < 32 || (u.value >= 127 && u.value < 160) }

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
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + text.utf8.count / 8)
        // Lines end at CRLF, CR or LF; each becomes a CRLF hard break.
        var lines: [ArraySlice<UInt8>] = []
        let all = Array(text.utf8)
        var start = 0
        var i = 0
        while i < all.count {
            if all[i] == 0x0D || all[i] == 0x0A {
                lines.append(all[start..<i])
                i += all[i] == 0x0D && i + 1 < all.count && all[i + 1] == 0x0A ? 2 : 1
                start = i
            } else {
                i += 1
            }
        }
        lines.append(all[start..<all.count])
        for (n, line) in lines.enumerated() {
            if n > 0 { out += [0x0D, 0x0A] }
            var column = 0
            for (k, b) in zip(line.indices, line) {
                let last = k == line.endIndex - 1
                let plain = (b >= 33 && b <= 126 && b != 61) || ((b == 32 || b == 9) && !last)
                let width = plain ? 1 : 3
                // A soft break keeps every line at most 76 characters, the "=" included.
                if column + width > 75 {
                    out += [UInt8(ascii: "="), 0x0D, 0x0A]
                    column = 0
                }
                if plain {
                    out.append(b)
                } else {
                    out += [UInt8(ascii: "="), hex[Int(b >> 4)], hex[Int(b & 0x0F)]]
                }
                column += width
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
