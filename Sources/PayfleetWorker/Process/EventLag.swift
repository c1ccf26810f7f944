import Foundation
import PayfleetCore
import Prometheus

/// `payfleet_event_lag_seconds{worker, partition}`: how far behind the worker is, as now −
/// `received_at` of the oldest event it holds unprocessed (its in-flight batch). Between batches
/// the gauge keeps the lag the last batch had when it finished, so a worker that works through a
/// backlog shows its lag even when a scrape falls between two batches; after `idleAfter` with no
/// batch it reads 0 (nothing delivered is waiting). A worker that consumes nothing at all is the
/// consumer and queue-depth alerts' business, not this gauge's.
///
/// Events without `received_at` (published by a worker, replayed from an old archive) do not
/// count. Refreshed by the runtime's readiness loop, so a batch stuck in a slow effect grows.
public final class EventLag: Sendable {
    let gauge: Gauge
    let idleAfter: TimeInterval
    struct State {
        var inFlightOldest: Date?
        var lastLag: TimeInterval = 0
        var lastEnd: Date?
    }
    let state = Locked(State())

    public init(worker: String, partition: Int, registry: PrometheusCollectorRegistry, idleAfter: TimeInterval = 30) {
        gauge = registry.makeGauge(
            name: "payfleet_event_lag_seconds", labels: [("worker", worker), ("partition", String(partition))],
            help: "now - received_at of the oldest event in the worker's hands (in-flight batch; the last batch's lag until idle)")
        self.idleAfter = idleAfter
    }

    /// A batch starts with these events' `received_at`.
    public func begin(_ receivedAt: [Date?], now: Date = Date()) {
        let oldest = receivedAt.compactMap { $0 }.min()
        state.withLock { $0.inFlightOldest = oldest }
        refresh(now: now)
    }

    /// The batch was committed, acked or requeued.
    public func end(now: Date = Date()) {
        state.withLock { s in
            if let o = s.inFlightOldest { s.lastLag = max(0, now.timeIntervalSince(o)) }
            s.inFlightOldest = nil
            s.lastEnd = now
        }
        refresh(now: now)
    }

    /// The gauge's value now (also set on the gauge).
    @discardableResult
    public func refresh(now: Date = Date()) -> TimeInterval {
        let v: TimeInterval = state.withLock { s in
            if let o = s.inFlightOldest { return max(0, now.timeIntervalSince(o)) }
            if let end = s.lastEnd, now.timeIntervalSince(end) < idleAfter { return s.lastLag }
            return 0
        }
        gauge.set(v)
        return v
    }
}
