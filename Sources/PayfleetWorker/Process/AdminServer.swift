import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The per-process admin listener: `/healthz` (process alive), `/readyz` (broker connected,
/// database open; 503 with the reason otherwise; every detail redacted by `Redaction`),
/// `/metrics` (Prometheus text).
public struct AdminServer: Service {
    public typealias ReadinessCheck = @Sendable () async -> (ready: Bool, detail: [String: String])

    let host: String
    let port: Int
    let readiness: ReadinessCheck
    let metrics: @Sendable () -> String
    let logger: Logger
    let onBound: (@Sendable (Int) -> Void)?
    /// Extra routes a worker adds (e.g. crm-sync's `GET /customers/{id}`).
    let routes: (@Sendable (Router<BasicRequestContext>) -> Void)?

    public init(
        host: String, port: Int, logger: Logger, readiness: @escaping ReadinessCheck,
        metrics: @escaping @Sendable () -> String, onBound: (@Sendable (Int) -> Void)? = nil,
        routes: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil
    ) {
        self.routes = routes
        self.host = host
        self.port = port
        self.logger = logger
        self.readiness = readiness
        self.metrics = metrics
        self.onBound = onBound
    }

    public func run() async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ -> Response in
            let (ready, detail) = await readiness()
            var parts = ["\"ready\": \(ready)"]
            for (k, raw) in detail.sorted(by: { $0.key < $1.key }) {
                // Errors quote what a CRM, SMTP server or broker answered: no personal data or
                // credentials on the admin listener (DESIGN §1).
                let v = Redaction.redact(raw).unicodeScalars.map { $0.value < 32 ? " " : String($0) }.joined()
                parts.append("\"\(k)\": \"\(v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\"")
            }
            let body = "{" + parts.joined(separator: ", ") + "}\n"
            return Response(
                status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics())))
        }
        routes?(router)
        let onBound = self.onBound
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in onBound?(channel.localAddress?.port ?? 0) }, logger: logger)
        // `run()`, not `runService()`: the latter installs its own SIGTERM handler, and when it
        // wins the race with the worker's service group the listener ends "unexpectedly" (the
        // group then cancels the runtime instead of draining it, and the process exits 1).
        // Under `run()` the listener stops when the enclosing group shuts it down gracefully.
        try await app.run()
    }
}
