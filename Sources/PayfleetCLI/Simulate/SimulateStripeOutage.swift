import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetIngest

/// `payfleet simulate --stripe-outage FROM:TO`: the Stripe webhooks among requests FROM up to
/// (not including) TO are not delivered, as if ingest had been down and Stripe had given up on
/// them; after the run the simulator serves every Stripe event of the run on a loopback Stripe
/// Events API (`GET /v1/events` with `created[gte]`, `limit`, `starting_after` / `has_more`,
/// a one-off bearer key checked) and runs `payfleet backfill stripe`'s `StripeBackfill` against
/// it into ingest, so an operator sees the backfill recover what was missed, nothing twice,
/// and the checks agree.
struct SimStripeOutage {
    let range: Range<Int>

    /// `FROM:TO`, 0 ≤ FROM < TO.
    static func parse(_ text: String) -> Range<Int>? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]), a >= 0, a < b else { return nil }
        return a..<b
    }

    /// The Stripe event id of a Stripe webhook request (nil for other routes).
    static func eventID(_ d: SimDelivery) -> (id: String, object: [String: Any])? {
        guard d.route == .stripe, let o = (try? JSONSerialization.jsonObject(with: Data(d.body))) as? [String: Any],
            let id = o["id"] as? String
        else { return nil }
        return (id, o)
    }

    /// Whether request `i` is withheld.
    func withholds(_ i: Int, _ plan: SimPlan) -> Bool { range.contains(i) && plan.deliveries[i].route == .stripe }

    struct Outcome {
        var withheld = 0
        var listed = 0
        var pages = 0
        var recovered = 0
        var duplicate = 0
        var failed = 0
        /// Plan indices of the fed events' first requests, in the order fed, that ingest has now.
        var fed: [Int] = []
        var line: String {
            "stripe outage: \(withheld) Stripe webhooks withheld; backfill: \(listed) events listed (\(pages) pages), "
                + "\(recovered) recovered, \(duplicate) already known, \(failed) failed"
        }
        var json: [String: Any] {
            ["withheld": withheld, "listed": listed, "pages": pages, "recovered": recovered, "duplicate": duplicate, "failed": failed]
        }
    }

    /// Serves the run's Stripe events and backfills them into ingest.
    func backfill(_ plan: SimPlan, channels: SimChannels, ingestURL: String) async throws -> Outcome {
        var outcome = Outcome()
        outcome.withheld = plan.deliveries.indices.filter { withholds($0, plan) }.count
        var events: [[String: Any]] = []
        var firstIndex: [String: Int] = [:]
        for (i, d) in plan.deliveries.enumerated() {
            guard let (id, o) = Self.eventID(d), firstIndex[id] == nil else { continue }
            firstIndex[id] = i
            events.append(o)
        }
        guard !events.isEmpty, let secret = channels.stripeSecret else { return outcome }
        let key = "rk_test_sim\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16))"
        let server = SimStripeEventsServer(events: events, key: key)
        let url = try await server.start()
        defer { server.stop() }
        var api = StripeAPIConfiguration(apiKey: key, feeStatePath: "/nonexistent")
        api.baseURL = url
        api.backoffMS = 50
        let since = events.compactMap { simInt64($0["created"]) }.min() ?? 0
        let b = StripeBackfill(api: StripeAPI(configuration: api), ingestURL: ingestURL, webhookSecret: secret)
        let summary = try await b.run(since: since, dryRun: false)
        outcome.listed = summary.items.count
        outcome.pages = summary.pages
        outcome.recovered = summary.count("accepted")
        outcome.duplicate = summary.count("duplicate")
        outcome.failed = summary.failed
        for item in summary.items where item.outcome == "accepted" || item.outcome == "duplicate" {
            if let i = firstIndex[item.id] { outcome.fed.append(i) }
        }
        return outcome
    }
}

/// The loopback Stripe Events API the simulator serves its run's events on.
final class SimStripeEventsServer: @unchecked Sendable {
    let newestFirst: [[String: Any]]
    let key: String
    private var task: Task<Void, Error>?

    init(events: [[String: Any]], key: String) {
        let indexed: [(offset: Int, created: Int64)] = events.indices.map { ($0, simInt64(events[$0]["created"]) ?? 0) }
        let order = indexed.sorted { a, b in a.created != b.created ? a.created > b.created : a.offset > b.offset }
        self.newestFirst = order.map { events[$0.offset] }
        self.key = key
    }

    func page(_ query: [String: String], authorization: String?) -> (Int, Any) {
        guard authorization == "Bearer \(key)" else { return (401, ["error": ["type": "invalid_request_error"]]) }
        let gte = Int64(query["created[gte]"] ?? "") ?? 0
        let limit = max(1, min(Int(query["limit"] ?? "") ?? 10, 100))
        var rest = newestFirst.filter { (simInt64($0["created"]) ?? 0) >= gte }
        if let after = query["starting_after"] {
            guard let at = rest.firstIndex(where: { $0["id"] as? String == after }) else {
                return (400, ["error": ["type": "invalid_request_error", "param": "starting_after"]])
            }
            rest = Array(rest[(at + 1)...])
        }
        let data = Array(rest.prefix(limit))
        return (200, ["object": "list", "url": "/v1/events", "data": data, "has_more": rest.count > data.count])
    }

    func start() async throws -> String {
        let router = Router()
        router.get("/v1/events") { [self] req, _ -> Response in
            var q: [String: String] = [:]
            for pair in (req.uri.query ?? "").split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if kv.count == 2 { q[kv[0]] = kv[1] }
            }
            let (status, body) = page(q, authorization: req.headers[.authorization])
            let data = (try? JSONSerialization.data(withJSONObject: body, options: [.withoutEscapingSlashes])) ?? Data()
            var h = HTTPFields()
            h[.contentType] = "application/json"
            return Response(status: .init(code: status), headers: h, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        let bound = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "simulate-stripe-events")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { ch in
                bound.continuation.yield(ch.localAddress?.port ?? 0)
                bound.continuation.finish()
            }, logger: logger)
        task = Task { try await app.runService() }
        var port = 0
        for await p in bound.stream { port = p }
        return "http://127.0.0.1:\(port)"
    }

    func stop() { task?.cancel() }
}

/// A JSON integer as JSONSerialization gives it.
func simInt64(_ v: Any?) -> Int64? { (v as? NSNumber)?.int64Value }

extension SimPlan {
    /// The unique facts reported by the requests at `order` (plan indices, in the order they
    /// reached ingest): a fact as the first of its requests in that order reports it.
    func deliveredFacts(order: [Int]) -> [PaymentEvent] {
        var seen = Set<String>()
        var out: [PaymentEvent] = []
        for i in order {
            let d = deliveries[i]
            for (k, id) in d.factIDs.enumerated() {
                guard seen.insert(id).inserted, let f = k == 0 ? (d.reported ?? facts[id]) : facts[id] else { continue }
                out.append(f)
            }
        }
        return out
    }
}
