import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import Prometheus
import ServiceLifecycle

/// Exposes the latest reconciliation of each provider and merchant on settlement-aggregator's
/// `/metrics`, read from `reconciliation.sqlite` every `intervalMS`:
///
/// - `payfleet_reconciliation_mismatches{provider, merchant, kind}`: mismatches of the latest
///   run, per kind (`missing_ours`, `missing_provider`, `amount`, `fee`, `payout`, `balance`);
///   any value > 0 means the books and the provider's report disagree (the alert's input);
/// - `payfleet_reconciliation_last_run_timestamp_seconds{provider, merchant}`: when it ran.
public final class ReconciliationMetrics: Service, Sendable {
    let path: String
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    let intervalMS: Int

    public init(path: String, registry: PrometheusCollectorRegistry, logger: Logger, intervalMS: Int = 15_000) {
        self.path = path
        self.registry = registry
        self.logger = logger
        self.intervalMS = intervalMS
    }

    /// Sets the gauges from `runs` (latest per provider and merchant).
    public func report(_ runs: [ReconciliationRun]) {
        for run in runs {
            for kind in ReconciliationRun.mismatchKinds {
                registry.makeGauge(
                    name: "payfleet_reconciliation_mismatches",
                    labels: [("provider", run.provider), ("merchant", run.merchantID), ("kind", kind)],
                    help: "Mismatches of the latest payfleet settlement reconcile run, per kind"
                ).set(Double(run.mismatches[kind] ?? 0))
            }
            let at = RFC3339.parse(run.createdAt).map { Int64($0.timeIntervalSince1970) } ?? 0
            registry.makeGauge(
                name: "payfleet_reconciliation_last_run_timestamp_seconds",
                labels: [("provider", run.provider), ("merchant", run.merchantID)],
                help: "When the latest payfleet settlement reconcile run was recorded (Unix seconds)"
            ).set(Double(at))
        }
    }

    /// Reads the store once and updates the gauges.
    public func refresh(_ store: Store) async throws {
        report(try await store.withConnection { db in try ReconciliationStore.latestPerMerchant(db) })
    }

    public func run() async throws {
        let store: Store
        do { store = try await ReconciliationStore.open(path: path, logger: logger) } catch {
            logger.error("reconciliation store cannot be opened", metadata: [LogKey.storePath: "\(path)", LogKey.error: "\(error)"])
            return
        }
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                do { try await refresh(store) } catch {
                    logger.error("reconciliation store cannot be read", metadata: [LogKey.error: "\(error)"])
                }
                do { try await Task.sleep(for: .milliseconds(intervalMS)) } catch { break }
            }
        }
    }
}
