import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker
import ServiceLifecycle

/// Publishes outbox rows in order of acceptance to `payfleet.events` with confirms and
/// `mandatory`, and marks a row sent only after its confirm. Nothing is ever dropped:
/// - the broker unreachable or the connection lost: every row stays pending and the relay
///   retries with backoff, then publishes the oldest due row alone (a probe) until one is
///   confirmed;
/// - a row the broker refuses (unroutable, nacked), or a probe whose publish alone breaks a
///   connection that was up: that row waits for its own retry (1 s doubling, at most 10 min,
///   `Outbox.deferRow`) and the rows behind it go on. After `Outbox.parkAfterAttempts` failures
///   it counts as parked (`payfleet_ingest_outbox_parked`, `/readyz`, an alert);
///   `payfleet outbox release` makes it due at once after the cause is fixed.
public final class OutboxRelay: Service, Sendable {
    let outbox: Outbox
    let publisher: AMQPPublisher
    let batchSize: Int
    let logger: Logger
    let metrics: IngestMetrics
    let counts = Locked((pending: 0, parked: 0))
    /// Waits after a publish the connection failed: 200 ms doubling to 5 s, with jitter.
    let backoff = AMQPBackoff(initialMS: 100, maxMS: 5_000)

    public init(outbox: Outbox, amqp: AMQPConfiguration, batchSize: Int, metrics: IngestMetrics, logger: Logger) {
        self.outbox = outbox
        self.batchSize = batchSize
        self.logger = logger
        self.metrics = metrics
        publisher = AMQPPublisher(
            configuration: amqp, name: "ingest-relay", maxBatch: batchSize, logger: logger,
            onConnect: { d in try d.eventsExchange() })
    }

    public var brokerConnected: Bool { publisher.isConnected }

    /// True while the operator's pause holds the relay (`payfleet partitions resize`).
    public var isPaused: Bool { pausedState.withLock { $0 } }
    let pausedState = Locked(false)

    /// The outbox's unsent and parked rows, as last counted (at most a second old).
    public var lastCounts: (pending: Int, parked: Int) { counts.withLock { $0 } }

    public func run() async throws {
        var failures = 0
        var probing = false
        var lastCount = ContinuousClock.now - .seconds(10)
        var lastPauseCheck = ContinuousClock.now - .seconds(10)
        var paused = false
        defer { publisher.close() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // The operator's pause (`payfleet partitions resize`), read at most every 100 ms and
            // only here, between rounds: when the relay acknowledges it, nothing it published
            // is still waiting for a confirm.
            if ContinuousClock.now - lastPauseCheck > .milliseconds(100) {
                lastPauseCheck = ContinuousClock.now
                // A failed read keeps the state it had (never publishes through a pause it cannot see).
                if let read = try? await outbox.relayPause() as Outbox.RelayPause?? {
                    if let pause = read {
                        if !paused || pause.acknowledgedMS == nil {
                            try? await outbox.acknowledgeRelayPause()
                            if !paused {
                                logger.notice("relay paused by the operator; accepted events wait in the outbox", metadata: [
                                    "ingest.pause.holder": "\(pause.holder)", "ingest.pause.reason": "\(pause.reason)",
                                ])
                            }
                        }
                        paused = true
                    } else if paused {
                        paused = false
                        logger.notice("relay resumed")
                    }
                    pausedState.withLock { $0 = paused }
                }
            }
            if paused {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            // Counts share the store's thread with commits: at most once a second.
            if ContinuousClock.now - lastCount > .seconds(1) {
                if let pending = try? await outbox.pendingCount(), let parked = try? await outbox.parkedCount() {
                    counts.withLock { $0 = (pending, parked) }
                    metrics.outboxPending.set(Double(pending))
                    metrics.outboxParked.set(Double(parked))
                }
                lastCount = ContinuousClock.now
            }
            let rows: [Outbox.Row]
            do { rows = try await outbox.pending(limit: probing ? 1 : batchSize) } catch {
                logger.error("relay cannot read the outbox", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            if rows.isEmpty {
                probing = false
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            let wasConnected = publisher.isConnected
            let published = await OutboxPublishing.publish(rows.map(\.event), via: publisher, appID: "ingest")
            let sent = published.sent.map { rows[$0].seq }
            var refused = published.refused.map { (rows[$0.index], $0.error) }
            var connectionError = published.connectionError
            do { try await outbox.markSent(sent) } catch {
                // Published but not marked: they will be published again; consumers dedupe by id.
                logger.error("relay cannot mark rows sent", metadata: ["error": "\(error)"])
            }
            metrics.published.increment(by: Int64(sent.count))
            // A probe that broke a live connection on its own: the row is the cause.
            if probing, rows.count == 1, wasConnected, let e = connectionError,
                e.code == .connectionLost || e.code == .serverClosed
            {
                refused.append((rows[0], e))
                connectionError = nil
            }
            for (row, e) in refused {
                metrics.publishFailures.increment()
                do { try await outbox.deferRow(row.seq, reason: e.description) } catch {
                    logger.error("relay cannot defer a refused row", metadata: ["error": "\(error)"])
                }
                if row.attempts + 1 == Outbox.parkAfterAttempts || row.attempts == 0 {
                    logger.warning(row.attempts == 0 ? "broker refused an event; it waits for its own retry" : "event parked: the broker keeps refusing it", metadata: [
                        "payfleet.event.id": "\(row.id)", "payfleet.event.type": "\(row.type)", "amqp.error": "\(e)",
                        "ingest.attempts": "\(row.attempts + 1)",
                    ])
                }
            }
            if let e = connectionError {
                failures += 1
                probing = true
                metrics.publishFailures.increment(by: Int64(rows.count - sent.count - refused.count))
                let delay = backoff.delayMS(attempt: failures)
                if failures == 1 || failures % 50 == 0 {
                    logger.warning("relay publish failed; retrying", metadata: [
                        "amqp.error": "\(e)", "ingest.unsent": "\(rows.count - sent.count)", "retry_in_ms": "\(delay)",
                    ])
                }
                try? await Task.sleep(for: .milliseconds(delay))
            } else {
                failures = 0
                if !sent.isEmpty { probing = false }
            }
        }
    }
}

/// Removes what ingest no longer needs (sent rows, records, idempotency keys older than the
/// retention) once a `prune_interval`, a chunk per transaction with a pause between chunks,
/// so a backlog of millions never holds the store's thread for long.
final class OutboxPruner: Service, Sendable {
    let outbox: Outbox
    let retentionSeconds: Int64
    let intervalSeconds: Int
    let metrics: IngestMetrics
    let logger: Logger

    init(outbox: Outbox, configuration: IngestConfiguration, metrics: IngestMetrics, logger: Logger) {
        self.outbox = outbox
        retentionSeconds = configuration.retentionSeconds
        intervalSeconds = configuration.pruneIntervalSeconds
        self.metrics = metrics
        self.logger = logger
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var removed = 0
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do {
                    let p = try await outbox.prune(retentionSeconds: retentionSeconds)
                    removed += p.total
                    metrics.pruned.increment(by: Int64(p.total))
                    if p.total == 0 { break }
                } catch {
                    logger.error("pruning the outbox failed", metadata: ["error": "\(error)"])
                    break
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
            if removed > 0 { logger.info("outbox pruned", metadata: ["ingest.pruned": "\(removed)"]) }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(self.intervalSeconds)) }
        }
    }
}
