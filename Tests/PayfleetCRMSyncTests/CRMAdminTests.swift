import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The real `crm-sync` process against the private broker: the customer API behind the admin
/// token and keyed by merchant (issue 15 items 10 and 14), `/metrics` and `/readyz` free of
/// personal data, reversals reaching the CRM (issue 14 item 5) and an overflow dead-lettered
/// (issue 15 item 5).
@Suite(.serialized) struct CRMAdminTests {
    static let token = "adm-" + String(repeating: "7f3a", count: 10)

    static func start(_ fleet: WorkerProcess, events: [PaymentEvent]) async throws {
        try await fleet.declare()
        let pub = fleet.publisher()
        #expect(await pub.waitUntilConnected())
        try await fleet.publish(events, via: pub)
        pub.close()
        try fleet.start()
    }

    @Test("GET /customers/{id}?merchant=: 401 without or with a wrong token, 400 without merchant, 200 with both; /metrics has no personal data")
    func tokenAndMerchant() async throws {
        try await WorkerProcess.crm(
            prefix: "crm-adm", sectionYAML: ["crm_file: {dir}/crm.jsonl", "admin_token_file: {dir}/admin-token"]
        ) { fleet in
            try "\(Self.token)\n".write(toFile: fleet.dir + "/admin-token", atomically: true, encoding: .utf8)
            // Customer "42" at two merchants, with different people behind it.
            let events = [
                crmEvent("evt_adm_a_\(fleet.name)", .paymentSucceeded, merchant: "m_a", amount: 1_200, customer: "42",
                         payment: "pi_a", name: "Ada Lovelace", email: "ada@a.example"),
                crmEvent("evt_adm_b_\(fleet.name)", .paymentSucceeded, merchant: "m_b", amount: 3_400, customer: "42",
                         payment: "pi_b", at: "2026-11-25T10:15:00Z", name: "Grace Hopper", email: "grace@b.example"),
                crmEvent("evt_adm_c_\(fleet.name)", .paymentSucceeded, merchant: "m_a", amount: 99, customer: "cus 1/ü",
                         payment: "pi_c", name: "Ada Lovelace", email: "ada@a.example"),
            ]
            try await Self.start(fleet, events: events)
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.count("processed") == 3 },
                    "log: \(fleet.process?.log.suffix(2000) ?? "")")
            let url = fleet.adminURL + "/customers/42?merchant=m_a"
            // An id with a space, a slash and a non-ASCII letter, percent-encoded as one segment.
            let odd = await adminGET(fleet.adminURL + "/customers/cus%201%2F%C3%BC?merchant=m_a", token: Self.token)
            #expect(odd?.status == 200, "\(odd?.body ?? "")")
            #expect(odd?.body.contains("\"customer_id\":\"cus 1\\/ü\"") == true, "\(odd?.body ?? "")")
            let none = await adminGET(url, token: nil)
            #expect(none?.status == 401)
            #expect(none?.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            #expect(none?.body.contains("ada@") == false)
            let wrong = await adminGET(url, token: String(Self.token.dropLast()) + "x")
            #expect(wrong?.status == 401)
            #expect(wrong?.body.contains("Ada") == false)
            let noMerchant = await adminGET(fleet.adminURL + "/customers/42", token: Self.token)
            #expect(noMerchant?.status == 400)
            #expect(noMerchant?.body.contains("merchant_required") == true)
            let a = try #require(await adminGET(url, token: Self.token))
            #expect(a.status == 200)
            let docA = try #require(try JSONSerialization.jsonObject(with: Data(a.body.utf8)) as? [String: Any])
            #expect(docA["email"] as? String == "ada@a.example")
            #expect(docA["merchant_id"] as? String == "m_a")
            #expect(((docA["balances"] as? [[String: Any]])?.first?["paid"] as? NSNumber)?.int64Value == 1_200)
            let b = try #require(await adminGET(fleet.adminURL + "/customers/42?merchant=m_b", token: Self.token))
            let docB = try #require(try JSONSerialization.jsonObject(with: Data(b.body.utf8)) as? [String: Any])
            #expect(docB["email"] as? String == "grace@b.example")
            #expect(((docB["balances"] as? [[String: Any]])?.first?["paid"] as? NSNumber)?.int64Value == 3_400)
            #expect(!b.body.contains("ada@a.example"))
            // The other admin routes need no token and carry no personal data.
            #expect(await fleet.admin("/healthz")?.status == 200)
            let metrics = await fleet.metrics()
            #expect(metrics.contains("payfleet_processed_total"))
            for personal in ["ada@a.example", "grace@b.example", "Ada", "Grace", "Lovelace", "pi_a", "pi_b"] {
                #expect(!metrics.contains(personal), "/metrics shows \(personal)")
            }
            let ready = await fleet.admin("/readyz")?.body ?? ""
            #expect(!ready.contains("@"), "\(ready)")
        }
    }

    @Test("Without admin_token_file the customer API answers 403 to everyone; a short token is a start-up error")
    func noTokenNoCustomerData() async throws {
        try await WorkerProcess.crm(prefix: "crm-notok") { fleet in
            try await Self.start(fleet, events: [crmEvent("evt_notok_\(fleet.name)", .paymentSucceeded, amount: 500)])
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.count("processed") == 1 })
            let r = await adminGET(fleet.adminURL + "/customers/cus_1?merchant=m_acme", token: "anything-at-all")
            #expect(r?.status == 403)
            #expect(r?.body.contains("crm-sync.admin_token_file") == true)
            #expect(r?.body.contains("ada@example.com") == false)
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
            // A guessable token is refused before anything starts.
            try "short\n".write(toFile: fleet.dir + "/admin-token", atomically: true, encoding: .utf8)
            try fleet.writeConfig(sectionYAML: ["crm_file: {dir}/crm.jsonl", "admin_token_file: {dir}/admin-token"])
            try fleet.start()
            #expect(await fleet.process?.wait(timeout: .seconds(30)) == 78)
            #expect(fleet.process?.log.contains("crm-sync.admin_token_file") == true)
            // An inline token is refused too: secrets live in files.
            try fleet.writeConfig(sectionYAML: ["crm_file: {dir}/crm.jsonl", "admin_token: \(Self.token)"])
            try fleet.start()
            #expect(await fleet.process?.wait(timeout: .seconds(30)) == 78)
            #expect(fleet.process?.log.contains("crm-sync.admin_token") == true)
        }
    }

    /// cus_rv: payment pi_rv 100.00; refund re_rv 25.00 of it; re_rv fails; payment pi_rv2 40.00
    /// reversed (the reversal first). By hand: paid 10000 (pi_rv2 reversed), refunded 0,
    /// outstanding 0. cus_huge: Int64.max paid, then 1 more → dead-lettered AmountOverflow.
    @Test("Reversals reach the sandbox CRM; an overflowing sum is dead-lettered, the huge customer still answers 200")
    func reversalsAndOverflow() async throws {
        try await WorkerProcess.crm(
            prefix: "crm-rev", sectionYAML: ["crm_file: {dir}/crm.jsonl", "admin_token_file: {dir}/admin-token"]
        ) { fleet in
            try "\(Self.token)\n".write(toFile: fleet.dir + "/admin-token", atomically: true, encoding: .utf8)
            let n = fleet.name
            let first = [
                crmEvent("evt_p_\(n)", .paymentSucceeded, amount: 10_000, customer: "cus_rv", payment: "pi_rv",
                         at: "2026-11-24T10:00:00Z"),
                reversedEvent("evt_rv2_\(n)", payment: "pi_rv2", amount: 4_000, at: "2026-11-24T10:30:00Z"),
                crmEvent("evt_p2_\(n)", .paymentSucceeded, amount: 4_000, customer: "cus_rv", payment: "pi_rv2",
                         at: "2026-11-24T10:20:00Z"),
                refundEvent("evt_r_\(n)", refund: "re_rv", amount: 2_500, payment: "pi_rv", at: "2026-11-24T11:00:00Z"),
                crmEvent("evt_big_\(n)", .paymentSucceeded, amount: Int64.max, customer: "cus_huge", payment: "pi_huge",
                         at: "2026-11-24T10:00:00Z"),
            ]
            try await Self.start(fleet, events: first)
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.count("processed") == 5 },
                    "log: \(fleet.process?.log.suffix(2000) ?? "")")
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish([
                refundFailedEvent("evt_rf_\(n)", refund: "re_rv", amount: 2_500, payment: "pi_rv"),
                crmEvent("evt_one_\(n)", .paymentSucceeded, amount: 1, customer: "cus_huge", payment: "pi_one",
                         at: "2026-11-24T11:00:00Z"),
            ], via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(60)) { try await fleet.depth(fleet.topology.dlq) == 1 })
            #expect(try await eventually(timeout: .seconds(30)) {
                try fleet.count("processed") == 6 && fleet.count("effect_journal", where: "state <> 'done'") == 0
            })
            let dead = try #require(try await fleet.deadLetters().first)
            #expect(dead.messageID == "evt_one_\(n)")
            let error = dead.headers[PayfleetHeaders.error]?.stringValue ?? ""
            #expect(error.hasPrefix("AmountOverflow"), "\(error)")
            #expect(fleet.process?.isRunning == true, "no trap")

            // The sandbox CRM's last line for cus_rv is the state after both reversals.
            let (sandbox, _, grow) = try sandboxFigures(fleet.crmFile)
            #expect(grow)
            #expect(sandbox[CRMStream.key("cus_rv", "m_acme", "GBP")] == Figures(outstanding: 0, paid: 10_000, refunded: 0, disputed: 0))
            #expect(sandbox[CRMStream.key("cus_huge", "m_acme", "GBP")] == Figures(outstanding: 0, paid: Int64.max, refunded: 0, disputed: 0))
            let lines = try String(contentsOfFile: fleet.crmFile, encoding: .utf8).split(separator: "\n")
            let last = try #require(lines.last { $0.contains("\"cus_rv\"") })
            #expect(last.contains("\"event_id\":\"evt_rf_\(n)\""), "\(last)")

            let huge = try #require(await adminGET(fleet.adminURL + "/customers/cus_huge?merchant=m_acme", token: Self.token))
            #expect(huge.status == 200)
            #expect(huge.body.contains("9223372036854775807"))
            let rv = try #require(await adminGET(fleet.adminURL + "/customers/cus_rv?merchant=m_acme", token: Self.token))
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(rv.body.utf8)) as? [String: Any])
            let history = try #require(doc["payments"] as? [[String: Any]])
            #expect(Set(history.filter { $0["reversed"] as? Bool == true }.compactMap { $0["event_id"] as? String })
                    == ["evt_r_\(n)", "evt_p2_\(n)"])
            #expect(Set(history.filter { $0["matched"] as? Bool == true }.compactMap { $0["event_id"] as? String })
                    == ["evt_rf_\(n)", "evt_rv2_\(n)"])
        }
    }

    @Test("A CRM reply that echoes an email, a phone number and tokens: DLQ error and /readyz keep the status, not the personal data")
    func repliesRedacted() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        crm.setScript { _, _ in
            .init(
                status: 400,
                body: "{\"error\": \"contact ada@example.com (+44 7700 900123) rejected, Bearer crm-token refused\", \"access_token\": \"sk_live_51HxQ2abcdefghijkl\"}")
        }
        var o = WorkerProcess.Options.worker("crm-sync", prefix: "crm-redact")
        o.sectionYAML = CRMResilienceTests.httpSection(crm.url, balanceTransform: "money")
        try await WorkerProcess.with(o) { fleet in
            try await Self.start(fleet, events: [crmEvent("evt_red_\(fleet.name)", .paymentSucceeded, amount: 1_999)])
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.topology.dlq) == 1 },
                    "log: \(fleet.process?.log.suffix(2000) ?? "")")
            let error = try await fleet.deadLetters().first?.headers[PayfleetHeaders.error]?.stringValue ?? ""
            let ready = await fleet.admin("/readyz")?.body ?? ""
            let journal = try fleet.database()?.queryOne("SELECT last_error FROM effect_journal")?.string(0) ?? ""
            for (name, text) in [("DLQ", error), ("/readyz", ready), ("journal", journal)] {
                #expect(text.contains("answered 400"), "\(name): \(text)")
                #expect(text.contains("[email]"), "\(name): \(text)")
                #expect(text.contains("[phone]"), "\(name): \(text)")
                for secret in ["ada@example.com", "7700 900123", "7700900123", "crm-token", "sk_live_51HxQ2abcdefghijkl"] {
                    #expect(!text.contains(secret), "\(name) shows \(secret): \(text)")
                }
            }
        }
    }
}
