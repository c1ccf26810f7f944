import Foundation
import PayfleetIngest

/// `ingest`: the HTTP server that verifies, normalizes and durably accepts events (DESIGN §3).
@main
struct IngestExecutable {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = """
        USAGE: ingest [--config FILE] [--check-config]

        Verifies, normalizes and durably accepts payment events (DESIGN §3): Stripe and Adyen
        webhooks, Standard Webhooks and the canonical API, into ingest.sqlite (outbox + dedupe),
        then publishes them to RabbitMQ with publisher confirms.

        ROUTES: POST /webhooks/stripe, /webhooks/adyen, /webhooks/standard/{source}, /v1/events;
                GET /healthz, /readyz, /metrics

        OPTIONS:
          --config FILE     Configuration file (else $PAYFLEET_CONFIG, else config/payfleet.yaml);
                            this process reads the `ingest:` section (port default 8080).
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
        exit(await IngestMain.run())
    }
}
