import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetCore
import PayfleetIngest
import PayfleetTestKit
import Testing

/// Issue 19 item 3: `payfleet backfill stripe` lists Stripe's Events API (paginated) and feeds
/// each event through ingest's own route, so nothing is applied twice.
@Suite struct StripeBackfillTests {
    static let key = "rk_test_backfillKey42"

    /// A Stripe Event (the published fixture's envelope) `seconds` ago.
    static func event(_ id: String, _ type: String, _ object: [String: Any], ago seconds: Int64) -> [String: Any] {
        var e = TestIngest.object("event")
        e["id"] = id
        e["type"] = type
        e["created"] = Int64(Date().timeIntervalSince1970) - seconds
        e["data"] = ["object": object]
        return e
    }

    static func events() -> [[String: Any]] {
        var payout = TestIngest.object("payout")
        payout["status"] = "paid"
        var c1 = TestIngest.object("charge")
        c1["id"] = "ch_bf_1"
        var c2 = TestIngest.object("charge")
        c2["id"] = "ch_bf_2"
        c2["amount"] = 2500
        var refunded = TestIngest.object("charge")
        refunded["id"] = "ch_bf_1"
        refunded["amount_refunded"] = 100
        refunded["refunds"] = ["object": "list", "data": [TestIngest.object("refund")], "has_more": false]
        // Newest first, as Stripe lists them.
        return [
            event("evt_bf_5", "customer.updated", TestIngest.object("customer"), ago: 60),
            event("evt_bf_4", "charge.refunded", refunded, ago: 120),
            event("evt_bf_3", "payout.paid", payout, ago: 180),
            event("evt_bf_2", "charge.succeeded", c2, ago: 240),
            event("evt_bf_1", "charge.succeeded", c1, ago: 300),
        ]
    }

    /// A fake Events API (PayfleetTestKit's, as Stripe documents it) in pages of two; the first
    /// call answers 429.
    static func server() -> LoopbackStripe {
        let api = LoopbackStripe.eventsAPI(key: key, events: { StripeBackfillTests.events() }, maxPage: 2)
        return LoopbackStripe { req, i in
            if i == 0 { return .init(status: 429, headers: ["Retry-After": "0"], body: #"{"error": {"type": "rate_limit_error"}}"#) }
            return api(req, i)
        }
    }

    static func backfill(_ server: LoopbackStripe, ingestPort: Int) -> StripeBackfill {
        var api = StripeAPIConfiguration(apiKey: key, feeStatePath: "/nonexistent")
        api.baseURL = server.url
        api.backoffMS = 20
        return StripeBackfill(
            api: StripeAPI(configuration: api), ingestURL: "http://127.0.0.1:\(ingestPort)", webhookSecret: TestIngest.stripeSecret)
    }

    @Test("--dry-run lists every page; the backfill recovers what ingest missed, and a second run finds only duplicates")
    func recovers() async throws {
        let server = Self.server()
        try await server.start()
        defer { server.stop() }
        let config = TestIngest.configuration()
        let app = try await buildApplication(configuration: config, logger: Logger(label: "backfill-test"))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let all = Self.events()
            // Ingest already has two of them (delivered as webhooks before the outage).
            for e in all where ["evt_bf_1", "evt_bf_3"].contains(e["id"] as? String) {
                let body = Array(try JSONSerialization.data(withJSONObject: e))
                let r = try await client.execute(
                    uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body), body: ByteBuffer(bytes: body))
                #expect(r.status == .accepted)
            }
            let before = try TestIngest.outbox(config).count
            #expect(before == 2)
            let since = Int64(Date().timeIntervalSince1970) - 3600
            let dry = try await Self.backfill(server, ingestPort: port).run(since: since, dryRun: true)
            #expect(dry.items.map(\.id) == ["evt_bf_1", "evt_bf_2", "evt_bf_3", "evt_bf_4", "evt_bf_5"])
            #expect(dry.items.allSatisfy { $0.outcome == "would feed" })
            #expect(dry.pages == 3)
            #expect(try TestIngest.outbox(config).count == before, "a dry run feeds nothing")
            let run = try await Self.backfill(server, ingestPort: port).run(since: since, dryRun: false)
            #expect(run.count("accepted") == 3, "\(run.items)")
            #expect(run.count("duplicate") == 2)
            #expect(run.failed == 0)
            // Two charges, a payout and a refund: each once; the unknown type is recorded, not published.
            let events = try TestIngest.outbox(config)
            #expect(events.count == 4)
            #expect(Set(events.map(\.id)).count == 4)
            #expect(events.filter { $0.type == .paymentRefunded }.count == 1)
            #expect(try TestIngest.recordedCount(config) == 1)
            let again = try await Self.backfill(server, ingestPort: port).run(since: since, dryRun: false)
            #expect(again.count("duplicate") == 5 && again.count("accepted") == 0)
            #expect(try TestIngest.outbox(config).count == 4)
            // Pagination as documented: created[gte] on every page, starting_after the last id seen.
            let pages = server.requests.filter { $0.path == "/v1/events" }
            #expect(pages.allSatisfy { $0.parameters["created[gte]"] == String(since) })
            #expect(pages.compactMap { $0.parameters["starting_after"] }.prefix(2) == ["evt_bf_4", "evt_bf_2"])
            #expect(pages.allSatisfy { $0.headers["authorization"] == "Bearer \(Self.key)" })
        }
    }

    @Test("a wrong key fails with the status only, never the key; ingest down is reported per event")
    func failures() async throws {
        let server = Self.server()
        try await server.start()
        defer { server.stop() }
        var api = StripeAPIConfiguration(apiKey: "rk_test_wrong_key_123", feeStatePath: "/nonexistent")
        api.baseURL = server.url
        api.backoffMS = 10
        let bad = StripeBackfill(api: StripeAPI(configuration: api), ingestURL: "http://127.0.0.1:1", webhookSecret: TestIngest.stripeSecret)
        do {
            _ = try await bad.run(since: Int64(Date().timeIntervalSince1970) - 3600, dryRun: true)
            Issue.record("expected a failure")
        } catch let e as StripeAPIError {
            #expect(e.status == 401 && !e.message.contains("rk_test_wrong_key_123"), "\(e.message)")
        }
        let down = Self.backfill(server, ingestPort: 1)
        let r = try await down.run(since: Int64(Date().timeIntervalSince1970) - 3600, dryRun: false)
        #expect(r.failed == 5)
    }

    @Test("--since: durations and timestamps, at most 30 days back")
    func since() throws {
        let now = Date(timeIntervalSince1970: 1_764_700_000)
        #expect(try StripeBackfill.parseSince("6h", now: now) == 1_764_700_000 - 21_600)
        #expect(try StripeBackfill.parseSince("30d", now: now) == 1_764_700_000 - 30 * 86_400)
        #expect(try StripeBackfill.parseSince("2025-12-01T00:00:00Z", now: now) == 1_764_547_200)
        #expect(throws: StripeAPIError.self) { try StripeBackfill.parseSince("31d", now: now) }
        #expect(throws: StripeAPIError.self) { try StripeBackfill.parseSince("yesterday", now: now) }
    }
}
