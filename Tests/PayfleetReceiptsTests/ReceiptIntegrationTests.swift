import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

@testable import PayfleetReceipts

/// receipt-sender against the private broker, a real SMTP server (aiosmtpd) and a
/// Twilio-compatible HTTP server, both on loopback and started by the tests.
@Suite(.serialized) struct ReceiptIntegrationTests {
    static let amounts: [(String, Int64, String)] = [
        ("GBP", 1999, "£19.99"), ("JPY", 1500, "¥1500"), ("BHD", 1250, "BD 1.250"),
    ]

    static func smtpSection(_ port: Int, extra: [String] = []) -> [String] {
        [
            "email_transport: smtp", "sms_transport: none", "from: \"Acme Receipts <receipts@acme.example>\"", "smtp:",
            "  host: 127.0.0.1", "  port: \(port)", "  tls: none", "  connect_timeout: 2s", "  timeout: 10s",
            "  rate_limit: 0",
        ] + extra
    }

    static func header(_ m: [String: Any], _ name: String) -> String? {
        (m["headers"] as? [String: String])?.first { $0.key.lowercased() == name.lowercased() }?.value
    }

    static func part(_ m: [String: Any], _ type: String) -> String? {
        (m["parts"] as? [[String: Any]])?.first { $0["content_type"] as? String == type }?["body"] as? String
    }

    @Test func sandboxWritesEmlAndSMSJSON() async throws {
        try await WorkerProcess.receipts(prefix: "rcpt-sandbox", section: []) { fleet in
            try await fleet.declare()
            let p = "sb\(UInt32.random(in: 0...UInt32.max))"
            var events = Self.amounts.enumerated().map { i, a in
                receiptEvent(i, prefix: p, currency: a.0, amount: a.1, phone: "+44 7700 900\(100 + i)")
            }
            events.append(receiptEvent(10, prefix: p, currency: "GBP", amount: 500, email: nil, phone: nil))
            events.append(receiptEvent(11, prefix: p, currency: "GBP", amount: 700, type: .paymentRefunded))
            let pub = fleet.publisher()
            try await fleet.publish(events, via: pub)
            try fleet.start()
            let done = await eventually(timeout: .seconds(60)) {
                fleet.files(withSuffix: ".eml").count == 4 && fleet.files(withSuffix: ".sms.json").count == 3
                    && (try? fleet.count("receipts", where: "status IN ('sent', 'no_contact')")) == 5
            }
            #expect(done, "\(fleet.files(withSuffix: "")) \(fleet.process?.log ?? "")")
            for (i, a) in Self.amounts.enumerated() {
                let e = events[i]
                let mid = MIMEMessage.messageID(eventID: e.id, channel: "email", domain: "payfleet.localhost")
                let eml = try String(
                    contentsOfFile: fleet.mailDir + "/" + SandboxTransport.stem(mid) + ".eml", encoding: .utf8)
                #expect(eml.contains("Message-ID: \(mid)\r\n"))
                #expect(eml.contains("To: \"Ada Lovelace\" <ada@example.com>\r\n"))
                let smsID = MIMEMessage.messageID(eventID: e.id, channel: "sms", domain: "payfleet.localhost")
                let json = try Data(
                    contentsOf: URL(fileURLWithPath: fleet.mailDir + "/" + SandboxTransport.stem(smsID) + ".sms.json"))
                let sms = try JSONSerialization.jsonObject(with: json) as! [String: String]
                #expect(sms["to"] == "+447700900\(100 + i)")
                #expect(sms["event_id"] == e.id)
                #expect(sms["message_id"] == smsID)
                #expect(sms["body"]?.contains(a.2) == true, "\(sms)")
            }
            #expect(try fleet.count("receipts", where: "status = 'no_contact'") == 1)
            let check1 = await fleet.metric("payfleet_receipts_skipped_total") == 1
            #expect(check1)
            pub.close()
        }
    }

    /// 40 receipts over `connections: 2`: libcurl keeps each thread's SMTP session open, so the
    /// server sees at most two client connections (each message its own MAIL FROM … DATA), not 40.
    @Test func smtpSessionsCarryManyMessages() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-reuse")
        let sink = SMTPSink(dir: dir)
        try await sink.start()
        defer { sink.kill() }
        let section = Self.smtpSection(sink.port, extra: ["  connections: 2"])
        try await WorkerProcess.receipts(prefix: "rcpt-reuse", section: section) { fleet in
            try await fleet.declare()
            let p = "reuse\(UInt32.random(in: 0...UInt32.max))"
            let events = (0..<40).map { i in receiptEvent(i, prefix: p, currency: "GBP", amount: 1000 + Int64(i)) }
            let pub = fleet.publisher()
            try await fleet.publish(events, via: pub)
            try fleet.start()
            let arrived = await eventually(timeout: .seconds(60)) { sink.count == 40 }
            #expect(arrived, "\(fleet.process?.log ?? "")")
            let messages = try sink.messages()
            let peers = Set(messages.compactMap { m -> String? in
                (m["peer"] as? [Any]).map { $0.map { "\($0)" }.joined(separator: ":") }
            })
            #expect(messages.count == 40)
            #expect(peers.count >= 1 && peers.count <= 2, "SMTP connections seen: \(peers.count)")
            let ids = Set(messages.compactMap { Self.header($0, "Message-ID") })
            #expect(ids.count == 40)
        }
    }

    @Test func smtpOneReceiptPerPaymentNothingTwice() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-smtp")
        let sink = SMTPSink(dir: dir)
        try await sink.start(auth: "receipts:s3cret-pw")
        defer { sink.kill() }
        var section = Self.smtpSection(sink.port)
        section += ["  username: receipts", "  password_file: \(dir)/smtp-password"]
        try "s3cret-pw\n".write(toFile: dir + "/smtp-password", atomically: true, encoding: .utf8)
        try await WorkerProcess.receipts(prefix: "rcpt-smtp", section: section) { fleet in
            try await fleet.declare()
            let p = "smtp\(UInt32.random(in: 0...UInt32.max))"
            let events = Self.amounts.enumerated().map { i, a in
                receiptEvent(i, prefix: p, currency: a.0, amount: a.1, merchant: a.0 == "JPY" ? "m_tokyo" : "m_acme")
            }
            let pub = fleet.publisher()
            try await fleet.publish(events + events, via: pub)  // every event twice
            try fleet.start()
            let settled = await eventually(timeout: .seconds(60)) {
                let processed = await fleet.metric("payfleet_processed_total") ?? 0
                let dups = await fleet.metric("payfleet_duplicates_skipped_total") ?? 0
                return processed == 3 && dups == 3
            }
            #expect(settled, "\(fleet.process?.log ?? "")")
            let sentMetric = await fleet.metric("payfleet_receipts_sent_total")
            #expect(sentMetric == 3)
            // Redelivery: the same events again after a restart.
            await fleet.process?.killNow()
            try await fleet.publish(events, via: pub)
            try fleet.start()
            let again = await eventually(timeout: .seconds(60)) {
                await fleet.metric("payfleet_duplicates_skipped_total") == 3
            }
            #expect(again)
            #expect(sink.count == 3)
            let messages = try sink.messages()
            let raws = try sink.raw()
            for (i, a) in Self.amounts.enumerated() {
                let mid = MIMEMessage.messageID(eventID: events[i].id, channel: "email", domain: "acme.example")
                let m = try #require(messages.first { Self.header($0, "Message-ID") == mid }, "no message \(mid)")
                #expect(m["auth_login"] as? String == "receipts")
                #expect(m["rcpt_tos"] as? [String] == ["ada@example.com"])
                #expect(m["mail_from"] as? String == "receipts@acme.example")
                #expect(m["content_type"] as? String == "multipart/alternative")
                #expect((m["defects"] as? [String])?.isEmpty == true)
                let subject = try #require(Self.header(m, "Subject"))
                #expect(subject.contains(a.2), "\(subject)")
                #expect(subject.contains(a.0 == "JPY" ? "Tokyo Shop" : "Acme Café"))
                #expect(Self.header(m, "Date") != nil)
                #expect(Self.header(m, "MIME-Version") == "1.0")
                #expect(Self.header(m, "From")?.contains("<receipts@acme.example>") == true)
                #expect(Self.header(m, "To") == "Ada Lovelace <ada@example.com>")
                let text = try #require(Self.part(m, "text/plain"))
                let html = try #require(Self.part(m, "text/html"))
                #expect(text.contains("payment of \(a.2)"), "\(text)")
                #expect(html.contains("<strong>\(a.2)</strong>"), "\(html)")
                #expect(text.contains("Visa ending 4242"))
            }
            for raw in raws {
                // Nothing that looks like more of a card number than its last four digits.
                #expect(raw.range(of: "[0-9]{5}4242", options: .regularExpression) == nil)
                #expect(!raw.contains("s3cret-pw"))
            }
            pub.close()
        }
    }

    /// STARTTLS (required by the server, certificate verified against a private CA file) with
    /// AUTH, and implicit TLS (`smtps`).
    @Test(arguments: ["starttls", "implicit"])
    func smtpOverTLSWithAuth(mode: String) async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-tls")
        let tls = try makeCertificate(in: dir)
        let sink = SMTPSink(dir: dir)
        try await sink.start(auth: "receipts:tls-pw", tls: tls, implicitTLS: mode == "implicit")
        defer { sink.kill() }
        let section = [
            "email_transport: smtp", "sms_transport: none", "smtp:", "  host: 127.0.0.1", "  port: \(sink.port)",
            "  tls: \(mode)", "  ca_file: \(tls.cert)", "  username: receipts", "  password: tls-pw", "  timeout: 10s",
        ]
        try await WorkerProcess.receipts(prefix: "rcpt-tls", section: section) { fleet in
            try await fleet.declare()
            let p = "tls\(UInt32.random(in: 0...UInt32.max))"
            let pub = fleet.publisher()
            try await fleet.publish([receiptEvent(1, prefix: p, currency: "BHD", amount: 1250)], via: pub)
            try fleet.start()
            let arrived = await eventually(timeout: .seconds(60)) { sink.count == 1 }
            #expect(arrived, "\(fleet.process?.log ?? "")")
            let m = try #require(try sink.messages().first)
            #expect(m["auth_login"] as? String == "receipts")
            if mode == "starttls" { #expect(m["tls"] as? Bool == true) }
            #expect(Self.part(m, "text/plain")?.contains("BD 1.250") == true)
            pub.close()
        }
    }

    @Test func smtpDownThenBackDeliversAfterItReturns() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-down")
        let sink = SMTPSink(dir: dir)  // not started: the port refuses connections
        defer { sink.kill() }
        try await WorkerProcess.receipts(
            prefix: "rcpt-down", section: Self.smtpSection(sink.port),
            retryDelays: ["1s", "2s", "3s", "5s", "10s", "20s"]
        ) { fleet in
            try await fleet.declare()
            let p = "down\(UInt32.random(in: 0...UInt32.max))"
            let events = [
                receiptEvent(1, prefix: p, currency: "GBP", amount: 1999),
                receiptEvent(2, prefix: p, currency: "BHD", amount: 1250),
            ]
            let pub = fleet.publisher()
            try await fleet.publish(events, via: pub)
            try fleet.start()
            let retried = await eventually(timeout: .seconds(60)) {
                (await fleet.metric("payfleet_retried_total") ?? 0) >= 2
            }
            #expect(retried, "\(fleet.process?.log ?? "")")
            #expect(sink.count == 0)
            try await sink.start(keepPort: true)
            let arrived = await eventually(timeout: .seconds(90)) { sink.count == 2 }
            #expect(arrived, "\(fleet.process?.log ?? "")")
            let settled = await eventually(timeout: .seconds(30)) {
                (try? fleet.count("receipt_deliveries", where: "state = 'sent'")) == 2
            }
            #expect(settled)
            let check3 = try await fleet.deadLetters().isEmpty
            #expect(check3)
            #expect(sink.count == 2)
            pub.close()
        }
    }

    @Test func permanentRejectionGoesToTheDLQWithTheSMTPReply() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-550")
        let sink = SMTPSink(dir: dir)
        try await sink.start()
        defer { sink.kill() }
        try await WorkerProcess.receipts(prefix: "rcpt-550", section: Self.smtpSection(sink.port)) { fleet in
            try await fleet.declare()
            let p = "rej\(UInt32.random(in: 0...UInt32.max))"
            let bad = receiptEvent(1, prefix: p, currency: "GBP", amount: 1999, email: "reject-me@example.com")
            let good = receiptEvent(2, prefix: p, currency: "GBP", amount: 2999)
            let invalid = receiptEvent(3, prefix: p, currency: "GBP", amount: 3999, email: "ada@@example")
            let pub = fleet.publisher()
            try await fleet.publish([bad, good, invalid], via: pub)
            try fleet.start()
            let dead = await eventually(timeout: .seconds(60)) { ((try? await fleet.deadLetters()) ?? []).count == 2 }
            #expect(dead, "\(fleet.process?.log ?? "")")
            let dlq = try await fleet.deadLetters()
            let errors = dlq.map { ($0.messageID ?? "", $0.headers[PayfleetHeaders.error]?.stringValue ?? "") }
            let rejected = try #require(errors.first { $0.0 == bad.id })
            #expect(rejected.1.hasPrefix("SMTP550: 550"), "\(rejected.1)")
            #expect(rejected.1.contains("Recipient address rejected"))
            let invalidErr = try #require(errors.first { $0.0 == invalid.id })
            #expect(invalidErr.1.hasPrefix("InvalidAddress"))
            let delivered = await eventually(timeout: .seconds(30)) { sink.count == 1 }
            #expect(delivered)
            let check4 = await fleet.metric("payfleet_retried_total") ?? 0 == 0
            #expect(check4)
            pub.close()
        }
    }

    @Test func smsRequestsCarryTheFormFieldsAndAuth() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-sms")
        let sink = SMSSink(dir: dir)
        try await sink.start(failFirst: 1)
        defer { sink.kill() }
        let section = [
            "email_transport: none", "sms_transport: twilio", "sms:", "  base_url: http://127.0.0.1:\(sink.port)/",
            "  account_sid: AC0123456789abcdef", "  auth_token_file: \(dir)/token", "  from: \"+15005550006\"",
            "  timeout: 10s", "  rate_limit: 50",
        ]
        try "tok-7f3a\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
        try await WorkerProcess.receipts(prefix: "rcpt-sms", section: section) { fleet in
            try await fleet.declare()
            let p = "sms\(UInt32.random(in: 0...UInt32.max))"
            let events = [
                receiptEvent(1, prefix: p, currency: "GBP", amount: 1999, phone: "+44 7700 900123"),
                receiptEvent(2, prefix: p, currency: "JPY", amount: 1500, phone: "+819012345678", merchant: "m_tokyo"),
                receiptEvent(3, prefix: p, currency: "BHD", amount: 1250, phone: "+97339999901"),  // provider says 400
                receiptEvent(4, prefix: p, currency: "GBP", amount: 100, phone: "07700 900123"),  // not E.164
            ]
            let pub = fleet.publisher()
            try await fleet.publish(events + [events[0]], via: pub)
            try fleet.start()
            let done = await eventually(timeout: .seconds(60)) {
                let dead = ((try? await fleet.deadLetters()) ?? []).count
                return ((try? sink.requests()) ?? []).count == 2 && dead == 2
            }
            #expect(done, "\(fleet.process?.log ?? "")")
            let reqs = try sink.requests()
            #expect(reqs.count == 2)
            for r in reqs {
                #expect(r["path"] as? String == "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json")
                #expect(r["user"] as? String == "AC0123456789abcdef")
                #expect(r["password"] as? String == "tok-7f3a")
                #expect(r["content_type"] as? String == "application/x-www-form-urlencoded")
                let form = try #require(r["form"] as? [String: String])
                #expect(form["From"] == "+15005550006")
            }
            let uk = try #require(reqs.first { ($0["form"] as? [String: String])?["To"] == "+447700900123" })
            #expect((uk["form"] as? [String: String])?["Body"]?.contains("£19.99") == true)
            #expect(uk["idempotency_key"] as? String == events[0].id)
            let jp = try #require(reqs.first { ($0["form"] as? [String: String])?["To"] == "+819012345678" })
            #expect((jp["form"] as? [String: String])?["Body"]?.contains("Tokyo Shop: payment of ¥1500") == true)
            let errors = try await fleet.deadLetters().map { $0.headers[PayfleetHeaders.error]?.stringValue ?? "" }
            #expect(errors.contains { $0.hasPrefix("HTTP400") && $0.contains("21211") }, "\(errors)")
            #expect(errors.contains { $0.hasPrefix("InvalidPhone") }, "\(errors)")
            let retried = await fleet.metric("payfleet_retried_total") ?? 0
            #expect(retried >= 1)  // the provider's 503
            pub.close()
        }
    }

    /// The SMTP server SIGKILLs the worker after storing the message and before answering 250:
    /// the send happened, its outcome was never recorded. On restart the receipt is flagged for
    /// review (dead-lettered as OutcomeUnknown), or resent with the same Message-ID.
    @Test(arguments: ["review", "resend"])
    func killBetweenSendAndCommit(policy: String) async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-kill")
        let sink = SMTPSink(dir: dir)
        let pidFile = dir + "/kill.pid"
        try await sink.start(killPIDFile: pidFile)
        defer { sink.kill() }
        try await WorkerProcess.receipts(
            prefix: "rcpt-kill", section: Self.smtpSection(sink.port, extra: ["outcome_unknown: \(policy)"])
        ) { fleet in
            try await fleet.declare()
            let p = "kill\(UInt32.random(in: 0...UInt32.max))"
            let event = receiptEvent(1, prefix: p, currency: "GBP", amount: 1999)
            try fleet.start()
            try await fleet.waitReady()
            try "\(fleet.process!.pid)".write(toFile: pidFile, atomically: true, encoding: .utf8)
            let pub = fleet.publisher()
            try await fleet.publish([event], via: pub)
            let status = await fleet.process!.wait(timeout: .seconds(60))
            #expect(status != nil, "worker was not killed: \(fleet.process?.log ?? "")")
            #expect(sink.count == 1)
            #expect(try fleet.count("receipt_deliveries", where: "state = 'intent'") == 1)
            try fleet.start()
            if policy == "review" {
                let flagged = await eventually(timeout: .seconds(60)) {
                    ((try? await fleet.deadLetters()) ?? []).count == 1
                }
                #expect(flagged, "\(fleet.process?.log ?? "")")
                let err = try await fleet.deadLetters().first?.headers[PayfleetHeaders.error]?.stringValue ?? ""
                #expect(err.hasPrefix("OutcomeUnknown"), "\(err)")
                let check5 = await fleet.metric("payfleet_receipts_outcome_unknown_total") == 1
                #expect(check5)
                let check6 = await fleet.metrics().contains("action=\"flagged\"")
                #expect(check6)
                #expect(try fleet.count("receipt_deliveries", where: "state = 'review'") == 1)
                #expect(sink.count == 1)
                // The operator's decision: replay from the DLQ (as `payfleet dlq replay` does:
                // publish with confirm, then ack) sends it again, with the same Message-ID.
                let s = try await AMQPSession.connect(fleet.amqp)
                let fetched = try #require(try await s.get(queue: fleet.topology.dlq))
                try await s.publish(AMQPOutgoing(exchange: "", routingKey: fleet.queue, message: fetched.message))
                try await s.ack(fetched.deliveryTag)
                await s.close()
                let replayed = await eventually(timeout: .seconds(60)) { sink.count == 2 }
                #expect(replayed, "\(fleet.process?.log ?? "")")
                let ids = try sink.messages().map { Self.header($0, "Message-ID") }
                #expect(ids.count == 2 && Set(ids).count == 1)
                let sentAfterReplay = await eventually(timeout: .seconds(30)) {
                    (try? fleet.count("receipt_deliveries", where: "state = 'sent'")) == 1
                }
                #expect(sentAfterReplay)
            } else {
                let resent = await eventually(timeout: .seconds(60)) { sink.count == 2 }
                #expect(resent, "\(fleet.process?.log ?? "")")
                let ids = try sink.messages().map { Self.header($0, "Message-ID") }
                #expect(Set(ids).count == 1)
                let recorded = await eventually(timeout: .seconds(30)) {
                    (try? fleet.count("receipt_deliveries", where: "state = 'sent'")) == 1
                }
                #expect(recorded)
                let check7 = await fleet.metrics().contains("action=\"resent\"")
                #expect(check7)
                let check8 = try await fleet.deadLetters().isEmpty
                #expect(check8)
                #expect(sink.count == 2)
            }
            let check9 = (await fleet.metric("payfleet_effects_outcome_unknown_total") ?? 0) == 1
            #expect(check9)
            pub.close()
        }
    }

    /// A template error stops the worker at start-up (exit 78) with a message naming the file.
    @Test func templateErrorsStopTheWorkerAtStartUp() async throws {
        let tdir = TestEnvironment.makeTempDir("rcpt-tpl")
        try FileManager.default.createDirectory(atPath: tdir + "/m_acme/fr", withIntermediateDirectories: true)
        try "Reçu {{amount}} {{#card}}{{card}}".write(
            toFile: tdir + "/m_acme/fr/payment.succeeded.subject.mustache", atomically: true, encoding: .utf8)
        try await WorkerProcess.receipts(prefix: "rcpt-tpl", section: ["templates_dir: \(tdir)"]) { fleet in
            try fleet.start()
            let status = await fleet.process!.wait(timeout: .seconds(30))
            #expect(status == 78)
            let log = fleet.process!.log
            #expect(
                log.contains("receipt-sender.templates_dir: template m_acme/fr/payment.succeeded.subject.mustache"),
                "\(log)")
        }
    }

    /// `rate_limit` paces a backlog: 6 SMS at 4/s take at least 5 intervals of 250 ms at the server.
    @Test func smsRateLimitPacesABacklog() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-rate")
        let sink = SMSSink(dir: dir)
        try await sink.start()
        defer { sink.kill() }
        let section = [
            "email_transport: none", "sms_transport: twilio", "sms:", "  base_url: http://127.0.0.1:\(sink.port)",
            "  account_sid: AC1", "  auth_token: t", "  from: MG0123", "  rate_limit: 4",
        ]
        try await WorkerProcess.receipts(prefix: "rcpt-rate", section: section) { fleet in
            try await fleet.declare()
            let p = "rate\(UInt32.random(in: 0...UInt32.max))"
            let events = (0..<6).map {
                receiptEvent($0, prefix: p, currency: "GBP", amount: 100, phone: "+4477009001\($0)0")
            }
            let pub = fleet.publisher()
            try await fleet.publish(events, via: pub)
            try fleet.start()
            let done = await eventually(timeout: .seconds(60)) { ((try? sink.requests()) ?? []).count == 6 }
            #expect(done, "\(fleet.process?.log ?? "")")
            let times = try sink.requests().compactMap { $0["at"] as? Double }.sorted()
            #expect(times.count == 6)
            #expect(times.last! - times.first! >= 1.0, "\(times)")
            let forms = try sink.requests().compactMap { $0["form"] as? [String: String] }
            #expect(forms.allSatisfy { $0["MessagingServiceSid"] == "MG0123" && $0["From"] == nil })
            pub.close()
        }
    }

    /// Email and SMS for one payment; the SMS provider fails once (503): the retry sends only the
    /// SMS — the email already sent is not sent again.
    @Test func aFailedSMSRetriesWithoutResendingTheEmail() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-both")
        let smtp = SMTPSink(dir: dir + "/smtp")
        let sms = SMSSink(dir: dir + "/sms")
        try await smtp.start()
        try await sms.start(failFirst: 1)
        defer {
            smtp.kill()
            sms.kill()
        }
        let section =
            Self.smtpSection(smtp.port).filter { $0 != "sms_transport: none" } + [
                "sms_transport: twilio", "sms:", "  base_url: http://127.0.0.1:\(sms.port)", "  account_sid: AC9",
                "  auth_token: t", "  from: \"+15005550006\"", "  rate_limit: 0",
            ]
        try await WorkerProcess.receipts(prefix: "rcpt-both", section: section) { fleet in
            try await fleet.declare()
            let p = "both\(UInt32.random(in: 0...UInt32.max))"
            let event = receiptEvent(
                1, prefix: p, currency: "JPY", amount: 1500, phone: "+819012345678", merchant: "m_tokyo")
            let pub = fleet.publisher()
            try await fleet.publish([event], via: pub)
            try fleet.start()
            let done = await eventually(timeout: .seconds(60)) {
                ((try? sms.requests()) ?? []).count == 1
                    && (try? fleet.count("receipt_deliveries", where: "state = 'sent'")) == 2
            }
            #expect(done, "\(fleet.process?.log ?? "")")
            #expect(smtp.count == 1)
            let retried = await fleet.metric("payfleet_retried_total") ?? 0
            #expect(retried == 1)
            let dead = try await fleet.deadLetters()
            #expect(dead.isEmpty)
            pub.close()
        }
    }

    /// Email and SMS for one payment, sent side by side; the SMTP server refuses the first
    /// message (451): the SMS went out and is not sent again, the retry sends only the email.
    @Test func aFailedEmailRetriesWithoutResendingTheSMS() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-both-email")
        let smtp = SMTPSink(dir: dir + "/smtp")
        let sms = SMSSink(dir: dir + "/sms")
        try await smtp.start(failFirst: 1)
        try await sms.start()
        defer {
            smtp.kill()
            sms.kill()
        }
        let section =
            Self.smtpSection(smtp.port).filter { $0 != "sms_transport: none" } + [
                "sms_transport: twilio", "sms:", "  base_url: http://127.0.0.1:\(sms.port)", "  account_sid: AC9",
                "  auth_token: t", "  from: \"+15005550006\"", "  rate_limit: 0",
            ]
        try await WorkerProcess.receipts(prefix: "rcpt-both-email", section: section) { fleet in
            try await fleet.declare()
            let p = "bothe\(UInt32.random(in: 0...UInt32.max))"
            let event = receiptEvent(
                1, prefix: p, currency: "JPY", amount: 1500, phone: "+819012345678", merchant: "m_tokyo")
            let pub = fleet.publisher()
            try await fleet.publish([event], via: pub)
            try fleet.start()
            let done = await eventually(timeout: .seconds(60)) {
                smtp.count == 1 && (try? fleet.count("receipt_deliveries", where: "state = 'sent'")) == 2
            }
            #expect(done, "\(fleet.process?.log ?? "")")
            #expect(((try? sms.requests()) ?? []).count == 1, "the SMS sent once, not again with the email's retry")
            let retried = await fleet.metric("payfleet_retried_total") ?? 0
            #expect(retried == 1)
            let dead = try await fleet.deadLetters()
            #expect(dead.isEmpty)
            pub.close()
        }
    }
}
