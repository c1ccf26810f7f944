import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetWorker

/// `settlement-aggregator`: the shared worker runtime with the settlement handler, plus the
/// timer that closes business days (DESIGN §5a).
@main
struct SettlementAggregatorMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = """
        USAGE: settlement-aggregator [--config FILE] [--partition N] [--check-config]

        Daily totals per merchant / currency / business day, closed at each merchant's cut-off
        (DESIGN §5a): consumes payment events into settlement-aggregator[.pN].sqlite.

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `settlement-aggregator:` section (admin port default 9131).
          --partition N     The partition this instance owns (else $PAYFLEET_PARTITION, else 0;
                            systemd's %i in payfleet-settlement-aggregator@N.service).
          --check-config    Read and validate the configuration, print "FILE: ok" and exit.
          -h, --help        Show this help and exit.

        Runs until SIGTERM or SIGINT. Exit codes: 0 after a graceful stop, 78 on a configuration
        error (the message names the key), 1 on another failure.
        """

    static func main() async {
        if CommandLine.arguments.dropFirst().contains(where: { $0 == "--help" || $0 == "-h" }) {
            print(usage)
            exit(0)
        }
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
