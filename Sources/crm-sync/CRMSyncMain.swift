import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetWorker

/// `crm-sync`: the shared worker runtime with the CRM handler (DESIGN §5a, §6).
@main
struct CRMSyncMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = """
        USAGE: crm-sync [--config FILE] [--partition N] [--check-config]

        Per-customer payment history and outstanding balance, pushed to the configured CRM connector
        (DESIGN §5a): consumes payment events from its RabbitMQ queue into crm-sync[.pN].sqlite.

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `crm-sync:` section (admin port default 9101).
          --partition N     The partition this instance owns (else $PAYFLEET_PARTITION, else 0;
                            systemd's %i in payfleet-crm-sync@N.service).
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
        let routingKeys = Topology.fleet.first { $0.name == "crm-sync" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "crm-sync", routingKeys: routingKeys, partitionKey: .customer, defaultAdminPort: 9101
        ) { section, root, _, logger in
            try CRMHandler(section: section, root: root, logger: logger)
        }
        exit(code)
    }
}
