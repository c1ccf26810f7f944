import Foundation
import Logging
import PayfleetCore
import ServiceLifecycle

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
                    logger.error("pruning the outbox failed", metadata: [LogKey.error: "\(error)"])
                    break
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
            if removed > 0 { logger.info("outbox pruned", metadata: [LogKey.ingestPruned: "\(removed)"]) }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(self.intervalSeconds)) }
        }
    }
}
