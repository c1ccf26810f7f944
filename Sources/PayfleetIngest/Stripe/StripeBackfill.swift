import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore

/// `payfleet backfill stripe`: events Stripe has but ingest may have missed (a webhook Stripe gave
/// up on, an outage longer than Stripe's retries), listed from the Events API and fed to ingest.
///
/// Each event is POSTed to ingest's own `/webhooks/stripe` route, signed with a configured
/// webhook secret, rather than mapped and written to the outbox by the CLI: the event takes
/// exactly the path a webhook takes (signature, PAN masking, mapping, the outbox's dedupe by
/// fact, the fee queue, group commit and fsync before the answer), the CLI needs no write access
/// to ingest's state file, and ingest's answer says whether the event was new (`accepted`) or
/// already known (`duplicate`), so a backfill is safe to run as often as wanted: nothing is
/// applied twice. Ingest must be running.
public struct StripeBackfill: Sendable {
    /// One listed event and what became of it.
    public struct Item: Sendable, Equatable {
        public var id: String
        public var type: String
        public var created: Int64
        /// `accepted`, `duplicate`, `would feed` (dry run) or `failed: …`.
        public var outcome: String
    }

    public struct Summary: Sendable, Equatable {
        public var items: [Item] = []
        public var pages = 0
        public func count(_ outcome: String) -> Int { items.filter { $0.outcome == outcome }.count }
        public var failed: Int { items.filter { $0.outcome.hasPrefix("failed") }.count }
    }

    /// Stripe keeps events for 30 days.
    public static let maxAgeSeconds: Int64 = 30 * 86_400

    public let api: StripeAPI
    public let ingestURL: String
    public let webhookSecret: String
    public var pageSize = 100
    public var undeliveredOnly = false
    let session: URLSession

    public init(api: StripeAPI, ingestURL: String, webhookSecret: String) {
        self.api = api
        self.ingestURL = ingestURL.hasSuffix("/") ? String(ingestURL.dropLast()) : ingestURL
        self.webhookSecret = webhookSecret
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = 30
        session = URLSession(configuration: c)
    }

    /// `--since`: a duration back from `now` (`90m`, `6h`, `3d`) or an RFC 3339 timestamp; never
    /// more than 30 days back.
    public static func parseSince(_ text: String, now: Date = Date()) throws -> Int64 {
        let nowS = Int64(now.timeIntervalSince1970)
        var since: Int64?
        if let d = RFC3339.parse(text) {
            since = Int64(d.timeIntervalSince1970)
        } else if let unit = text.last, let n = Int64(text.dropLast()), n >= 0 {
            let mult: Int64? = ["s": 1, "m": 60, "h": 3600, "d": 86_400][String(unit)]
            if let mult { since = nowS - n * mult }
        }
        guard let since else {
            throw StripeAPIError(status: nil, transient: false, message: "--since '\(text)': a duration (90m, 6h, 3d) or an RFC 3339 timestamp")
        }
        guard since >= nowS - maxAgeSeconds else {
            throw StripeAPIError(status: nil, transient: false, message: "--since '\(text)': Stripe keeps events for 30 days only")
        }
        return since
    }

    /// Every event created at or after `since` (oldest first), following `has_more` /
    /// `starting_after`.
    public func list(since: Int64) async throws -> (events: [[String: Any]], pages: Int) {
        var all: [[String: Any]] = []
        var after: String?
        var pages = 0
        while true {
            var query: [(String, String)] = [("created[gte]", String(since)), ("limit", String(pageSize))]
            if undeliveredOnly { query.append(("delivery_success", "false")) }
            if let after { query.append(("starting_after", after)) }
            let page = try await api.getRetrying("/v1/events", query: query)
            pages += 1
            let data = page["data"] as? [[String: Any]] ?? []
            all += data
            guard page["has_more"] as? Bool == true, let last = data.last?["id"] as? String else { break }
            after = last
        }
        // Stripe lists newest first; feed in the order they happened.
        let ordered = all.enumerated().sorted { a, b in
            let ca = JSONValue.int64(a.element["created"]) ?? 0
            let cb = JSONValue.int64(b.element["created"]) ?? 0
            return ca != cb ? ca < cb : a.offset > b.offset
        }.map(\.element)
        return (ordered, pages)
    }

    /// Lists and (unless `dryRun`) feeds every event to ingest; a failed feed is reported, not fatal.
    public func run(since: Int64, dryRun: Bool) async throws -> Summary {
        let (events, pages) = try await list(since: since)
        var summary = Summary(pages: pages)
        var seen: Set<String> = []
        for e in events {
            let id = e["id"] as? String ?? ""
            guard seen.insert(id).inserted else { continue }
            var item = Item(id: id, type: e["type"] as? String ?? "", created: JSONValue.int64(e["created"]) ?? 0, outcome: "would feed")
            if !dryRun { item.outcome = await feed(e) }
            summary.items.append(item)
        }
        return summary
    }

    /// POSTs one event to ingest's Stripe route, signed now; ingest's `status`, or `failed: …`.
    func feed(_ event: [String: Any]) async -> String {
        guard let body = try? JSONSerialization.data(withJSONObject: event, options: [.withoutEscapingSlashes]),
            let url = URL(string: ingestURL + "/webhooks/stripe")
        else { return "failed: not encodable" }
        for attempt in 0..<4 {
            var r = URLRequest(url: url)
            r.httpMethod = "POST"
            r.httpBody = body
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
            r.setValue(
                StripeSignature.sign(payload: Array(body), secret: webhookSecret, timestamp: Int64(Date().timeIntervalSince1970)),
                forHTTPHeaderField: "Stripe-Signature")
            do {
                let (data, response) = try await session.data(for: r)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
                if status == 202, let s = o?["status"] as? String { return s }
                if status == 503 || status >= 500, attempt < 3 {
                    try? await Task.sleep(for: .milliseconds(200 << attempt))
                    continue
                }
                let code = (o?["error"] as? [String: Any])?["code"] as? String ?? ""
                return "failed: HTTP \(status)" + (code.isEmpty ? "" : " \(code)")
            } catch {
                if attempt < 3 {
                    try? await Task.sleep(for: .milliseconds(200 << attempt))
                    continue
                }
                return "failed: ingest unreachable (\((error as? URLError).map { "URLError \($0.code.rawValue)" } ?? "\(type(of: error))"))"
            }
        }
        return "failed: ingest unavailable"
    }
}
