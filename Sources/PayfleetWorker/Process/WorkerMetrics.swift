import Prometheus

/// The runtime's Prometheus metrics (exposed on the admin listener's `/metrics`).
public final class WorkerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let deliveries: Counter
    let processed: Counter
    let duplicates: Counter
    let retried: Counter
    let deadLettered: Counter
    let requeued: Counter
    let effectsPerformed: Counter
    let effectsFailed: Counter
    let effectsOutcomeUnknown: Counter
    let handlerLatency: DurationHistogram
    let batchSize: ValueHistogram
    /// 1 while both broker connections and the database are up (what `/readyz` answers).
    public let ready: Gauge
    /// 0 while the state file refuses writes (disk full, read-only): the worker holds its batch.
    public let storeWritable: Gauge
    /// `payfleet_event_lag_seconds` (EventLag.swift).
    public let eventLag: EventLag

    public init(worker: String, partition: Int, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let l = [("worker", worker), ("partition", String(partition))]
        deliveries = registry.makeCounter(name: "payfleet_deliveries_total", labels: l,
                                          help: "Messages delivered by the broker")
        processed = registry.makeCounter(name: "payfleet_processed_total", labels: l,
                                         help: "Events applied and committed")
        duplicates = registry.makeCounter(name: "payfleet_duplicates_skipped_total", labels: l,
                                          help: "Deliveries skipped because the event id was already processed")
        retried = registry.makeCounter(name: "payfleet_retried_total", labels: l,
                                       help: "Events republished to a retry tier")
        deadLettered = registry.makeCounter(name: "payfleet_dead_lettered_total", labels: l,
                                            help: "Events republished to the dead-letter queue")
        requeued = registry.makeCounter(name: "payfleet_requeued_total", labels: l,
                                        help: "Deliveries returned to the queue because a republish failed")
        effectsPerformed = registry.makeCounter(name: "payfleet_effects_performed_total", labels: l,
                                                help: "External effects performed successfully")
        effectsFailed = registry.makeCounter(name: "payfleet_effects_failed_total", labels: l,
                                             help: "External effect attempts that failed")
        effectsOutcomeUnknown = registry.makeCounter(
            name: "payfleet_effects_outcome_unknown_total", labels: l,
            help: "Effects found with an intent but no outcome (crash mid-call)")
        handlerLatency = registry.makeDurationHistogram(
            name: "payfleet_batch_duration_seconds", labels: l,
            buckets: [.microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                      .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5)],
            help: "Time to apply and commit one batch")
        batchSize = registry.makeValueHistogram(
            name: "payfleet_batch_size", labels: l, buckets: [1, 2, 5, 10, 25, 50, 100, 200, 500, 1000],
            help: "Deliveries per transaction")
        ready = registry.makeGauge(
            name: "payfleet_worker_ready", labels: l, help: "1 when connected to the broker with the database open")
        storeWritable = registry.makeGauge(
            name: "payfleet_worker_store_writable", labels: l,
            help: "0 while the state file refuses writes (disk full, read-only): consumption is paused")
        storeWritable.set(Double(1))
        eventLag = EventLag(worker: worker, partition: partition, registry: registry)
    }

    public func text() -> String { registry.emitToString() }
}
