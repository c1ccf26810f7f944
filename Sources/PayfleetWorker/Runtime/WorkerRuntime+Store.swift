import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// Step 1 of a batch when the store fails, and the counts at its end.
extension WorkerRuntime {
    /// Applies the batch's events in one transaction (`BatchApplier`). A store that refuses
    /// writes (disk full, read-only file, I/O error: no event is at fault) holds the batch,
    /// unacked, and retries the same transaction until it commits; another failure of the
    /// transaction requeues the whole batch and returns nil.
    func applyHolding(_ events: [PaymentEvent?], batch: [AMQPDelivery]) async -> [Outcome]? {
        var outcomes: [Outcome] = []
        var storeAttempts = 0
        while true {
            do {
                outcomes = try await applier.apply(events)
                break
            } catch let e as SQLiteError where e.isStorageFailure {
                // Disk full, read-only file, I/O error: no event is at fault. Hold the batch
                // (unacked: the broker neither redelivers it nor counts a delivery), report not
                // ready, and try the same transaction again until the store takes it.
                storeAttempts += 1
                if storeAttempts == 1 {
                    logger.critical("state file refuses writes; consumption paused until it is writable", metadata: [
                        LogKey.storeError: "\(e)", LogKey.storePath: "\(configuration.statePath)",
                    ])
                }
                storeFailure.withLock { $0 = e.description }
                metrics.storeWritable.set(Double(0))
                metrics.ready.set(Double(0))
                if stopped.current {
                    for d in batch { consumer.nack(d, requeue: true) }
                    return nil
                }
                // The loop is alive and waiting on purpose: keep the watchdog fed.
                batchStartedAt.withLock { $0 = .now }
                try? await Task.sleep(for: .milliseconds(min(10_000, 500 << min(storeAttempts, 5))))
                // The write-ahead log may be what holds the space: fold it into the database
                // file (which needs far fewer pages) before the same transaction is tried again.
                await applier.store.reclaimJournalSpace()
            } catch {
                // The transaction failed otherwise (a lock timeout): nothing was applied. Requeue
                // the whole batch after a pause; the delivery limit bounds how often.
                logger.error("batch transaction failed; requeueing", metadata: [LogKey.storeError: "\(error)"])
                lastErrorText.withLock { $0 = "transaction failed: \(error)" }
                try? await Task.sleep(for: .seconds(1))
                for d in batch { consumer.nack(d, requeue: true) }
                return nil
            }
        }
        if storeAttempts > 0 {
            logger.notice("state file writable again; consumption resumed", metadata: [LogKey.storeAttempts: "\(storeAttempts)"])
            storeFailure.withLock { $0 = nil }
            metrics.storeWritable.set(Double(1))
        }
        return outcomes
    }

    /// Applied (with or without an effect) and duplicate events of a finished batch.
    func countOutcomes(_ items: [Item]) {
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
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let c = components
        return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
    }
}
