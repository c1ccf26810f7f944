import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import Testing

/// Hostile input at ingest (issue 15): every request goes through the application's own routes
/// and asserts what is kept (the outbox, the state directory) and what is answered.
@Suite struct HostileInputTests {
    // MARK: Helpers

    func api(
        _ client: any TestClientProtocol, _ body: [UInt8], key: String = TestIngest.apiKey, idem: String = UUID().uuidString,
        extra: HTTPFields = [:]
    ) async throws -> TestResponse {
        var h: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(key)"]
        h[HTTPField.Name("Idempotency-Key")!] = idem
        h.append(contentsOf: extra)
        return try await client.execute(uri: "/v1/events", method: .post, headers: h, body: ByteBuffer(bytes: body))
    }

    func stripe(_ client: any TestClientProtocol, _ body: [UInt8]) async throws -> TestResponse {
        try await client.execute(
            uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body), body: ByteBuffer(bytes: body))
    }

    /// A canonical event as JSON text with `fields` replacing/adding top-level members.
    func canonical(_ eventID: String, _ fields: [String: Any] = [:], merchant: String = "m_acme") -> [String: Any] {
        var e = (try! JSONSerialization.jsonObject(with: Data(TestIngest.canonical(eventID: eventID, merchant: merchant))))
            as! [String: Any]
        for (k, v) in fields { e[k] = v }
        return e
    }

    func bytes(_ o: [String: Any]) -> [UInt8] { Array(try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) }

    /// Every file of the state directory, as bytes.
    func stateFiles(_ config: IngestConfiguration) throws -> [Data] {
        let dir = (config.statePath as NSString).deletingLastPathComponent
        return try FileManager.default.contentsOfDirectory(atPath: dir).map { try Data(contentsOf: URL(fileURLWithPath: dir + "/" + $0)) }
    }

    func nowhere(_ digits: String, _ config: IngestConfiguration) throws -> Bool {
        try stateFiles(config).allSatisfy { $0.range(of: Data(digits.utf8)) == nil }
    }

    // MARK: 1. Card numbers inside longer digit runs

    @Test(arguments: ["4111 1111 1111 1111 12/25", "4242424242424242 123", "ref 1 4242424242424242", "00044242424242424242"])
    func cardNumberInsideALongerRunIsFound(_ text: String) async throws {
        #expect(PANGuard.containsPAN(text))
        let masked = PANGuard.mask(text)
        #expect(!PANGuard.containsPAN(masked), "\(masked)")
        try await TestIngest.withApp { client, config in
            let r = try await api(client, bytes(canonical("pan-run", ["reference": text])))
            #expect(r.status == .unprocessableContent)
            #expect(TestIngest.errorCode(r) == "pan_detected")
            #expect(TestIngest.errorMessage(r) == "reference: contains a card number")
            // Provider route: masked, accepted, counted.
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            payout["description"] = text
            let s = try await stripe(client, TestIngest.stripeEvent(id: "evt_run", type: "payout.paid", object: payout))
            #expect(s.status == .accepted)
            let e = try #require(try TestIngest.outbox(config).first)
            #expect(!PANGuard.containsPAN(e.reference ?? ""))
            #expect(try nowhere("4242424242424242", config) && nowhere("4111 1111 1111 1111", config))
        }
    }

    // MARK: 2. Duplicate keys

    @Test func duplicateKeysAreRefusedOnEveryRoute() async throws {
        try await TestIngest.withApp { client, config in
            let text = String(decoding: bytes(canonical("dup")), as: UTF8.self)
            let dup = "{\"reference\":\"4242 4242 4242 4242\",\"reference\":\"x\"," + text.dropFirst()
            let r = try await api(client, Array(dup.utf8))
            #expect(r.status == .badRequest)
            #expect(TestIngest.errorCode(r) == "duplicate_key")
            #expect(TestIngest.errorMessage(r).hasPrefix("reference:"))
            // The same key spelt with an escape is the same key.
            let escaped = "{\"reference\":\"x\",\"referenc\\u0065\":\"4242 4242 4242 4242\"," + text.dropFirst()
            let r2 = try await api(client, Array(escaped.utf8))
            #expect(TestIngest.errorCode(r2) == "duplicate_key")
            // Nested, and on a provider route after a valid signature.
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            let stripeText = String(decoding: TestIngest.stripeEvent(id: "evt_dup", type: "payout.paid", object: payout), as: UTF8.self)
            let nested = stripeText.replacingOccurrences(of: "\"metadata\":{", with: "\"metadata\":{\"a\":\"1\",\"a\":\"2\",")
            #expect(nested != stripeText)
            let s = try await stripe(client, Array(nested.utf8))
            #expect(s.status == .badRequest)
            #expect(TestIngest.errorCode(s) == "duplicate_key")
            #expect(TestIngest.errorMessage(s).hasPrefix("data.object.metadata.a:"), "\(TestIngest.errorMessage(s))")
            #expect(try TestIngest.outbox(config).isEmpty)
            #expect(try nowhere("4242 4242 4242 4242", config))
        }
    }

    // MARK: 3. Exemptions only where documented; keys and kept headers scanned

    @Test func stripeExemptionHoldsOnlyAtDocumentedPaths() async throws {
        try await TestIngest.withApp { client, config in
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            payout["metadata"] = ["source": "tok_4242424242424242", "4111111111111111": "x"]
            let r = try await stripe(client, TestIngest.stripeEvent(id: "evt_ex", type: "payout.paid", object: payout))
            #expect(r.status == .accepted)
            let body = try #require(try TestIngest.outboxBodies(config).first)
            #expect(!body.contains("4242424242424242") && !body.contains("4111111111111111"))
            #expect(try nowhere("4242424242424242", config) && nowhere("4111111111111111", config))
            // The documented identifiers stay as sent.
            let e = try #require(try TestIngest.outbox(config).first)
            #expect(e.metadata["payout_id"] == "po_1Pgc79B7WZ01zgkWu1KToYf4")
        }
        #expect(StripeMapper.isExempt(path: "data.object.balance_transaction", key: "balance_transaction", value: "txn_1Pg"))
        #expect(!StripeMapper.isExempt(path: "data.object.metadata.source", key: "source", value: "tok_4242424242424242"))
        #expect(AdyenMapper.isExempt(path: "notificationItems[0].NotificationRequestItem.pspReference", key: "pspReference", value: "1"))
        #expect(!AdyenMapper.isExempt(path: "notificationItems[0].NotificationRequestItem.additionalData.pspReference", key: "pspReference", value: "1"))
    }

    /// The exemption's parent path collapses array indices as the regular expression `\[\d+\]`
    /// did (ICU's `\d`: every Unicode decimal digit), without one.
    @Test func indexCollapsingMatchesTheRegularExpression() {
        let paths = [
            "", "data.object", "data.object.charges.data[0]", "data.object.charges.data[12].balance_transaction",
            "a[0][1]", "a[]", "a[x]", "a[1x]", "a[", "a]", "[0]", "a[[0]]", "a[0", "a[٣]", "a[१२]", "a[𝟘]", "a[½]", "a[Ⅻ]",
            "métadata[7].é", "a[0]b[00]c[-1]", "a[ 1]", "a[1 ]", "data.object.refunds.data[3]",
        ]
        for p in paths {
            let regex = p.replacingOccurrences(of: #"\[\d+\]"#, with: "[]", options: .regularExpression)
            #expect(StripeMapper.collapsingIndices(p[...]) == regex, "\(p)")
        }
    }

    @Test func cardNumbersInKeysAndHeadersAreRefused() async throws {
        try await TestIngest.withApp { client, config in
            let inKey = try await api(client, bytes(canonical("k1", ["metadata": ["4111111111111111": "x"]])))
            #expect(inKey.status == .unprocessableContent && TestIngest.errorCode(inKey) == "pan_detected")
            #expect(TestIngest.errorMessage(inKey).hasPrefix("metadata.<key>"))
            // An Idempotency-Key is kept only as its hash: one holding a card number is taken,
            // and the digits are stored nowhere (a UUID can hold a Luhn-valid run by chance).
            let inIdem = try await api(client, bytes(canonical("k2")), idem: "4111-1111-1111-1111")
            #expect(inIdem.status == .accepted)
            let uuidWithRun = try await api(client, bytes(canonical("k2u")), idem: "41111111-1111-1111-1111-000000000000")
            #expect(uuidWithRun.status == .accepted)
            let ctl = try await api(client, bytes(canonical("k3")), idem: "abc\u{7}def")
            #expect(ctl.status == .badRequest)
            // A traceparent holding a card number, or malformed, is replaced — never kept.
            let bad = ["00-41111111111111114111111111111111-1111111111111111-01", "00-ABCDEF-xyz-01", "00-" + String(repeating: "0", count: 32) + "-1111111111111111-01"]
            for (i, t) in bad.enumerated() {
                let r = try await api(client, bytes(canonical("tp\(i)")), extra: [HTTPField.Name("traceparent")!: t])
                #expect(r.status == .accepted)
            }
            let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            _ = try await api(client, bytes(canonical("tp-good")), extra: [HTTPField.Name("traceparent")!: good])
            let db = try SQLiteConnection(path: config.statePath, readOnly: true)
            let kept = try db.query("SELECT traceparent FROM outbox ORDER BY seq").compactMap { $0.string(0) }
            #expect(kept.count == 6)
            #expect(kept.allSatisfy { $0.wholeMatch(of: /00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}/) != nil })
            #expect(!kept.contains(where: { bad.contains($0) }))
            #expect(kept.last == good)
            #expect(try nowhere("4111111111111111", config) && nowhere("4111-1111-1111-1111", config)
                && nowhere("41111111-1111-1111-1111", config))
        }
    }

    // MARK: 4–6. Bounds

    @Test func everyFieldIsBoundedAndNamed() async throws {
        let long = String(repeating: "c", count: 20_000)
        try await TestIngest.withApp { client, config in
        let cases: [(String, [String: Any], String)] = [
            ("b1", ["customer": ["id": long]], "customer.id"),
            ("b2", ["payment": ["id": String(repeating: "p", count: 256)]], "payment.id"),
            ("b3", ["reference": String(repeating: "r", count: 1001)], "reference"),
            ("b4", ["metadata": Dictionary(uniqueKeysWithValues: (0..<51).map { ("k\($0)", "v") })], "metadata"),
            ("b5", ["amount": ["value": 1_000_000_000_000_001, "currency": "GBP"]], "amount.value"),
            ("b6", ["amount": ["value": 500, "currency": "GBP"], "fee": ["value": 501, "currency": "GBP"]], "fee.value"),
            ("b7", ["occurred_at": "1999-12-31T23:59:59Z"], "occurred_at"),
            ("b8", ["occurred_at": RFC3339.format(Date().addingTimeInterval(2 * 86_400))], "occurred_at"),
            ("b9", ["customer": ["id": "cus_1\u{0}x"]], "customer.id"),
            ("b10", ["customer": ["id": "cus_1", "name": "Ada\u{0}Lovelace"]], "customer.name"),
            ("b11", ["amount": ["value": 0, "currency": "GBP"]], "amount.value"),
            ("b12", ["payment": ["id": "p1", "card": ["last4": "42424"]]], "payment.card.last4"),
            ("b13", ["source": ["provider": "phone", "event_id": "e\u{1b}[2J"]], "source.event_id"),
        ]
            for (eventID, fields, field) in cases {
                let r = try await api(client, bytes(canonical(eventID, fields)))
                #expect(r.status == .unprocessableContent, "\(eventID)")
                #expect(TestIngest.errorMessage(r).hasPrefix(field + ":"), "\(eventID): \(TestIngest.errorMessage(r))")
                #expect(!TestIngest.errorMessage(r).contains(long))
            }
            #expect(try TestIngest.outbox(config).isEmpty)
            // On a provider route too: an amount past the bound is refused, not booked.
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            payout["amount"] = 1_000_000_000_000_001
            let s = try await stripe(client, TestIngest.stripeEvent(id: "evt_big", type: "payout.paid", object: payout))
            #expect(s.status == .unprocessableContent)
            #expect(TestIngest.errorMessage(s).contains("amount"))
            payout["amount"] = Int64.max
            let m = try await stripe(client, TestIngest.stripeEvent(id: "evt_max", type: "payout.paid", object: payout))
            #expect(m.status == .unprocessableContent)
            #expect(try TestIngest.outbox(config).isEmpty)
        }
    }

    // MARK: 7. Standard Webhooks: labels, secrets, tolerance

    @Test func unknownStandardSourcesShareOneMetricLabel() async throws {
        try await TestIngest.withApp { client, _ in
            for i in 0..<50 {
                let r = try await client.execute(
                    uri: "/webhooks/standard/probe\(i)", method: .post, headers: [.contentType: "application/json"],
                    body: ByteBuffer(string: "{}"))
                #expect(r.status == .notFound)
            }
            let m = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(!m.contains("probe"))
            #expect(m.contains(#"source="standard:unknown""#))
        }
    }

    func read(_ yaml: String) throws(ConfigError) -> IngestConfiguration {
        let root = try ConfigSection.parse(yaml: yaml)
        return try IngestConfiguration.read(root: root, section: try root.section("ingest"), merchants: TestIngest.merchants, amqp: nil)
    }

    @Test func emptySecretsAndReservedSourcesAreStartUpErrors() throws {
        #expect(throws: ConfigError.self) { try read("ingest:\n  stripe:\n    webhook_secrets: [\"\"]\n") }
        do { _ = try read("ingest:\n  stripe:\n    webhook_secrets: [\"whsec_ok_secret\", \"\"]\n") } catch {
            #expect(error.key == "ingest.stripe.webhook_secrets[1]")
        }
        #expect(throws: ConfigError.self) {
            try read("ingest:\n  standard_webhooks:\n    - {source: stripe, secret: \"\(TestIngest.standardSecret)\"}\n")
        }
        #expect(throws: ConfigError.self) {
            try read("ingest:\n  api_keys:\n    - {sha256: \"\(String(repeating: "a", count: 64))\", source: adyen, merchants: [\"*\"]}\n")
        }
        let c = try read(
            "ingest:\n  standard_webhooks:\n    - {source: billing, secret: \"\(TestIngest.standardSecret)\", tolerance: 10s}\n"
                + "    - {source: crm, secret: \"\(TestIngest.standardSecret)\", tolerance: 600s}\n")
        #expect(c.standardTolerances == ["billing": 10, "crm": 600])
    }

    @Test func toleranceIsPerSource() async throws {
        var config = TestIngest.configuration()
        config.standardWebhookSecrets["crm"] = [TestIngest.standardSecret]
        config.standardTolerances = ["billing": 10, "crm": 600]
        try await TestIngest.withApp(config) { client, _ in
            let old = Int64(Date().timeIntervalSince1970) - 120
            for (source, expected) in [("billing", HTTPResponse.Status.unauthorized), ("crm", .accepted)] {
                let body = TestIngest.canonical(eventID: "tol-\(source)", provider: source)
                let h: HTTPFields = [
                    HTTPField.Name("webhook-id")!: "msg_t", HTTPField.Name("webhook-timestamp")!: String(old),
                    HTTPField.Name("webhook-signature")!:
                        StandardWebhooks.sign(id: "msg_t", timestamp: old, payload: body, secret: TestIngest.standardSecret),
                ]
                let r = try await client.execute(uri: "/webhooks/standard/\(source)", method: .post, headers: h, body: ByteBuffer(bytes: body))
                #expect(r.status == expected, "\(source)")
            }
        }
    }

    // MARK: 9. Timestamps at the edge of Int64

    @Test func extremeSignedTimestampsAreStaleNotATrap() async throws {
        try await TestIngest.withApp { client, config in
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            let body = TestIngest.stripeEvent(id: "evt_min", type: "payout.paid", object: payout)
            for t in [Int64.min, Int64.min + 1, Int64.max] {
                let r = try await client.execute(
                    uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body, at: t), body: ByteBuffer(bytes: body))
                #expect(r.status == .unauthorized)
                let std = TestIngest.canonical(eventID: "tmin", provider: "billing")
                let h: HTTPFields = [
                    HTTPField.Name("webhook-id")!: "m", HTTPField.Name("webhook-timestamp")!: String(t),
                    HTTPField.Name("webhook-signature")!: StandardWebhooks.sign(id: "m", timestamp: t, payload: std, secret: TestIngest.standardSecret),
                ]
                let s = try await client.execute(uri: "/webhooks/standard/billing", method: .post, headers: h, body: ByteBuffer(bytes: std))
                #expect(s.status == .unauthorized)
            }
            #expect(try TestIngest.outbox(config).isEmpty)
        }
    }

    // MARK: 11–12. Tenants and internal types

    @Test func dedupeIsScopedToSourceAndMerchant() async throws {
        var config = TestIngest.configuration()
        let keyB = "pf_test_phone_key_globex"
        config.apiKeys.append(.init(sha256: TestIngest.sha256Hex(keyB), source: "phone", merchants: ["m_globex"]))
        try await TestIngest.withApp(config) { client, config in
            let a = try await api(client, TestIngest.canonical(eventID: "call-42", merchant: "m_acme"), idem: "a1")
            let b = try await api(client, TestIngest.canonical(eventID: "call-42", merchant: "m_globex"), key: keyB, idem: "b1")
            #expect(TestIngest.json(a)["status"] as? String == "accepted")
            #expect(TestIngest.json(b)["status"] as? String == "accepted")
            #expect(TestIngest.json(a)["id"] as? String != TestIngest.json(b)["id"] as? String)
            // The same integrator sending its event again under a new Idempotency-Key: duplicate.
            let again = try await api(client, TestIngest.canonical(eventID: "call-42", merchant: "m_acme"), idem: "a2")
            #expect(TestIngest.json(again)["status"] as? String == "duplicate")
            #expect(TestIngest.json(again)["id"] as? String == TestIngest.json(a)["id"] as? String)
            #expect(try TestIngest.outbox(config).map(\.merchantID) == ["m_acme", "m_globex"])
        }
    }

    @Test func internalTypesAreRefusedOnEveryRoute() async throws {
        try await TestIngest.withApp { client, config in
            let body = TestIngest.canonical(eventID: "close-1", type: "settlement.day_closed")
            let r = try await api(client, body)
            #expect(r.status == .unprocessableContent)
            #expect(TestIngest.errorMessage(r).hasPrefix("type:"))
            let std = TestIngest.canonical(eventID: "close-2", provider: "billing", type: "settlement.day_closed")
            let ts = Int64(Date().timeIntervalSince1970)
            let h: HTTPFields = [
                HTTPField.Name("webhook-id")!: "m", HTTPField.Name("webhook-timestamp")!: String(ts),
                HTTPField.Name("webhook-signature")!: StandardWebhooks.sign(id: "m", timestamp: ts, payload: std, secret: TestIngest.standardSecret),
            ]
            let s = try await client.execute(uri: "/webhooks/standard/billing", method: .post, headers: h, body: ByteBuffer(bytes: std))
            #expect(s.status == .unprocessableContent)
            #expect(try TestIngest.outbox(config).isEmpty)
        }
    }
}

/// Over-long and slow bodies against the real HTTP server on loopback (issue 15 item 8).
@Suite struct SlowAndLargeBodyTests {
    /// Sends `head` and `body` on a raw TCP connection; returns the first bytes answered and
    /// how long the answer took, or nil if nothing came within `timeout`.
    static func raw(port: Int, head: String, body: [UInt8], timeout: TimeInterval) -> (String, TimeInterval)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { return nil }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let start = Date()
        let all = Array(head.utf8) + body
        _ = all.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0)
        if n == 0 { return ("<closed>", Date().timeIntervalSince(start)) }  // the server closed the connection
        guard n > 0 else { return nil }
        return (String(decoding: buf[0..<n], as: UTF8.self), Date().timeIntervalSince(start))
    }

    @Test func oversizedAndSlowBodiesAreAnsweredWithoutWaitingForTheRest() async throws {
        var config = TestIngest.configuration()
        config.bodyTimeoutSeconds = 2
        config.idleTimeoutSeconds = 3
        let app = try await buildApplication(configuration: config, logger: .init(label: "ingest-test"))
        try await app.test(.live) { client in
            guard let port = client.port else { Issue.record("no port"); return }
            // Declares 100 MB, sends 100 KB and stops: 413 at once, not after 100 MB.
            let big = Self.raw(
                port: port,
                head: "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
                body: [UInt8](repeating: 32, count: 100_000), timeout: 5)
            #expect(big?.0.hasPrefix("HTTP/1.1 413") == true, "\(String(describing: big))")
            // Chunked, over the limit: 413 once the limit is passed.
            let chunk = [UInt8](repeating: 32, count: 70_000)
            let chunked = Self.raw(
                port: port,
                head: "POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(String(chunk.count, radix: 16))\r\n",
                body: chunk + Array("\r\n".utf8), timeout: 5)
            #expect(chunked?.0.hasPrefix("HTTP/1.1 413") == true, "\(String(describing: chunked))")
            // A body that never finishes: answered 408 after body_timeout, or the connection is
            // closed by the idle timeout; never held open for ever.
            let slow = Self.raw(
                port: port,
                head: "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", body: Array("{".utf8), timeout: 10)
            if let slow { #expect(slow.1 < 9) } else { Issue.record("no answer and no close within 10 s") }
        }
    }
}
