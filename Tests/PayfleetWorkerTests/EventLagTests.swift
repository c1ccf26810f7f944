import Foundation
import PayfleetWorker
import Prometheus
import Testing

/// `payfleet_event_lag_seconds` (EventLag.swift), the gauge behind PayfleetEventLag.
@Suite struct EventLagTests {
    @Test("now − oldest received_at while a batch is in flight; the last batch's lag until idle; 0 after")
    func lag() {
        let registry = PrometheusCollectorRegistry()
        let lag = EventLag(worker: "ledger-writer", partition: 2, registry: registry, idleAfter: 30)
        let t0 = Date(timeIntervalSince1970: 1_796_000_000)
        #expect(lag.refresh(now: t0) == 0)
        // A batch of events received 120 s, 40 s and 10 s ago (and one without received_at).
        lag.begin([t0.addingTimeInterval(-120), t0.addingTimeInterval(-40), nil, t0.addingTimeInterval(-10)], now: t0)
        #expect(lag.refresh(now: t0) == 120)
        // Stuck in a slow effect for 60 s: the lag grows.
        #expect(lag.refresh(now: t0.addingTimeInterval(60)) == 180)
        #expect(registry.emitToString().contains(#"payfleet_event_lag_seconds{worker="ledger-writer",partition="2"} 180"#),
                "\(registry.emitToString())")
        lag.end(now: t0.addingTimeInterval(65))
        // Between batches: the lag the batch finished with (185 s), until 30 s without a batch.
        #expect(lag.refresh(now: t0.addingTimeInterval(80)) == 185)
        #expect(lag.refresh(now: t0.addingTimeInterval(96)) == 0)
        // A batch of events without received_at counts nothing.
        lag.begin([nil], now: t0.addingTimeInterval(100))
        #expect(lag.refresh(now: t0.addingTimeInterval(101)) == 0)
    }
}
