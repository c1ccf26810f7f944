import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetWorker

/// `settlement-aggregator`: the shared worker runtime with the settlement handler, plus the
/// timer that closes business days (DESIGN §5a).
@main
struct SettlementAggregatorMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = WorkerMain.usage(
        .settlementAggregator,
        summary: """
            Daily totals per merchant / currency / business day, closed at each merchant's cut-off
            (DESIGN §5a): consumes payment events into settlement-aggregator[.pN].sqlite.
            """)

    static func main() async {
        WorkerMain.exitOnHelp(usage)
        let code = await WorkerMain.run(
            .settlementAggregator,
            makeHandler: { section, _, merchants, logger in
                try SettlementHandler(section: section, merchants: merchants, logger: logger)
            },
            services: { runtime, logger in
                [
                    DayCloser(
                        store: runtime.store, amqp: runtime.configuration.amqp, merchants: runtime.handler.merchants,
                        settings: runtime.handler.settings, logger: logger, registry: runtime.metrics.registry),
                    // `payfleet settlement reconcile` results beside the state file.
                    ReconciliationMetrics(
                        path: ((runtime.configuration.statePath as NSString).deletingLastPathComponent as NSString)
                            .appendingPathComponent(ReconciliationStore.fileName),
                        registry: runtime.metrics.registry, logger: logger),
                ]
            })
        exit(code)
    }
}
