import Foundation
import PayfleetCore
import PayfleetReceipts
import PayfleetWorker

/// `receipt-sender`: the shared worker runtime with the receipt handler (email / SMS receipts).
@main
struct ReceiptSenderMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = """
        USAGE: receipt-sender [--config FILE] [--partition N] [--check-config]

        Email and SMS receipts, exactly once per payment.succeeded / payment.refunded: consumes
        payment events from its RabbitMQ queue; state in receipt-sender[.pN].sqlite.

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `receipt-sender:` section (admin port default 9121).
          --partition N     The partition this instance owns (else $PAYFLEET_PARTITION, else 0;
                            systemd's %i in payfleet-receipt-sender@N.service).
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
        let routingKeys = Topology.fleet.first { $0.name == "receipt-sender" }?.routingKeys ?? []
        let code = await WorkerMain.run(
            worker: "receipt-sender", routingKeys: routingKeys, partitionKey: .customer, defaultAdminPort: 9121
        ) { section, root, merchants, logger in
            try ReceiptHandler(section: section, root: root, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
