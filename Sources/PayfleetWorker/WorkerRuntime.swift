import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import ServiceLifecycle

/// Headers the runtime puts on retried and dead-lettered messages.
public enum PayfleetHeaders {
    public static let error = "x-payfleet-error"
    public static let attempts = "x-payfleet-attempts"
    public static let firstFailedAt = "x-payfleet-first-failed-at"
    public static let worker = "x-payfleet-worker"
    public static let schema = "x-payfleet-schema"
    public static let merchant = "x-payfleet-merchant"
    public static let customer = "x-payfleet-customer"
    public static let traceparent = "traceparent"
}

/// What every worker is (DESIGN §5): consume a batch → one transaction → skip ids already
/// processed → apply → record ids → commit → ack (one multiple-ack per batch where possible).
/// Transient failures are republished, with confirm, to the next retry tier and then acked;
/// after the last tier, and for permanent failures at once, to the dead-letter queue.
public final class WorkerRuntime<Handler: WorkerHandler>: Service, @unchecked Sendable {
    public let configuration: RuntimeConfiguration
    public let handler: Handler
    public let metrics: WorkerMetrics
    public let store: Store
    let logger: Logger
    let publisher: AMQPPublisher
    let consumer: AMQPConsumer
    private let lastErrorText = Locked<String?>(nil)
    /// Set while the state file refuses writes: not ready, the batch in hand is held (neither
    /// acked nor requeued, so no delivery count grows) and retried until a write succeeds.
    private let storeFailure = Locked<String?>(nil)
    /// The delivery tag after the last one acked, per connection generation: a multiple-ack is
    /// only sent when a batch starts exactly there, so nothing unseen is ever acknowledged.
    private var nextExpectedTag: (generation: Int, tag: UInt64) = (0, 1)
    private let stopped = Locked(false)
    /// When the batch in hand was handed over (nil while the loop waits for deliveries): the
    /// systemd watchdog is fed only while this is recent, so a stuck batch gets the process restarted.
    private let batchStartedAt = Locked<ContinuousClock.Instant?>(nil)

    /// The runtime's own tables beside `processed`: the effect journal.
    static var migrations: [Migration] {
        [
            Migration(
                "runtime.2",
                """
                CREATE TABLE effect_journal (
                    event_id TEXT PRIMARY KEY,
                    effect BLOB NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('intent', 'failed', 'dead', 'done')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE INDEX effect_journal_state_idx ON effect_journal(state, updated_at);
                """)
        ]
    }

    public init(configuration: RuntimeConfiguration, handler: Handler, logger: Logger) async throws {
        self.configuration = configuration
        self.handler = handler
        var logger = logger
        logger[metadataKey: "payfleet.worker"] = "\(configuration.worker)"
        if configuration.topology.isPartitioned { logger[metadataKey: "payfleet.partition"] = "\(configuration.partition)" }
        self.logger = logger
        self.metrics = WorkerMetrics(worker: configuration.worker, partition: configuration.partition)
        self.store = try await Store(
            path: configuration.statePath, migrations: Self.migrations + handler.migrations, logger: logger)
        try await handler.attach(store: store, registry: metrics.registry)
        let topology = configuration.topology
        let declare: @Sendable (AMQPDeclarer) throws -> Void = { d in try d.declare(worker: topology) }
        self.publisher = AMQPPublisher(
            configuration: configuration.amqp, name: "\(configuration.worker)-pub", logger: logger, onConnect: declare)
        self.consumer = AMQPConsumer(
            configuration: configuration.amqp, queue: topology.queue(partition: configuration.partition),
            // Twice the batch in flight: the next batch arrives while one is being committed.
            prefetch: configuration.batchSize * 2, name: configuration.worker, logger: logger, onDemand: true,
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
                        let m = try await store.write { db in
                            try db.execute(
                                "DELETE FROM effect_journal WHERE state = 'done' AND updated_at < ?",
                                [.int(Int64(Date().timeIntervalSince1970 - retention))])
                        }
                        if n + m > 0 { logger.info("pruned processed ids", metadata: ["store.pruned": "\(n + m)"]) }
                    } catch {
                        logger.warning("pruning failed", metadata: ["store.error": "\(error)"])
                    }
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
            group.addTask { [self] in
                // The readiness gauge, for alerting on a worker that runs but cannot work.
                while !Task.isCancelled {
                    let ok = await readiness().ready
                    metrics.ready.set(Double(ok ? 1 : 0))
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

    private func consumeLoop() async throws {
        consumer.requestDeliveries()
        for await event in consumer.events {
            switch event {
            case .deliveries(let batch):
                batchStartedAt.withLock { $0 = .now }
                await process(batch)
                batchStartedAt.withLock { $0 = nil }
                consumer.requestDeliveries()
            case .connected(let generation):
                consumer.requestDeliveries()
                logger.info("consumer connected", metadata: ["amqp.generation": "\(generation)"])
            case .disconnected(let error):
                lastErrorText.withLock { $0 = error.description }
            case .stopped:
                return
            }
        }
    }

    // MARK: Batch processing

    enum Outcome {
        case applied
        case duplicate
        case effect(Handler.Effect, attempts: Int, outcomeUnknown: Bool)
        case failed(HandlerError)
    }

    struct Item {
        let delivery: AMQPDelivery
        var event: PaymentEvent?
        var outcome: Outcome
        var ack = true
    }

    /// Applies one batch of deliveries; returns once every delivery was acked or requeued.
    public func process(_ batch: [AMQPDelivery]) async {
        let started = ContinuousClock.now
        metrics.deliveries.increment(by: Int64(batch.count))
        metrics.batchSize.record(Double(batch.count))
        var items: [Item] = batch.map { d in
            do {
                let e = try EventCodec.decode(Data(d.message.body))
                return Item(delivery: d, event: e, outcome: .applied)
            } catch {
                return Item(delivery: d, event: nil, outcome: .failed(HandlerError.classify(error)))
            }
        }

        // 1. One transaction for the whole batch; each event in its own savepoint.
        let handler = self.handler
        let events = items.map(\.event)
        var outcomes: [Outcome] = []
        var storeAttempts = 0
        while true {
            do {
                outcomes = try await applyBatch(events, handler: handler)
                break
            } catch let e as SQLiteError where e.isStorageFailure {
                // Disk full, read-only file, I/O error: no event is at fault. Hold the batch
                // (unacked: the broker neither redelivers it nor counts a delivery), report not
                // ready, and try the same transaction again until the store takes it.
                storeAttempts += 1
                if storeAttempts == 1 {
                    logger.critical("state file refuses writes; consumption paused until it is writable", metadata: [
                        "store.error": "\(e)", "store.path": "\(configuration.statePath)",
                    ])
                }
                storeFailure.withLock { $0 = e.description }
                metrics.storeWritable.set(Double(0))
                metrics.ready.set(Double(0))
                if stopped.current {
                    for d in batch { consumer.nack(d, requeue: true) }
                    return
                }
                // The loop is alive and waiting on purpose: keep the watchdog fed.
                batchStartedAt.withLock { $0 = .now }
                try? await Task.sleep(for: .milliseconds(min(10_000, 500 << min(storeAttempts, 5))))
            } catch {
                // The transaction failed otherwise (a lock timeout): nothing was applied. Requeue
                // the whole batch after a pause; the delivery limit bounds how often.
                logger.error("batch transaction failed; requeueing", metadata: ["store.error": "\(error)"])
                lastErrorText.withLock { $0 = "transaction failed: \(error)" }
                try? await Task.sleep(for: .seconds(1))
                for d in batch { consumer.nack(d, requeue: true) }
                return
            }
        }
        if storeAttempts > 0 {
            logger.notice("state file writable again; consumption resumed", metadata: ["store.attempts": "\(storeAttempts)"])
            storeFailure.withLock { $0 = nil }
            metrics.storeWritable.set(Double(1))
        }
        for i in items.indices where items[i].event != nil { items[i].outcome = outcomes[i] }

        // 2. External effects, after the commit, bounded concurrency.
        await performEffects(&items)

        // 3. Failures: republish to a retry tier or the DLQ with confirms, then ack.
        await republishFailures(&items)

        // 4. Acks: one multiple-ack when the whole batch is done.
        ackAll(items)

        var applied = 0
        var dups = 0
        for item in items {
            switch item.outcome {
            case .applied, .effect: applied += 1
            case .duplicate: dups += 1
            case .failed: break
            }
        }
        metrics.processed.increment(by: Int64(applied))
        metrics.duplicates.increment(by: Int64(dups))
        metrics.handlerLatency.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
    }

    /// Step 1 of a batch: one transaction, each event in its own savepoint. Throws only when the
    /// transaction as a whole failed (nothing applied).
    private func applyBatch(_ events: [PaymentEvent?], handler: Handler) async throws -> [Outcome] {
        try await store.write { db -> [Outcome] in
            let now = Int64(Date().timeIntervalSince1970)
            // The same event twice in one batch (a duplicate publish): the second copy is a
            // duplicate, not an effect whose outcome is unknown.
            var inBatch = Set<String>()
            return try events.map { event -> Outcome in
                guard let event else { return .applied }  // replaced below by the decode failure
                guard inBatch.insert(event.id).inserted else { return .duplicate }
                if try db.isProcessed(event.id) {
                    if let row = try db.queryOne(
                        "SELECT effect, state, attempts FROM effect_journal WHERE event_id = ?", [.text(event.id)]),
                        let state = row.string(1), state != "done"
                    {
                        let effect = try JSONDecoder().decode(Handler.Effect.self, from: Data(row.blob(0) ?? []))
                        return .effect(effect, attempts: Int(row.int(2) ?? 0), outcomeUnknown: state == "intent")
                    }
                    return .duplicate
                }
                do {
                    return try db.savepoint { () throws -> Outcome in
                        let effect = try handler.apply(event, db: db)
                        try db.markProcessed(event.id)
                        guard let effect else { return .applied }
                        try db.execute(
                            "INSERT INTO effect_journal (event_id, effect, state, attempts, created_at, updated_at) VALUES (?, ?, 'intent', 0, ?, ?)",
                            [.text(event.id), .blob(Array(try JSONEncoder().encode(effect))), .int(now), .int(now)])
                        return .effect(effect, attempts: 0, outcomeUnknown: false)
                    }
                } catch let e as SQLiteError where e.isStorageFailure {
                    throw e  // the whole transaction waits, no event is failed for it
                } catch {
                    return .failed(HandlerError.classify(error))
                }
            }
        }
    }

    private func performEffects(_ items: inout [Item]) async {
        let work: [(Int, Handler.Effect, PaymentEvent, Int, Bool)] = items.indices.compactMap { i in
            if case .effect(let e, let attempts, let unknown) = items[i].outcome, let ev = items[i].event {
                return (i, e, ev, attempts, unknown)
            }
            return nil
        }
        guard !work.isEmpty else { return }
        let handler = self.handler
        let limit = configuration.effectConcurrency
        for w in work where w.4 { metrics.effectsOutcomeUnknown.increment() }
        // Each outcome is recorded as soon as its effect returns, not at the end of the batch: a
        // crash mid-batch then leaves only the calls actually in flight with an unknown outcome
        // (an SMTP batch of 200 takes seconds; all of it would otherwise be "unknown").
        var results: [Int: (err: HandlerError?, recorded: Bool)] = [:]
        await withTaskGroup(of: (Int, HandlerError?, Bool).self) { group in
            var next = 0
            func add() {
                let (i, effect, event, attempts, unknown) = work[next]
                next += 1
                group.addTask { [self] in
                    var err: HandlerError?
                    do {
                        try await handler.perform(effect, event: event, attempt: attempts + 1, outcomeUnknown: unknown)
                    } catch {
                        err = HandlerError.classify(error)
                    }
                    return (i, err, await recordOutcome(effect, event: event, error: err))
                }
            }
            while next < min(limit, work.count) { add() }
            for await (i, err, recorded) in group {
                results[i] = (err, recorded)
                if next < work.count { add() }
            }
        }
        for (i, _, _, _, _) in work {
            guard let r = results[i], r.recorded else {
                // The outcome could not be recorded: the journal stays at 'intent' and the delivery
                // is requeued, so redelivery sees an unknown outcome rather than repeating blindly.
                items[i].ack = false
                continue
            }
            if let err = r.err {
                metrics.effectsFailed.increment()
                items[i].outcome = .failed(err)
            } else {
                metrics.effectsPerformed.increment()
            }
        }
    }

    /// Writes one effect's outcome to the journal (and the handler's `completed`); false when the
    /// store refused.
    private func recordOutcome(_ effect: Handler.Effect, event: PaymentEvent, error err: HandlerError?) async -> Bool {
        let handler = self.handler
        var storeAttempts = 0
        while true {
        do {
            try await store.write { db in
                let now = Int64(Date().timeIntervalSince1970)
                if let err {
                    try db.execute(
                        "UPDATE effect_journal SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ? WHERE event_id = ?",
                        [.text(err.kind == .permanent ? "dead" : "failed"), .text(err.description), .int(now), .text(event.id)])
                } else {
                    try handler.completed(effect, event: event, db: db)
                    try db.execute(
                        "UPDATE effect_journal SET state = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ? WHERE event_id = ?",
                        [.int(now), .text(event.id)])
                }
            }
            if storeAttempts > 0 {
                storeFailure.withLock { $0 = nil }
                metrics.storeWritable.set(Double(1))
            }
            return true
        } catch let e as SQLiteError where e.isStorageFailure && !stopped.current {
            // The effect happened; its outcome waits for a writable store rather than being
            // requeued (a redelivery would count towards the delivery limit).
            storeAttempts += 1
            storeFailure.withLock { $0 = e.description }
            metrics.storeWritable.set(Double(0))
            if storeAttempts == 1 {
                logger.critical("state file refuses writes; holding an effect's outcome", metadata: [
                    "store.error": "\(e)", "payfleet.event.id": "\(event.id)",
                ])
            }
            batchStartedAt.withLock { $0 = .now }
            try? await Task.sleep(for: .milliseconds(min(10_000, 500 << min(storeAttempts, 5))))
        } catch {
            logger.error("recording an effect outcome failed", metadata: ["store.error": "\(error)", "payfleet.event.id": "\(event.id)"])
            return false
        }
        }
    }

    private func republishFailures(_ items: inout [Item]) async {
        let topo = configuration.topology
        var indices: [Int] = []
        var outgoing: [AMQPOutgoing] = []
        var retried = 0
        var dead = 0
        for i in items.indices {
            guard case .failed(let err) = items[i].outcome, items[i].ack else { continue }
            let d = items[i].delivery
            var headers = d.message.headers
            let attempts = Int(headers[PayfleetHeaders.attempts]?.intValue ?? 0) + 1
            headers[PayfleetHeaders.attempts] = .int(Int64(attempts))
            headers[PayfleetHeaders.error] = .string(err.description)
            headers[PayfleetHeaders.worker] = .string(configuration.worker)
            if headers[PayfleetHeaders.firstFailedAt] == nil {
                headers[PayfleetHeaders.firstFailedAt] = .string(RFC3339.format(Date()))
            }
            let target: String
            if err.kind == .transient && attempts <= topo.retryDelaysMS.count {
                target = topo.retryQueue(delayMS: topo.retryDelaysMS[attempts - 1], partition: configuration.partition)
                retried += 1
            } else {
                target = topo.dlq
                dead += 1
            }
            var m = d.message
            m.headers = headers
            m.persistent = true
            outgoing.append(AMQPOutgoing(exchange: "", routingKey: target, message: m, mandatory: true))
            indices.append(i)
            let eventID = items[i].event?.id ?? d.message.messageID ?? "?"
            logger.warning(
                target == topo.dlq ? "event dead-lettered" : "event scheduled for retry",
                metadata: [
                    "payfleet.event.id": "\(eventID)", "payfleet.error": "\(err.description)",
                    "payfleet.attempts": "\(attempts)", "amqp.queue": "\(target)",
                ])
            lastErrorText.withLock { $0 = err.description }
        }
        guard !outgoing.isEmpty else { return }
        let results = await publisher.publish(batch: outgoing)
        for (k, r) in results.enumerated() {
            if case .failure(let e) = r {
                // Not safely republished: leave it on the main queue (requeue), never drop it.
                items[indices[k]].ack = false
                logger.error("republish failed; requeueing", metadata: ["amqp.error": "\(e)"])
                metrics.requeued.increment()
            }
        }
        metrics.retried.increment(by: Int64(retried))
        metrics.deadLettered.increment(by: Int64(dead))
    }

    private func ackAll(_ items: [Item]) {
        guard let last = items.last else { return }
        let gen = last.delivery.generation
        if nextExpectedTag.generation != gen { nextExpectedTag = (gen, 1) }
        let contiguous = items.enumerated().allSatisfy { i, item in
            item.delivery.generation == gen && item.delivery.deliveryTag == nextExpectedTag.tag + UInt64(i)
        }
        if contiguous && items.allSatisfy(\.ack) {
            consumer.ack(last.delivery, multiple: true)
        } else {
            for item in items {
                if item.ack { consumer.ack(item.delivery) } else { consumer.nack(item.delivery, requeue: true) }
            }
        }
        if last.delivery.generation == gen { nextExpectedTag = (gen, last.delivery.deliveryTag + 1) }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let c = components
        return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
    }
}
