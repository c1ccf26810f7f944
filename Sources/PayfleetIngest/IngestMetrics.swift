import Prometheus

/// Ingest's Prometheus metrics (`GET /metrics`).
public final class IngestMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let published: Counter
    let publishFailures: Counter
    let outboxPending: Gauge
    let outboxParked: Gauge
    let pruned: Counter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        published = registry.makeCounter(name: "payfleet_ingest_published_total", labels: [],
                                         help: "Outbox events published and confirmed by the broker")
        publishFailures = registry.makeCounter(name: "payfleet_ingest_publish_failures_total", labels: [],
                                               help: "Outbox publishes not confirmed (retried)")
        outboxPending = registry.makeGauge(name: "payfleet_ingest_outbox_pending", labels: [],
                                           help: "Accepted events not yet confirmed by the broker")
        outboxParked = registry.makeGauge(name: "payfleet_ingest_outbox_parked", labels: [],
                                          help: "Accepted events the broker refused repeatedly (waiting for their own retry)")
        pruned = registry.makeCounter(name: "payfleet_ingest_pruned_total", labels: [],
                                      help: "Sent outbox rows, records and idempotency keys removed after the retention")
    }

    func accepted(_ source: String, duplicate: Bool) {
        registry.makeCounter(
            name: "payfleet_ingest_events_total", labels: [("source", source), ("status", duplicate ? "duplicate" : "accepted")],
            help: "Events durably accepted, by source and status").increment()
    }

    func rejected(_ source: String, code: String) {
        registry.makeCounter(
            name: "payfleet_ingest_rejected_total", labels: [("source", source), ("code", code)],
            help: "Requests rejected, by source and error code").increment()
    }

    func unmapped(_ source: String, type: String) {
        registry.makeCounter(
            name: "payfleet_ingest_unmapped_total", labels: [("source", source), ("type", String(type.prefix(64)))],
            help: "Provider events recorded but not published (unknown type or not a canonical fact)").increment()
    }

    func panRedacted(_ source: String, field: String) {
        registry.makeCounter(
            name: "payfleet_pan_redacted_total", labels: [("source", source), ("field", field)],
            help: "Card numbers masked in provider webhooks before anything was kept").increment()
    }

    public func text() -> String { registry.emitToString() }
}
