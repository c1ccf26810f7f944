import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Testing

@testable import PayfleetReceipts

/// Rendering, MIME, templates and configuration: no broker, no server.
@Suite struct RenderingTests {
    static let merchants = [
        Merchant(id: "m_acme", name: "Acme Café", timeZone: "Europe/London"),
        Merchant(id: "m_tokyo", name: "Tokyo Shop", timeZone: "Asia/Tokyo"),
    ]

    static func handler(_ yaml: String = "", templatesDir: String? = nil) throws -> ReceiptHandler {
        let dir = NSTemporaryDirectory() + "receipts-unit-\(UUID().uuidString)"
        var text = "state_dir: \(dir)\nreceipt-sender:\n  locale: en\n"
        if let templatesDir { text += "  templates_dir: \(templatesDir)\n" }
        text += yaml.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        let root = try ConfigSection.parse(yaml: text)
        return try ReceiptHandler(
            section: try root.section("receipt-sender"), root: root, merchants: merchants,
            logger: Logger(label: "test"))
    }

    static func event(
        _ value: Int64, _ currency: String, type: PaymentEvent.EventType = .paymentSucceeded,
        last4: String = "4242", name: String = "Ada Lovelace"
    ) -> PaymentEvent {
        PaymentEvent(
            id: PaymentEvent.canonicalID(provider: "test", eventID: "unit-\(currency)-\(value)"), type: type,
            occurredAt: Date(timeIntervalSince1970: 1_764_000_000), receivedAt: nil,
            source: .init(provider: "test", eventID: "unit-\(currency)-\(value)"), merchantID: "m_acme",
            customer: .init(id: "cus_1", name: name, email: "ada@example.com", phone: "+447700900123"),
            payment: .init(id: "pi_1", channel: "online", method: "card", card: .init(brand: "visa", last4: last4)),
            amount: Money(value: value, currency: Currency(code: currency)!), fee: nil, reference: "order 5521",
            metadata: [:])
    }

    static let effect = ReceiptEffect(
        email: "ada@example.com", phone: "+447700900123", locale: "en", dateMS: 1_764_000_000_000)

    @Test func amountsUseTheCurrencyExponentAndSymbol() throws {
        let h = try Self.handler()
        let cases: [(Int64, String, String)] = [
            (1999, "GBP", "£19.99"), (1500, "JPY", "¥1500"), (1250, "BHD", "BD 1.250"),
            (5, "GBP", "£0.05"), (7, "BHD", "BD 0.007"),
        ]
        for (v, c, want) in cases {
            let m = try #require(h.renderEmail(Self.effect, event: Self.event(v, c)))
            #expect(m.text.contains(want), "\(c) text: \(m.text)")
            #expect(m.html?.contains(want) == true)
            #expect(m.subject.contains(want))
            let sms = try #require(h.renderSMS(Self.effect, event: Self.event(v, c)))
            #expect(sms.body.contains(want))
        }
    }

    @Test func cardIsBrandAndLastFourOnly() throws {
        let h = try Self.handler()
        // Even a malformed event carrying a whole number shows four digits at most.
        let m = try #require(h.renderEmail(Self.effect, event: Self.event(1999, "GBP", last4: "4111111111111111")))
        #expect(m.text.contains("Visa ending 1111"))
        #expect(!m.rendered.contains("411111"))
        #expect(!m.text.contains("41111"))
    }

    @Test func headersAreRFC5322AndDeterministic() throws {
        let h = try Self.handler("from: \"Acme Café Receipts <receipts@acme.example>\"")
        let e = Self.event(1999, "GBP")
        let a = try #require(h.renderEmail(Self.effect, event: e))
        let b = try #require(h.renderEmail(Self.effect, event: e))
        #expect(a.bytes == b.bytes)
        let raw = a.rendered
        let head = String(raw[..<raw.range(of: "\r\n\r\n")!.lowerBound])
        #expect(head.contains("Date: Mon, 24 Nov 2025 16:00:00 +0000"))
        #expect(
            head.contains(
                "Message-ID: \(MIMEMessage.messageID(eventID: e.id, channel: "email", domain: "acme.example"))"))
        #expect(head.contains("MIME-Version: 1.0"))
        #expect(head.contains("Content-Type: multipart/alternative; boundary="))
        // Non-ASCII subject and display name as RFC 2047 encoded words; the header block is 7-bit.
        #expect(head.contains("Subject: =?UTF-8?B?"))
        #expect(head.contains("From: =?UTF-8?B?"))
        #expect(head.utf8.allSatisfy { $0 < 128 })
        #expect(raw.utf8.allSatisfy { $0 < 128 })
        #expect(raw.split(separator: "\r\n", omittingEmptySubsequences: false).allSatisfy { $0.utf8.count <= 998 })
        #expect(!raw.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        let other = try #require(h.renderEmail(Self.effect, event: Self.event(2000, "GBP")))
        #expect(other.messageID != a.messageID)
    }

    @Test func encodedWordsRoundTrip() {
        let s = "Ваш чек от Acme Café — £19.99 ✓ with a long tail to force several encoded words"
        let enc = MIMEEncoding.encodedWords(s)
        var decoded = ""
        for w in enc.components(separatedBy: "\r\n ") {
            #expect(w.count <= 75)
            let b64 = w.dropFirst("=?UTF-8?B?".count).dropLast(2)
            decoded += String(decoding: Data(base64Encoded: String(b64))!, as: UTF8.self)
        }
        #expect(decoded == s)
        #expect(MIMEEncoding.encodedWords("Plain receipt") == "Plain receipt")
    }

    @Test func quotedPrintableKeepsLinesShort() {
        let qp = MIMEEncoding.quotedPrintable(String(repeating: "é=x ", count: 60) + "\nend ")
        for line in qp.components(separatedBy: "\r\n") { #expect(line.utf8.count <= 76) }
        #expect(qp.hasSuffix("end=20"))
    }

    /// Quoted-printable decodes back to the text with CRLF line ends (RFC 2045 §6.7 decoding
    /// written here: soft breaks removed, =XX decoded).
    @Test func quotedPrintableRoundTrips() {
        let texts = ["Total: £12.50\r\nThank you", "tab\tend\t", "a=b\rc\nd", String(repeating: "日本", count: 40), "x ", ""]
        for t in texts {
            let qp = MIMEEncoding.quotedPrintable(t)
            #expect(qp.utf8.allSatisfy { $0 < 0x80 })
            for line in qp.components(separatedBy: "\r\n") {
                #expect(line.utf8.count <= 76)
                #expect(!line.hasSuffix(" ") && !line.hasSuffix("\t"))
            }
            var bytes: [UInt8] = []
            let raw = Array(qp.replacingOccurrences(of: "=\r\n", with: "").utf8)
            var i = 0
            while i < raw.count {
                if raw[i] == UInt8(ascii: "="), let v = UInt8(String(decoding: raw[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                    bytes.append(v)
                    i += 3
                } else {
                    bytes.append(raw[i])
                    i += 1
                }
            }
            let expected = t.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
                .replacingOccurrences(of: "\n", with: "\r\n")
            #expect(String(decoding: bytes, as: UTF8.self) == expected, "\(t)")
        }
    }

    /// The hand-written RFC 5322 date equals Foundation's formatter with the RFC's pattern.
    @Test func rfc5322DatesMatchTheCalendar() {
        #expect(MIMEMessage.rfc5322Date(Date(timeIntervalSince1970: 0)) == "Thu, 01 Jan 1970 00:00:00 +0000")
        #expect(MIMEMessage.rfc5322Date(Date(timeIntervalSince1970: -1)) == "Wed, 31 Dec 1969 23:59:59 +0000")
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        var rng = SplitMix64(seed: 5322)
        for _ in 0..<2_000 {
            let d = Date(timeIntervalSince1970: Double(rng.next() % 4_102_444_800) + 0.75)
            #expect(MIMEMessage.rfc5322Date(d) == f.string(from: d))
        }
    }

    @Test func addressesAndNumbersAreValidated() {
        #expect(MailAddress.isValid("ada@example.com"))
        #expect(MailAddress.isValid("a.b+tag@mail.example.co.uk"))
        for bad in [
            "", "ada", "ada@", "@example.com", "ada@@example.com", "a da@example.com", "ada@exa_mple.com",
            "ada@example.com>\r\nRCPT TO:<x@y.z", "ada.@example.com",
        ] {
            #expect(!MailAddress.isValid(bad), "\(bad)")
        }
        #expect(E164.isValid("+447700900123"))
        for bad in ["447700900123", "+0447700900", "+44 7700 900123", "+1234567", "+1234567890123456", "+44abc"] {
            #expect(!E164.isValid(bad), "\(bad)")
        }
    }

    @Test func badContactsAreClassifiedPermanent() async throws {
        let h = try Self.handler()
        let store = try await Store(
            path: NSTemporaryDirectory() + "receipts-\(UUID().uuidString).sqlite", migrations: h.migrations)
        var e = Self.event(100, "GBP")
        e.customer?.email = "not an address"
        let bad = e
        await #expect(throws: (any Error).self) { try await store.write { db in _ = try h.apply(bad, db: db) } }
        e = Self.event(100, "GBP")
        e.customer?.phone = "07700 900123"
        let badPhone = e
        do {
            _ = try await store.write { db in try h.apply(badPhone, db: db) }
            Issue.record("expected InvalidPhone")
        } catch let err as HandlerError {
            #expect(err.errorClass == "InvalidPhone")
            #expect(err.kind == .permanent)
        }
        // Neither email nor phone: recorded, not an error.
        e = Self.event(101, "GBP")
        e.customer = .init(id: "cus_9", name: "Nobody")
        let none = e
        let effect = try await store.write { db in try h.apply(none, db: db) }
        #expect(effect == nil)
        let status = try await store.withConnection { db in
            try db.queryOne("SELECT status FROM receipts WHERE event_id = ?", [.text(none.id)])?.string(0)
        }
        #expect(status == "no_contact")
    }

    @Test func typesAndMerchantsAreConfigurable() async throws {
        let h = try Self.handler(
            """
            types: [payment.succeeded]
            per_merchant:
              - id: m_tokyo
                types: [payment.succeeded, payment.refunded]
                channels: [sms]
              - id: m_acme
                enabled: false
            """)
        let store = try await Store(
            path: NSTemporaryDirectory() + "receipts-\(UUID().uuidString).sqlite", migrations: h.migrations)
        var refundTokyo = Self.event(500, "JPY", type: .paymentRefunded)
        refundTokyo.merchantID = "m_tokyo"
        var otherRefund = Self.event(501, "GBP", type: .paymentRefunded)
        otherRefund.merchantID = "m_other"
        let acme = Self.event(502, "GBP")
        let (a, b, c) = (refundTokyo, otherRefund, acme)
        let effects = try await store.write { db in
            [try h.apply(a, db: db), try h.apply(b, db: db), try h.apply(c, db: db)]
        }
        #expect(effects[0]?.email == nil && effects[0]?.phone == "+447700900123")
        #expect(effects[1] == nil)
        #expect(effects[2] == nil)
        let refundSMS = try #require(h.renderSMS(effects[0]!, event: a))
        #expect(refundSMS.body.contains("refund of ¥500"))
    }

    @Test func templatesPerMerchantAndLocale() throws {
        let dir = NSTemporaryDirectory() + "tpl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/m_acme/fr", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/default", withIntermediateDirectories: true)
        try "Reçu {{merchant_name}} : {{amount}}".write(
            toFile: dir + "/m_acme/fr/payment.succeeded.subject.mustache",
            atomically: true, encoding: .utf8)
        try "Paid {{amount}} & thanks".write(
            toFile: dir + "/default/payment.succeeded.txt.mustache", atomically: true,
            encoding: .utf8)
        let h = try Self.handler(templatesDir: dir)
        var fr = Self.effect
        fr.locale = "fr"
        let m = try #require(h.renderEmail(fr, event: Self.event(1999, "GBP")))
        #expect(m.subject == "Reçu Acme Café : £19.99")
        #expect(m.text == "Paid £19.99 & thanks")  // text parts are not HTML-escaped
        let en = try #require(h.renderEmail(Self.effect, event: Self.event(1999, "GBP")))
        #expect(en.subject == "Your receipt from Acme Café: £19.99")
        #expect(en.html?.contains("<strong>£19.99</strong>") == true)
    }

    @Test func templateErrorsStopStartUp() throws {
        let cases: [(String, String, String)] = [
            ("default/payment.succeeded.subject.mustache", "Hi {{custmer_name}}", "unknown variable 'custmer_name'"),
            ("default/payment.succeeded.txt.mustache", "{{#card}}unclosed", "does not parse"),
            ("default/payment.succeeded.body.mustache", "x", "unknown part 'body'"),
            ("default/payment.failed.sms.mustache", "x", "unknown event type 'payment.failed'"),
            ("stray.txt", "x", "expected <merchant|default>"),
        ]
        for (file, text, want) in cases {
            let dir = NSTemporaryDirectory() + "tpl-\(UUID().uuidString)"
            let path = dir + "/" + file
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            do {
                _ = try Self.handler(templatesDir: dir)
                Issue.record("\(file) loaded")
            } catch let e as ConfigError {
                #expect(e.key == "receipt-sender.templates_dir")
                #expect(e.message.contains(want), "\(e.message)")
            }
        }
    }

    @Test func configurationErrorsNameTheKey() throws {
        let cases: [(String, String)] = [
            ("email_transport: carrier-pigeon", "receipt-sender.email_transport"),
            ("sms_transport: fax", "receipt-sender.sms_transport"),
            ("outcome_unknown: shrug", "receipt-sender.outcome_unknown"),
            ("email_transport: smtp", "receipt-sender.smtp.host"),
            ("from: not-an-address", "receipt-sender.from"),
            ("types: [payment.failed]", "receipt-sender.types"),
            ("channels: [pager]", "receipt-sender.channels"),
            ("smtp:\n  host: h\n  tls: maybe", "receipt-sender.smtp.tls"),
            ("smtp:\n  host: h\n  username: u", "receipt-sender.smtp.password"),
            ("smtp:\n  host: h\n  rate_limit: fast", "receipt-sender.smtp.rate_limit"),
            (
                "sms_transport: twilio\nsms:\n  account_sid: AC1\n  from: \"+447700900000\"",
                "receipt-sender.sms.auth_token"
            ),
            (
                "sms_transport: twilio\nsms:\n  account_sid: AC1\n  auth_token: t\n  from: \"0770\"",
                "receipt-sender.sms.from"
            ),
            (
                "sms_transport: twilio\nsms:\n  from: \"+447700900000\"\n  auth_token: t",
                "receipt-sender.sms.account_sid"
            ),
            ("per_merchant:\n  - id: a\n  - id: a", "receipt-sender.per_merchant[1].id"),
        ]
        for (yaml, key) in cases {
            do {
                _ = try Self.handler(yaml)
                Issue.record("accepted: \(yaml)")
            } catch let e as ConfigError {
                #expect(e.key == key, "\(yaml) → \(e)")
            }
        }
    }

    @Test func rateLimiterPacesSends() async {
        let limiter = RateLimiter(perSecond: 50)
        let start = ContinuousClock.now
        for _ in 0..<11 { await limiter.acquire() }
        // 11 sends at 50/s need at least 10 intervals of 20 ms (no upper bound: machines are slow).
        #expect(ContinuousClock.now - start >= .milliseconds(200))
    }

    @Test("A receipt file's stem: the ASCII fast path gives what the general rule gives, on 5,000 strings of <, >, @, letters, digits and punctuation")
    func stemFastPathMatchesTheRule() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("<>@@..--_/:aZ09xY+ ")
        var samples = ["<pf.0123abcd.evt_1@receipts.payfleet>", "@@x@y", "@abc", "<<>>", "", "a@", "<@>", "<a.b-c@d>>"]
        for _ in 0..<5_000 {
            samples.append(String((0..<Int.random(in: 0...24, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }))
        }
        for s in samples {
            #expect(SandboxTransport.stem(s) == SandboxTransport.unicodeStem(s), "\(s)")
        }
        #expect(SandboxTransport.stem("<zoë.1@x>") == "zoë.1")
    }

    @Test("A message's MIME boundary: the ASCII fast path gives what the general rule gives, on 5,000 Message-IDs of letters, digits and punctuation, longer and shorter than 40 kept characters")
    func boundaryFastPathMatchesTheRule() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("<>@.-_+=/:aZ09xY ")
        var samples = ["<receipt.0123456789abcdef0123456789abcdef@receipts.payfleet>", "", "<>", "<@>"]
        for _ in 0..<5_000 {
            samples.append(String((0..<Int.random(in: 0...70, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }))
        }
        for s in samples {
            #expect(MIMEMessage.boundary(s) == MIMEMessage.unicodeBoundary(s), "\(s)")
        }
        #expect(MIMEMessage.boundary("<receipt.0123456789abcdef0123456789abcdef@receipts.payfleet>")
            == "=_payfleet_receipt0123456789abcdef0123456789abcdefr")
        #expect(MIMEMessage.boundary("<zoë.1@x>") == "=_payfleet_zoë1x")
    }

    @Test("An address's local part refuses each special character, wherever it stands")
    func localPartSpecials() {
        for c in ["(", ")", "<", ">", "[", "]", ":", ";", "@", "\\", ",", "\""] {
            #expect(!MailAddress.isValid("a\(c)b@example.com"), "a\(c)b")
            #expect(!MailAddress.isValid("\(c)ab@example.com"), "\(c)ab")
        }
        for ok in ["a!b@example.com", "a#b$c%d&e'f*g+h/i=j?k^l_m`n{o|p}q~r@example.com", "a.b@example.com"] {
            #expect(MailAddress.isValid(ok), "\(ok)")
        }
    }

    @Test("Compiled templates render what swift-mustache renders, byte for byte: the built-ins and merchant templates over 3,000 random contexts; anything outside the subset is left to swift-mustache")
    func compiledTemplatesMatchMustache() throws {
        let dir = NSTemporaryDirectory() + "receipts-compiled-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/m_acme/fr", withIntermediateDirectories: true)
        let files: [String: String] = [
            // Within the subset: triple and & tags, inverted sections, comments, nested sections.
            "m_acme/payment.succeeded.html.mustache":
                "<p title=\"{{customer_name}}\">{{! greeting }}Hi {{{customer_name}}} &amp; {{&merchant_name}}</p>{{#card}}<b>{{card}}</b>{{#reference}}[{{reference}}]{{/reference}}{{/card}}{{^card}}no card{{/card}}{{#is_refund}}R{{/is_refund}}{{^is_refund}}P{{/is_refund}} {{is_refund}}",
            "m_acme/payment.succeeded.txt.mustache": "{{customer_name}} <{{amount}}> {{#invoice_id}}inv {{invoice_id}}{{/invoice_id}}{{^invoice_id}}none{{/invoice_id}}",
            // Outside it: a standalone section line, set delimiters, a dotted name.
            "m_acme/fr/payment.succeeded.txt.mustache": "Bonjour {{customer_name}}\n{{#card}}\ncarte {{card}}\n{{/card}}\nfin",
            "m_acme/fr/payment.succeeded.html.mustache": "{{=<% %>=}}<p><% customer_name %></p>",
            "m_acme/payment.succeeded.sms.mustache": "{{merchant_name}} {{card.length}}",
        ]
        for (rel, text) in files { try text.write(toFile: dir + "/" + rel, atomically: true, encoding: .utf8) }
        let templates = try ReceiptTemplates(directory: dir)
        #expect(templates.isCompiled(ReceiptTemplates.key("m_acme", "", "payment.succeeded", .html)))
        #expect(templates.isCompiled(ReceiptTemplates.key("builtin", "", "payment.refunded", .text)))
        #expect(!templates.isCompiled(ReceiptTemplates.key("m_acme", "fr", "payment.succeeded", .text)))
        #expect(!templates.isCompiled(ReceiptTemplates.key("m_acme", "fr", "payment.succeeded", .html)))
        #expect(!templates.isCompiled(ReceiptTemplates.key("m_acme", "", "payment.succeeded", .sms)))

        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("abcXYZ019 <>&\"'=/{}!#^\n\té£€日本")
        func text() -> String { String((0..<Int.random(in: 0...12, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }) }
        for n in 0..<3_000 {
            var c: [String: Any] = [
                "customer_name": text(), "merchant_name": text(), "merchant_id": "m_acme", "amount": text(), "payment_id": text(),
                "date": "2026-12-04", "is_refund": Bool.random(using: &rng),
            ]
            // Present, present and empty, or missing: each section's three cases.
            for key in ["card", "reference", "invoice_id"] {
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: c[key] = text()
                case 1: c[key] = ""
                default: break
                }
            }
            for type in ["payment.succeeded", "payment.refunded"] {
                for part in TemplatePart.allCases {
                    for (merchant, locale) in [("m_acme", ""), ("m_acme", "fr"), ("m_other", "")] {
                        let ours = templates.render(part, type: type, merchant: merchant, locale: locale, context: c)
                        let reference = templates.renderWithMustache(part, type: type, merchant: merchant, locale: locale, context: c)
                        #expect(ours == reference, "\(n) \(type) \(part) \(merchant)/\(locale): \(c)")
                        if ours != reference { return }
                    }
                }
            }
        }
    }
}

/// The receipt effect's hand-written journal bytes equal what `JSONEncoder` writes (parsed) and
/// decode to the same effect.
@Suite struct ReceiptJournalEncodingTests {
    @Test(arguments: [
        ReceiptEffect(email: "ada@example.com", phone: "+447700900123", locale: "en", dateMS: 1_764_000_000_000),
        ReceiptEffect(email: nil, phone: nil, locale: "pt-BR", dateMS: -1),
        ReceiptEffect(email: "\"odd\"\\@例え.jp", phone: nil, locale: "ja", dateMS: Int64.max),
    ])
    func sameAsJSONEncoder(_ effect: ReceiptEffect) throws {
        let fast = effect.journalJSON
        let a = try JSONSerialization.jsonObject(with: Data(fast)) as? NSDictionary
        let b = try JSONSerialization.jsonObject(with: JSONEncoder().encode(effect)) as? NSDictionary
        #expect(a != nil && a == b, "\(String(decoding: fast, as: UTF8.self))")
        #expect(try JSONDecoder().decode(ReceiptEffect.self, from: Data(fast)) == effect)
    }
}

/// The sandbox's `.sms.json`, written without `JSONEncoder`: parsed, it is what `JSONEncoder`
/// (sorted keys) wrote before, keys in the same order, on one line.
@Suite struct SMSSandboxLineTests {
    @Test(arguments: [
        SMSMessage(to: "+447700900123", body: "Acme: payment of £12.50 received. Ref pi_1", eventID: "evt_1",
                   messageID: "<receipt.ab12.sms@payfleet.localhost>"),
        SMSMessage(to: "+15005550006", body: "quote \" backslash \\ slash / tab\tnewline\ncr\r\u{01}\u{1f}", eventID: "evt_\"2",
                   messageID: "<x@y>"),
        SMSMessage(to: "", body: "Zoë 日本 🎉 \u{2028}\u{2029}", eventID: "", messageID: ""),
    ])
    func sameAsJSONEncoder(_ message: SMSMessage) throws {
        let line = message.sandboxLine
        #expect(line.last == 10)
        #expect(!line.dropLast().contains(10))
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let a = try JSONSerialization.jsonObject(with: Data(line)) as? NSDictionary
        let b = try JSONSerialization.jsonObject(with: enc.encode(message)) as? NSDictionary
        #expect(a != nil && a == b, "\(String(decoding: line, as: UTF8.self))")
        #expect(try JSONDecoder().decode(SMSMessage.self, from: Data(line)) == message)
        // Keys sorted, as before: readers that diff the files see no change.
        let text = String(decoding: line, as: UTF8.self)
        let order = ["\"body\"", "\"event_id\"", "\"message_id\"", "\"to\""].map { text.range(of: $0)!.lowerBound }
        #expect(order == order.sorted())
    }
}
