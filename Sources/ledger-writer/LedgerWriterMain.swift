import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetWorker

/// `ledger-writer`: the shared worker runtime with the ledger handler (DESIGN §5a).
@main
struct LedgerWriterMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = """
        USAGE: ledger-writer [--config FILE] [--partition N] [--check-config]

        Immutable, balanced double-entry postings in integer minor units (DESIGN §5a): consumes
        payment events from its RabbitMQ queue into ledger-writer[.pN].sqlite.

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `ledger-writer:` section (admin port default 9111).
          --partition N     The partition this instance owns (else $PAYFLEET_PARTITION, else 0;
                            systemd's %i in payfleet-ledger-writer@N.service).
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
        let routingKeys = Topology.fleet.first { $0.name == "ledger-writer" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "ledger-writer", routingKeys: routingKeys, partitionKey: .merchant, defaultAdminPort: 9111
        ) { section, _, merchants, logger in
            try LedgerHandler(section: section, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
