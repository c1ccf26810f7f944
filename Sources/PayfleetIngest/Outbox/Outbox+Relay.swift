import Foundation
import Logging
import PayfleetAMQP
import PayfleetWorker

/// Ingest's `outbox` table as the one `OutboxRelay` reads it: rows due in order of acceptance
/// (`seq`), a refused row deferred with its own backoff (`Outbox.deferRow`) and parked after
/// `Outbox.parkAfterAttempts` failures (`payfleet_ingest_outbox_parked`, `/readyz`, an alert;
/// `payfleet outbox release` makes it due at once), and the operator's pause (`relay_pause`,
/// `payfleet partitions resize`).
struct IngestOutboxStorage: OutboxStorage {
    let outbox: Outbox

    func unsent(limit: Int) async throws -> [OutboxRow<Int64>] {
        try await outbox.pending(limit: limit).map { OutboxRow(key: $0.seq, event: $0.event, attempts: $0.attempts) }
    }

    func markSent(_ keys: [Int64]) async throws { try await outbox.markSent(keys) }

    func deferRow(_ key: Int64, reason: String) async throws { try await outbox.deferRow(key, reason: reason) }

    func counts() async throws -> (pending: Int, parked: Int) {
        (try await outbox.pendingCount(), try await outbox.parkedCount())
    }

    var parkAfterAttempts: Int? { Outbox.parkAfterAttempts }

    func pause() async throws -> OutboxPause? { try await outbox.relayPause() }

    func acknowledgePause() async throws { try await outbox.acknowledgeRelayPause() }
}

extension OutboxRelay {
    /// Ingest's relay: its outbox in batches of `batchSize` (`relay_batch`), app id `ingest`,
    /// counted in `payfleet_ingest_published_total`, `…_publish_failures_total`,
    /// `…_outbox_pending` and `…_outbox_parked` (refreshed at most once a second).
    public convenience init(outbox: Outbox, amqp: AMQPConfiguration, batchSize: Int, metrics: IngestMetrics, logger: Logger) {
        self.init(
            storage: IngestOutboxStorage(outbox: outbox), amqp: amqp, name: "ingest-relay", appID: "ingest",
            batchSize: batchSize,
            metrics: OutboxRelayMetrics(
                published: metrics.published, publishFailures: metrics.publishFailures, pending: metrics.outboxPending,
                parked: metrics.outboxParked),
            logger: logger)
    }
}
