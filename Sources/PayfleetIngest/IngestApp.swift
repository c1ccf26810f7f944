import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetTelemetry
import PayfleetWorker
import ServiceLifecycle

/// Builds the ingest HTTP application: the routes of DESIGN §3 and, when a broker is
/// configured, the outbox relay as a service of the application.
public func buildApplication(
    configuration: IngestConfiguration, logger: Logger, onBound: (@Sendable (Int) -> Void)? = nil
) async throws -> some ApplicationProtocol {
    let outbox = try await Outbox(path: configuration.statePath, logger: logger)
    let metrics = IngestMetrics()
    let relay = configuration.amqp.map {
        OutboxRelay(outbox: outbox, amqp: $0, batchSize: configuration.relayBatch, metrics: metrics, logger: logger)
    }
    var handlers = IngestRoutes(configuration: configuration, outbox: outbox, metrics: metrics, relay: relay, logger: logger)
    // Stripe fees off the request path (StripeFees.swift): the route only queues the id.
    var feeFetcher: StripeFeeFetcher?
    if let api = configuration.stripeAPI {
        let queue = try await StripeFeeQueue(path: api.feeStatePath, logger: logger)
        handlers.stripeFees = queue
        feeFetcher = StripeFeeFetcher(queue: queue, api: StripeAPI(configuration: api), outbox: outbox, metrics: metrics, logger: logger)
    }
    let h = handlers
    let router = Router()
    if PayfleetTracing.isEnabled { router.add(middleware: IngestTracingMiddleware()) }
    router.post("/webhooks/stripe") { req, _ in await h.handle("stripe", req) { try await h.stripe(req, $0) } }
    router.post("/webhooks/adyen") { req, _ in await h.handle("adyen", req) { try await h.adyen(req, $0) } }
    router.post("/webhooks/standard/:source") { req, ctx -> Response in
        let source = ctx.parameters.get("source") ?? ""
        // Only configured sources become metric labels: a label per unauthenticated path
        // would let anyone grow ingest's memory.
        let label = configuration.standardWebhookSecrets[source] != nil ? "standard:\(source)" : "standard:unknown"
        return await h.handle(label, req) { try await h.standard(source, req, $0) }
    }
    router.post("/v1/events") { req, _ in await h.handle("api", req) { try await h.api(req, $0) } }
    router.get("/healthz") { _, _ in "ok\n" }
    router.get("/readyz") { _, _ in await h.readiness() }
    router.get("/metrics") { _, _ -> Response in
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
            body: .init(byteBuffer: ByteBuffer(string: metrics.text())))
    }
    return Application(
        router: router,
        server: .http1(configuration: .init(idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port)),
        services: [OutboxPruner(outbox: outbox, configuration: configuration, metrics: metrics, logger: logger) as any Service]
            + (relay.map { [$0 as any Service] } ?? []) + (feeFetcher.map { [$0 as any Service] } ?? []),
        onServerRunning: { channel in onBound?(channel.localAddress?.port ?? 0) }, logger: logger)
}

extension HTTPField.Name {
    static let stripeSignature = HTTPField.Name("Stripe-Signature")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let webhookID = HTTPField.Name("webhook-id")!
    static let webhookTimestamp = HTTPField.Name("webhook-timestamp")!
    static let webhookSignature = HTTPField.Name("webhook-signature")!
    static let traceparent = HTTPField.Name("traceparent")!
}
