import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// Issue 5, "what must be shown" 2: the CRM answering 503 / 429 with Retry-After for a while,
/// then 400 → DLQ → mapping fixed → replayed, through the real `crm-sync` process.
@Suite(.serialized) struct CRMResilienceTests {
    static func httpSection(_ url: String, balanceTransform: String) -> [String] {
        [
            "connector: http",
            "timeout: 5s",
            "max_retry_after: 5s",
            "http:",
            "  auth: {type: bearer, token: crm-token}",
            "  customers:",
            "    method: PUT",
            "    url: \"\(url)/customers/{customer_id}\"",
            "    mapping:",
            "      - {target: id, source: customer_id}",
            "      - {target: balance, source: outstanding, transform: \(balanceTransform)}",
            "      - {target: paid, source: paid, transform: money}",
            "      - {target: currency, source: currency}",
        ]
    }

    @Test("503 and 429 with Retry-After, then recovery: every update arrives once, after the pause the CRM asked for")
    func transientThenRecovery() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        // The first 10 calls fail: 503 and 429 in turn, each asking for a 1 s pause.
        crm.setScript { _, i in
            guard i < 10 else { return nil }
            return i % 2 == 0
                ? .init(status: 503, headers: ["Retry-After": "1"], body: "{\"error\": \"maintenance\"}")
                : .init(status: 429, headers: ["Retry-After": "1"], body: "{\"error\": \"rate limited\"}")
        }
        var o = WorkerProcess.Options.worker("crm-sync", prefix: "crm-retry")
        o.sectionYAML = Self.httpSection(crm.url, balanceTransform: "money")
        o.retryDelays = ["200ms", "400ms", "800ms", "1s", "2s"]
        try await WorkerProcess.with(o) { fleet in
            // One payment each for 20 customers: 20 updates.
            let events = (0..<20).map { i in
                crmEvent("evt_retry_\(fleet.name)_\(i)", .paymentSucceeded, amount: Int64(1000 + i), customer: "cus_r\(i)",
                         payment: "pi_r\(i)", at: "2026-11-24T10:\(String(format: "%02d", i)):00Z")
            }
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            let done = try await eventually(timeout: .seconds(60)) {
                let n = try fleet.effectsDone()
                return crm.requests.filter { $0.status == 200 }.count >= 20 && n == 20
            }
            #expect(done, "log: \(fleet.process?.log.suffix(3000) ?? "")")
            let reqs = crm.requests
            let accepted = reqs.filter { $0.status == 200 }
            // Each update once, none lost, with the figures of its event.
            #expect(accepted.count == 20)
            #expect(Set(accepted.compactMap { $0.headers["idempotency-key"] }) == Set(events.map(\.id)))
            for r in accepted {
                let body = try #require(r.json)
                let id = try #require(body["id"] as? String)
                let n = Int(id.dropFirst("cus_r".count))!
                #expect(body["paid"] as? String == Money(value: Int64(1000 + n), currency: Currency(code: "GBP")!).majorString)
                #expect(r.path == "/customers/\(id)")
                #expect(r.headers["authorization"] == "Bearer crm-token")
            }
            #expect(reqs.filter { $0.status == 503 }.count == 5 && reqs.filter { $0.status == 429 }.count == 5)
            // Calls started after the first refusal waited for the Retry-After pause.
            let first = reqs[0].time
            #expect(reqs.count > 10)
            #expect(reqs[10].time.timeIntervalSince(first) >= 0.9, "a call went out before the pause ended")
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            // The retries went through the retry tiers, counted in the metrics.
            #expect((await fleet.metric("payfleet_retried_total") ?? 0) >= 1)
        }
    }

    @Test("400 → DLQ with the status and a body excerpt; after the mapping is fixed, the replayed message succeeds")
    func permanentThenReplay() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        // The CRM validates its input: balance must be a decimal string.
        crm.setScript { r, _ in
            if let b = r.json, !(b["balance"] is String) {
                return .init(status: 400, body: "{\"error\": \"field 'balance' must be a decimal string\"}")
            }
            return nil
        }
        var o = WorkerProcess.Options.worker("crm-sync", prefix: "crm-dlq")
        o.sectionYAML = Self.httpSection(crm.url, balanceTransform: "minor")
        try await WorkerProcess.with(o) { fleet in
            let event = crmEvent("evt_dlq_\(fleet.name)", .invoiceIssued, amount: 4_200, customer: "cus_d1", payment: nil,
                                 invoice: "inv_d1")
            try await fleet.declare()
            try fleet.start()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish([event], via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.topology.dlq) == 1 })
            #expect(crm.requests.count == 1, "a permanent error is not retried")
            let dead = try #require(try await fleet.deadLetters().first)
            let error = dead.headers[PayfleetHeaders.error]?.stringValue ?? ""
            #expect(error.hasPrefix("HTTP400"), "\(error)")
            #expect(error.contains("answered 400"), "\(error)")
            #expect(error.contains("field 'balance' must be a decimal string"), "\(error)")
            #expect(!error.contains("crm-token"))

            // Fix the mapping, restart, replay from the DLQ (republish with confirm, then ack).
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
            try fleet.writeConfig(sectionYAML: Self.httpSection(crm.url, balanceTransform: "money"))
            try fleet.start()
            let s = try await AMQPSession.connect(fleet.amqp)
            let got = try #require(try await s.get(queue: fleet.topology.dlq))
            try await s.publish(AMQPOutgoing(exchange: "", routingKey: fleet.queue, message: got.message, mandatory: true))
            try await s.ack(got.deliveryTag)
            await s.close()
            let ok = try await eventually(timeout: .seconds(30)) { crm.requests.contains { $0.status == 200 } }
            #expect(ok, "log: \(fleet.process?.log.suffix(3000) ?? "")")
            let accepted = crm.requests.filter { $0.status == 200 }
            #expect(accepted.count == 1)
            #expect(accepted.first?.headers["idempotency-key"] == event.id)
            #expect(accepted.first?.json?["balance"] as? String == "42.00")
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(try await eventually(timeout: .seconds(10)) { try fleet.effectsDone() == 1 })
        }
    }
}
