import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTelemetry
import ServiceLifecycle

/// What every worker is (DESIGN §5): consume a batch → `BatchApplier` (one transaction, skip ids
/// already processed, apply each event in a savepoint, journal effect intents, commit) → effects
/// (`+Effects`) → failures to a retry tier or the DLQ (`+Failures`) → ack (one multiple-ack per
/// batch where possible). Transient failures are republished, with confirm, to the next retry
/// tier and then acked; after the last tier, and for permanent failures at once, to the
/// dead-letter queue. A store that refuses writes holds the batch (not ready) until it takes it.
public final class WorkerRuntime<Handler: WorkerHandler>: Service, @unchecked Sendable {
    public let configuration: RuntimeConfiguration
    public let handler: Handler
    public let metrics: WorkerMetrics
    public let store: Store
    /// The batch step (decode, dedupe, savepoint apply, effect intent, outcome) on `store`.
    public let applier: BatchApplier<Handler>
    let logger: Logger
    let publisher: AMQPPublisher
    let consumer: AMQPConsumer
    let lastErrorText = Locked<String?>(nil)
    /// Set while the state file refuses writes: not ready, the batch in hand is held (neither
    /// acked nor requeued, so no delivery count grows) and retried until a write succeeds.
    let storeFailure = Locked<String?>(nil)
    /// The delivery tag after the last one acked, per connection generation: a multiple-ack is
    /// only sent when a batch starts exactly there, so nothing unseen is ever acknowledged.
    var nextExpectedTag: (generation: Int, tag: UInt64) = (0, 1)
    let stopped = Locked(false)
    /// When the batch in hand was handed over (nil while the loop waits for deliveries): the
    /// systemd watchdog is fed only while this is recent, so a stuck batch gets the process restarted.
    let batchStartedAt = Locked<ContinuousClock.Instant?>(nil)
    /// Batches handed over and not yet acked or requeued (two at most; under `batchStartedAt`'s lock).
    var batchesInHand = 0

    public init(configuration: RuntimeConfiguration, handler: Handler, logger: Logger) async throws {
        self.configuration = configuration
        self.handler = handler
        var logger = logger
        logger[metadataKey: LogKey.worker] = "\(configuration.worker)"
        if configuration.topology.isPartitioned { logger[metadataKey: LogKey.partition] = "\(configuration.partition)" }
        self.logger = logger
        self.metrics = WorkerMetrics(worker: configuration.worker, partition: configuration.partition)
        self.store = try await Store(
            path: configuration.statePath, migrations: BatchApplier<Handler>.migrations + handler.migrations, logger: logger)
        self.applier = BatchApplier(handler: handler, store: store)
        try await handler.attach(store: store, registry: metrics.registry)
        let topology = configuration.topology
        let declare: @Sendable (AMQPDeclarer) throws -> Void = { d in try d.declare(worker: topology) }
        self.publisher = AMQPPublisher(
            configuration: configuration.amqp, name: "\(configuration.worker)-pub", logger: logger, onConnect: declare)
        self.consumer = AMQPConsumer(
            configuration: configuration.amqp, queue: topology.queue(partition: configuration.partition),
            // Three batches in flight: one finishing, one being applied, the next one arriving.
            prefetch: configuration.batchSize * 3, name: configuration.worker, logger: logger, onDemand: true,
            maxBatch: configuration.batchSize, onConnect: declare)
    }

    /// Ready when both broker connections are up and the database answers.
    public func readiness() async -> (ready: Bool, detail: [String: String]) {
        var detail: [String: String] = [:]
        let pub = publisher.isConnected
        let con = consumer.isConnected
        var db = false
        do { db = try await store.withConnection { c in try c.queryOne("SELECT 1") != nil } } catch {
            detail["database_error"] = "\(error)"
        }
        detail["broker_publisher"] = pub ? "connected" : (publisher.lastError ?? "disconnected")
        detail["broker_consumer"] = con ? "connected" : (consumer.lastError ?? "disconnected")
        detail["database"] = db ? "open" : "unavailable"
        if let e = lastErrorText.current { detail["last_error"] = e }
        let writable = storeFailure.current == nil
        if let f = storeFailure.current { detail["database"] = "not writable: \(f)" }
        return (pub && con && db && writable && !stopped.current, detail)
    }

    public var lastError: String? { lastErrorText.current }

    /// False when a batch has been in hand for longer than `stuckAfter` (a hung effect or store).
    public func isLive(stuckAfter: Duration) -> Bool {
        guard let started = batchStartedAt.current else { return true }
        return ContinuousClock.now - started < stuckAfter
    }

    public func run() async throws {
        let retention = Double(configuration.processedRetentionMS) / 1000
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                // Prune processed ids in the background, hourly.
                while !Task.isCancelled {
                    do {
                        let n = try await store.pruneProcessed(olderThan: retention)
                        let m = try await EffectJournal.prune(olderThan: retention, store: store)
                        if n + m > 0 { logger.info("pruned processed ids", metadata: [LogKey.storePruned: "\(n + m)"]) }
                    } catch {
                        logger.warning("pruning failed", metadata: [LogKey.storeError: "\(error)"])
                    }
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
            group.addTask { [self] in
                // The readiness gauge, for alerting on a worker that runs but cannot work.
                while !Task.isCancelled {
                    let ok = await readiness().ready
                    metrics.ready.set(Double(ok ? 1 : 0))
                    metrics.eventLag.refresh()
                    try? await Task.sleep(for: .seconds(5))
                }
            }
            if let interval = SystemdNotify.watchdogInterval() {
                group.addTask { [self] in
                    // WATCHDOG=1 at half the interval systemd set, while the consume loop is alive.
                    while !Task.isCancelled {
                        if isLive(stuckAfter: interval) { SystemdNotify.send("WATCHDOG=1") }
                        try? await Task.sleep(for: interval / 2)
                    }
                }
            }
            try await withGracefulShutdownHandler {
                try await consumeLoop()
            } onGracefulShutdown: { [self] in
                SystemdNotify.send("STOPPING=1")
                logger.info("graceful shutdown: stop consuming, finish in-flight work")
                stopped.withLock { $0 = true }
                consumer.stopConsuming()
            }
            group.cancelAll()
        }
        consumer.shutdown()
        publisher.close()
        logger.info("worker stopped")
    }

    /// Two batches in hand at most: batch N+1 is decoded and applied (its transaction committed)
    /// while batch N's effects, failures and acks run. Finishes stay in delivery order, one at a
    /// time, so no two batches' effects overlap and acks go out in order; a batch holding an
    /// event of the batch still finishing waits for that finish before it is applied (its
    /// journal would otherwise read an effect in flight as one whose outcome is unknown), and a
    /// batch after one with failures to republish waits too (an event that kills the process in
    /// its apply must not take the earlier failures' acks with it: they would be republished twice).
    private func consumeLoop() async throws {
        consumer.requestDeliveries()
        var finishing: Finishing? = nil
        for await event in consumer.events {
            switch event {
            case .deliveries(let batch):
                inHand(+1)
                let prepared = await prepare(batch, after: finishing)
                await finishing?.task.value
                finishing = nil
                if let prepared {
                    finishing = Finishing(
                        task: Task { [self] in await finish(prepared); inHand(-1) }, ids: prepared.ids,
                        failed: prepared.items.contains { if case .failed = $0.outcome { true } else { false } })
                } else {
                    inHand(-1)
                }
                consumer.requestDeliveries()
            case .connected(let generation):
                consumer.requestDeliveries()
                logger.info("consumer connected", metadata: [LogKey.amqpGeneration: "\(generation)"])
            case .disconnected(let error):
                lastErrorText.withLock { $0 = error.description }
            case .stopped:
                await finishing?.task.value
                return
            }
        }
        await finishing?.task.value
    }

    /// Counts the batches in hand; `batchStartedAt` is when the last one was handed over, nil
    /// once none is (the watchdog then has nothing to time).
    private func inHand(_ delta: Int) {
        batchStartedAt.withLock { started in
            batchesInHand += delta
            if delta > 0 { started = .now } else if batchesInHand == 0 { started = nil }
        }
    }

    // MARK: Batch processing

    typealias Outcome = BatchApplier<Handler>.Outcome

    struct Item {
        let delivery: AMQPDelivery
        var event: PaymentEvent?
        var outcome: Outcome
        var ack = true
        /// The delivery's `process` span (nil unless tracing is on).
        var span: TraceSpan? = nil
    }

    /// The batch whose effects, failures and acks are running.
    struct Finishing {
        let task: Task<Void, Never>
        /// The ids of its decoded events.
        let ids: Set<String>
        /// Some of its events failed to decode or apply: republished before its ack.
        let failed: Bool
    }

    /// A batch decoded and applied (its transaction committed), its effects and acks to come.
    struct Prepared {
        var items: [Item]
        let started: ContinuousClock.Instant
        let tracing: Bool
        /// The ids of its decoded events.
        var ids: Set<String> { Set(items.compactMap { $0.event?.id }) }
    }

    /// Applies one batch of deliveries; returns once every delivery was acked or requeued.
    public func process(_ batch: [AMQPDelivery]) async {
        if let prepared = await prepare(batch, after: nil) { await finish(prepared) }
    }

    /// Decodes and applies a batch (step 1); nil when the batch was requeued. Waits for
    /// `earlier` to finish first when the two share an event or `earlier` has failures.
    func prepare(_ batch: [AMQPDelivery], after earlier: Finishing?) async -> Prepared? {
        let started = ContinuousClock.now
        metrics.deliveries.increment(by: Int64(batch.count))
        metrics.batchSize.record(Double(batch.count))
        var items: [Item] = batch.map { d in
            switch BatchApplier<Handler>.decode(d.message.body) {
            case .success(let e): return Item(delivery: d, event: e, outcome: .applied)
            case .failure(let err): return Item(delivery: d, event: nil, outcome: .failed(err))
            }
        }
        if let earlier, earlier.failed || items.contains(where: { $0.event.map { earlier.ids.contains($0.id) } ?? false }) {
            await earlier.task.value
        }
        let tracing = PayfleetTracing.isEnabled
        if tracing { startSpans(&items) }
        let applySpans = tracing ? startApplySpans(items) : []

        // 1. One transaction for the whole batch; each event in its own savepoint (held while
        // the store refuses writes; nil: the batch was requeued).
        guard let outcomes = await applyHolding(items.map(\.event), batch: batch) else {
            if tracing { endSpans(items) }
            return nil
        }
        for i in items.indices where items[i].event != nil { items[i].outcome = outcomes[i] }
        if tracing { Self.endApplySpans(applySpans, items) }
        return Prepared(items: items, started: started, tracing: tracing)
    }

    /// Steps 2–4 of an applied batch: effects, failures, acks.
    func finish(_ prepared: Prepared) async {
        var items = prepared.items
        metrics.eventLag.begin(items.map { $0.event?.receivedAt })
        defer { metrics.eventLag.end() }
        defer { if prepared.tracing { endSpans(items) } }

        // 2. External effects, after the commit, bounded concurrency.
        await performEffects(&items)

        // 3. Failures: republish to a retry tier or the DLQ with confirms, then ack.
        await republishFailures(&items)

        // 4. Acks: one multiple-ack when the whole batch is done.
        ackAll(items)

        countOutcomes(items)
        metrics.handlerLatency.recordNanoseconds((ContinuousClock.now - prepared.started).nanoseconds)
    }
}
