import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetTestKit

/// A real HTTP server on loopback standing in for a CRM: it records every request (method,
/// path, query, headers, body) and answers what the test scripts — by default 200 `{}`.
final class LoopbackCRM: @unchecked Sendable {
    struct Recorded: Sendable {
        var method: String
        var path: String
        var query: String
        var headers: [String: String]
        var body: Data
        var status: Int
        var time = Date()
        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: body) as? [String: Any] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }
    struct Answer: Sendable {
        var status: Int
        var headers: [String: String] = [:]
        var body: String = "{}"
    }
    /// Decides the answer to a request (nil: 200 `{}`); runs under the recorder's lock.
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

    func setScript(_ s: Script?) { state.withLock { $0.script = s } }

    func start() async throws {
        let router = Router()
        let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { [self] req, _ in
            let body = try await req.body.collect(upTo: 1 << 20)
            var headers: [String: String] = [:]
            for f in req.headers { headers[f.name.canonicalName.lowercased()] = f.value }
            var r = Recorded(
                method: req.method.rawValue, path: req.uri.path, query: req.uri.query ?? "", headers: headers,
                body: Data(buffer: body), status: 200)
            let answer: Answer = state.withLock { st in
                let a = st.script?(r, st.recorded.count) ?? Answer(status: 200)
                r.status = a.status
                st.recorded.append(r)
                return a
            }
            var h = HTTPFields()
            h[.contentType] = "application/json"
            for (k, v) in answer.headers where k.lowercased() == "retry-after" { h[.retryAfter] = v }
            return Response(
                status: .init(code: answer.status), headers: h, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
        }
        for m in [HTTPRequest.Method.post, .put, .patch, .get] { router.on("**", method: m, use: handler) }
        (port, task) = await LoopbackServer.start(router, label: "loopback-crm")
    }

    func stop() {
        task?.cancel()
    }
}
