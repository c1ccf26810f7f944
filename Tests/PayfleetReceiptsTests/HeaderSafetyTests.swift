import Foundation
import Logging
import PayfleetCore
import PayfleetWorker
import Testing

@testable import PayfleetReceipts

/// Issue 15 item 15 (strict addresses, no CR/LF in any header) and item 14 (reply excerpts
/// redacted), without a server.
@Suite struct HeaderSafetyTests {
    @Test("Address literals: only a dotted quad or IPv6:, nothing else inside the brackets")
    func addressLiterals() {
        for good in [
            "a@[1.2.3.4]", "a@[127.0.0.1]", "a@[255.255.255.255]", "a@[0.0.0.0]", "a@[IPv6:::1]",
            "a@[IPv6:2001:db8::1]", "a@[IPv6:2001:db8:0:0:0:0:0:1]", "a@[IPv6:::ffff:192.0.2.1]",
            "a@[IPv6:fe80::]", "a@[IPv6:1:2:3:4:5:6:7:8]", "a@[IPv6:1:2:3:4:5:6:1.2.3.4]",
        ] {
            #expect(MailAddress.isValid(good), "\(good)")
        }
        for bad in [
            "a@[1.2.3.4\r\nX-Injected: 1]", "a@[1.2.3.4]\r\nX-Injected: 1", "a@[1.2.3.4\nX: 1]", "a@[1.2.3.4 ]",
            "a@[]", "a@[1.2.3]", "a@[1.2.3.4.5]", "a@[256.1.1.1]", "a@[01.2.3.4]", "a@[1.2.3.-4]", "a@[1.2.3.4",
            "a@1.2.3.4]", "a@[example.com]", "a@[IPv6:]", "a@[IPv6:1:2:3:4:5:6:7:8:9]", "a@[IPv6:1::2::3]",
            "a@[IPv6:12345::]", "a@[IPv6:g::1]", "a@[IPv6::::]", "a@[IPv4:1.2.3.4]", "a@[ipv6:::1]",
            "a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]", "a@[IPv6:::1]x", "a@x[1.2.3.4]",
            "ada@exa\u{0}mple.com", "ada\r\n@example.com", "ada@example.com\r\n", "ad\ta@example.com",
            "ada@exämple.com", "ada@example..com", "ada@-example.com",
        ] {
            #expect(!MailAddress.isValid(bad), "\(bad.debugDescription)")
        }
    }

    static func message(
        to: MailAddress = MailAddress(name: "Ada Lovelace", address: "ada@example.com"), subject: String = "Receipt",
        extra: [(String, String)] = []
    ) -> MIMEMessage {
        MIMEMessage(
            from: MailAddress(name: "Acme", address: "receipts@acme.example"), to: to, subject: subject,
            date: Date(timeIntervalSince1970: 1_764_000_000), messageID: "<receipt.abc@acme.example>", text: "t",
            html: nil, extraHeaders: extra)
    }

    @Test("MIMEMessage.validate refuses CR, LF and control characters in every address and header value")
    func validateRefusesInjection() throws {
        try Self.message().validate()
        let bad: [(MIMEMessage, String)] = [
            (Self.message(to: MailAddress(address: "a@[1.2.3.4\r\nX-Injected: 1]")), "to"),
            (Self.message(to: MailAddress(name: "Ada\r\nBcc: x@y.example", address: "ada@example.com")), "to"),
            (Self.message(subject: "Receipt\r\nBcc: x@y.example"), "Subject"),
            (Self.message(subject: "Receipt\u{0}"), "Subject"),
            (Self.message(extra: [("X-Payfleet-Event-ID", "evt_1\r\nX-Injected: 1")]), "X-Payfleet-Event-ID"),
            (Self.message(extra: [("X-Bad: name", "v")]), "header name"),
        ]
        for (m, field) in bad {
            do {
                try m.validate()
                Issue.record("accepted: \(field)")
            } catch {
                #expect(error.field == field, "\(error)")
            }
        }
    }

    @Test("The sandbox transport refuses an invalid message permanently and writes nothing")
    func sandboxRefuses() async throws {
        let dir = NSTemporaryDirectory() + "rcpt-inject-\(UUID().uuidString)"
        let t = try SandboxTransport(directory: dir)
        do {
            try await t.send(Self.message(to: MailAddress(address: "a@[1.2.3.4\r\nX-Injected: 1]")))
            Issue.record("sent")
        } catch {
            #expect(error.kind == .permanent)
            #expect(error.certainty == .notSent)
            #expect(error.errorClass == "InvalidMessage")
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).isEmpty)
    }

    @Test("A display name with line breaks becomes one line; the address itself is never altered")
    func displayNameOneLine() throws {
        let h = try RenderingTests.handler()
        var e = RenderingTests.event(1999, "GBP")
        e.customer?.name = "Ada\r\nBcc: evil@example.com"
        let m = try #require(h.renderEmail(RenderingTests.effect, event: e))
        #expect(m.to.name == "Ada  Bcc: evil@example.com")
        try m.validate()
        let headers = m.rendered.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
        #expect(!headers.contains { $0.hasPrefix("Bcc:") })
        #expect(headers.contains("To: \"Ada  Bcc: evil@example.com\" <ada@example.com>"))
    }

    @Test("Redaction: emails, phone numbers and credentials out; statuses, dates and ids stay")
    func redaction() {
        let cases: [(String, String)] = [
            ("550 5.1.1 <ada@example.com>: Recipient address rejected", "550 5.1.1 <[email]>: Recipient address rejected"),
            ("The 'To' number +15005550001 is not valid (21211)", "The 'To' number [phone] is not valid (21211)"),
            ("call (020) 7946 0958 now", "call [phone] now"),
            ("phone 07700 900123 unknown", "phone [phone] unknown"),
            ("{\"access_token\": \"abc.def\"}", "{\"access_token\": \"[redacted]\"}"),
            ("Authorization: Bearer xyz123456", "Authorization: [redacted]"),
            ("got Bearer abcdefgh", "got Bearer [redacted]"),
            ("key sk_live_51Habc and whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "key [redacted] and [redacted]"),
            ("token=s3cr3t&x=1", "token=[redacted]&x=1"),
            ("a@[1.2.3.4] refused", "[email] refused"),
            ("answered 503 at 2026-11-24T10:15:00Z (Retry-After 30)", "answered 503 at 2026-11-24T10:15:00Z (Retry-After 30)"),
            ("evt_01JD8X9ZK4M2N3P4Q5R6S7T8V9 pi_3QabC12345678 v61.0", "evt_01JD8X9ZK4M2N3P4Q5R6S7T8V9 pi_3QabC12345678 v61.0"),
            ("on 2026-11-24 10:15:00", "on 2026-11-24 10:15:00"),
            ("amqp://payfleet:s3cret@10.0.0.5:5672/ refused", "amqp://[redacted]@10.0.0.5:5672/ refused"),
        ]
        for (input, want) in cases { #expect(Redaction.redact(input) == want, "\(input)") }
        #expect(Redaction.redact("pw is hunter2-long", secrets: ["hunter2-long"]) == "pw is [redacted]")
    }
}

@Test("Every redaction pattern compiles (none is silently skipped)")
func redactionPatternsCompile() {
    #expect(Redaction.allPatternsCompile)
}
