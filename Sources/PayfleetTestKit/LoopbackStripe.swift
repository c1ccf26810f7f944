import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore

/// A real HTTP server on loopback standing in for Stripe's REST API: it records every request
/// (method, path, query, headers) and answers what the test scripts — by default 404.
/// `LoopbackStripe.eventsAPI` scripts Stripe's Events API over a list of events.
public final class LoopbackStripe: @unchecked Sendable {
    public struct Recorded: Sendable {
        public var method: String
        public var path: String
        public var query: String
        public var headers: [String: String]
        /// Decoded query parameters (`created[gte]` → value).
        public var parameters: [String: String] {
            var out: [String: String] = [:]
            for pair in query.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if kv.count == 2 { out[kv[0]] = kv[1] }
            }
            return out
        }
    }
    public struct Answer: Sendable {
        public var status: Int
        public var headers: [String: String] = [:]
        public var body: String = "{}"
        public init(status: Int, headers: [String: String] = [:], body: String = "{}") {
            self.status = status
            self.headers = headers
            self.body = body
        }
        public static func json(_ o: Any, status: Int = 200) -> Answer {
            // A script's answer is test data; one that cannot be encoded answers 500, not a trap.
            guard let data = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) else {
                return Answer(status: 500, body: #"{"error":"the test's answer is not JSON"}"#)
            }
            return Answer(status: status, body: String(decoding: data, as: UTF8.self))
        }
    }
    public typealias Script = @Sendable (_ request: Recorded, _ index: Int) -> Answer?

    private struct State {
        var recorded: [Recorded] = []
        var script: Script?
    }
    private let state = Locked(State())
    private var task: Task<Void, Error>?
    public private(set) var port = 0

    public var requests: [Recorded] { state.current.recorded }
    public var url: String { "http://127.0.0.1:\(port)" }

    public init(_ script: Script? = nil) { state.withLock { $0.script = script } }

    public func start() async throws {
        let router = Router()
        let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { [self] req, _ in
            var headers: [String: String] = [:]
            for f in req.headers { headers[f.name.canonicalName.lowercased()] = f.value }
            let r = Recorded(method: req.method.rawValue, path: req.uri.path, query: req.uri.query ?? "", headers: headers)
            let answer: Answer = state.withLock { st in
                let a = st.script?(r, st.recorded.count) ?? Answer(status: 404, body: #"{"error": {"type": "invalid_request_error", "code": "resource_missing"}}"#)
                st.recorded.append(r)
                return a
            }
            var h = HTTPFields()
            h[.contentType] = "application/json"
            for (k, v) in answer.headers where k.lowercased() == "retry-after" { h[.retryAfter] = v }
            return Response(status: .init(code: answer.status), headers: h, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
        }
        router.on("**", method: .get, use: handler)
        (port, task) = await LoopbackServer.start(router, label: "loopback-stripe")
    }

    public func stop() { task?.cancel() }
}

extension LoopbackStripe {
    /// Stripe's Events API (`GET /v1/events`) over `events` as Stripe documents it: newest
    /// first (`created` descending; among equal `created`, later in `events` first),
    /// `created[gte]`, `limit` (default 10, at most `maxPage`), `starting_after` and `has_more`;
    /// `delivery_success=false` keeps the ids in `undelivered` (when given). Every request must
    /// carry `Authorization: Bearer <key>` (else 401); other paths answer `other` (default 404).
    public static func eventsAPI(
        key: String, events: @escaping @Sendable () -> [[String: Any]], undelivered: (@Sendable () -> Set<String>)? = nil,
        maxPage: Int = 100, other: Script? = nil
    ) -> Script {
        { req, i in
            guard req.headers["authorization"] == "Bearer \(key)" else {
                return Answer(status: 401, body: #"{"error": {"type": "invalid_request_error", "code": "api_key_invalid"}}"#)
            }
            guard req.path == "/v1/events" else { return other?(req, i) }
            func created(_ e: [String: Any]) -> Int64 { (e["created"] as? NSNumber)?.int64Value ?? 0 }
            let newestFirst = events().enumerated().sorted { a, b in
                created(a.element) != created(b.element) ? created(a.element) > created(b.element) : a.offset > b.offset
            }.map(\.element)
            let p = req.parameters
            let gte = Int64(p["created[gte]"] ?? "") ?? 0
            let limit = max(1, min(Int(p["limit"] ?? "") ?? 10, maxPage))
            var rest = newestFirst.filter { created($0) >= gte }
            if p["delivery_success"] == "false", let undelivered {
                let ids = undelivered()
                rest = rest.filter { ids.contains($0["id"] as? String ?? "") }
            }
            if let after = p["starting_after"] {
                guard let at = rest.firstIndex(where: { $0["id"] as? String == after }) else {
                    return Answer(status: 400, body: #"{"error": {"type": "invalid_request_error", "param": "starting_after"}}"#)
                }
                rest = Array(rest[(at + 1)...])
            }
            let page = Array(rest.prefix(limit))
            return .json(["object": "list", "url": "/v1/events", "data": page, "has_more": rest.count > page.count])
        }
    }
}
