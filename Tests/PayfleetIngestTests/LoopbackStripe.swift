import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore

/// A real HTTP server on loopback standing in for Stripe's REST API: it records every request
/// (method, path, query, headers) and answers what the test scripts — by default 404.
final class LoopbackStripe: @unchecked Sendable {
    struct Recorded: Sendable {
        var method: String
        var path: String
        var query: String
        var headers: [String: String]
        /// Decoded query parameters (`created[gte]` → value).
        var parameters: [String: String] {
            var out: [String: String] = [:]
            for pair in query.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if kv.count == 2 { out[kv[0]] = kv[1] }
            }
            return out
        }
    }
    struct Answer: Sendable {
        var status: Int
        var headers: [String: String] = [:]
        var body: String = "{}"
        static func json(_ o: Any, status: Int = 200) -> Answer {
            Answer(status: status, body: String(decoding: try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
        }
    }
    typealias Script = @Sendable (_ request: Recorded, _ index: Int) -> Answer?

    private struct State {
        var recorded: [Recorded] = []
        var script: Script?
    }
    private let state = Locked(State())
    private var task: Task<Void, Error>?
    private(set) var port = 0

    var requests: [Recorded] { state.current.recorded }
    var url: String { "http://127.0.0.1:\(port)" }

    init(_ script: Script? = nil) { state.withLock { $0.script = script } }

    func start() async throws {
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
        let bound = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "loopback-stripe")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { ch in
                bound.continuation.yield(ch.localAddress?.port ?? 0)
                bound.continuation.finish()
            }, logger: logger)
        task = Task { try await app.runService() }
        for await p in bound.stream { port = p }
    }

    func stop() { task?.cancel() }
}
