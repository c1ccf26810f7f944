import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetWorker

/// `settlement-aggregator`: the shared worker runtime with the settlement handler, plus the
/// timer that closes business days (DESIGN §5a).
@main
struct SettlementAggregatorMain {
    static func main() async {
        let routingKeys = Topology.fleet.first { $0.name == "settlement-aggregator" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "settlement-aggregator", routingKeys: routingKeys, partitionKey: .merchant, defaultAdminPort: 9131,
            makeHandler: { section, _, merchants, logger in
                try SettlementHandler(section: section, merchants: merchants, logger: logger)
            },
            services: { runtime, logger in
                [
                    DayCloser(
                        store: runtime.store, amqp: runtime.configuration.amqp, merchants: runtime.handler.merchants,
                        settings: runtime.handler.settings, logger: logger, registry: runtime.metrics.registry)
                ]
            })
        exit(code)
    }
}
