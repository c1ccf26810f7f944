import ArgumentParser
import Foundation
import PayfleetCore
import PayfleetIngest
import PayfleetWorker

/// `payfleet backfill stripe --since DURATION|TIMESTAMP [--dry-run]`: events from Stripe's Events
/// API fed to ingest's own webhook route (see `StripeBackfill` for why that route), so nothing is
/// applied twice. Uses `ingest.stripe.api_key_file` / `api_base` and the first of
/// `ingest.stripe.webhook_secrets`; ingest must be running (`--ingest-url`, default from
/// `ingest.host` / `ingest.port`).
public struct BackfillCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "backfill", abstract: "Recover provider events ingest missed.", subcommands: [Stripe.self])
    public init() {}

    public struct Stripe: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "List Stripe events since a time (at most 30 days back) and feed each to ingest; duplicates are ignored by ingest.")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "A duration back from now (90m, 6h, 3d) or an RFC 3339 timestamp.") public var since: String
        @Flag(name: .customLong("dry-run"), help: "List what would be fed; send nothing to ingest.") public var dryRun = false
        @Flag(name: .customLong("undelivered"), help: "Only events Stripe failed to deliver (delivery_success=false).")
        public var undelivered = false
        @Option(name: .customLong("ingest-url"), help: "Ingest's base URL (default http://<ingest.host>:<ingest.port>).")
        public var ingestURL: String?
        public init() {}

        /// The backfill from the configuration.
        public func backfill() throws -> StripeBackfill {
            let env = ProcessInfo.processInfo.environment
            let root = try ConfigSection.load(file: global.configPath, environment: env)
            let ingest = try IngestConfiguration.read(
                root: root, section: try root.section("ingest"), merchants: try WorkerMain.readMerchants(root), amqp: nil)
            guard let api = ingest.stripeAPI else {
                throw CLIFailure("ingest.stripe.api_key_file is not configured: the backfill reads Stripe's Events API")
            }
            guard let secret = ingest.stripeSecrets.first else {
                throw CLIFailure("ingest.stripe.webhook_secrets is not configured: the backfill signs what it feeds ingest")
            }
            let host = ingest.host == "0.0.0.0" || ingest.host == "::" ? "127.0.0.1" : ingest.host
            var b = StripeBackfill(
                api: StripeAPI(configuration: api), ingestURL: ingestURL ?? "http://\(host):\(ingest.port)", webhookSecret: secret)
            b.undeliveredOnly = undelivered
            return b
        }

        public func output() async throws -> (text: String, failed: Int) {
            let sinceS: Int64
            do { sinceS = try StripeBackfill.parseSince(since) } catch { throw CLIFailure("\(error)") }
            let summary: StripeBackfill.Summary
            do { summary = try await backfill().run(since: sinceS, dryRun: dryRun) } catch let e as StripeAPIError {
                throw CLIFailure("Stripe: \(e.message)")
            }
            return (try Self.render(summary, dryRun: dryRun, json: global.json), summary.failed)
        }

        static func render(_ s: StripeBackfill.Summary, dryRun: Bool, json: Bool) throws -> String {
            if json {
                let o: [String: Any] = [
                    "listed": s.items.count, "pages": s.pages, "dry_run": dryRun, "accepted": s.count("accepted"),
                    "duplicate": s.count("duplicate"), "failed": s.failed,
                    "events": s.items.map { ["id": $0.id, "type": $0.type, "created": $0.created, "outcome": $0.outcome] },
                ]
                let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                return String(decoding: data, as: UTF8.self)
            }
            var lines = s.items.map { "\(RFC3339.format(Date(timeIntervalSince1970: TimeInterval($0.created))))  \($0.id)  \($0.type)  \($0.outcome)" }
            if dryRun {
                lines.append("\(s.items.count) events would be fed (\(s.pages) pages)")
            } else {
                lines.append(
                    "\(s.items.count) events listed (\(s.pages) pages): \(s.count("accepted")) recovered, "
                        + "\(s.count("duplicate")) already known, \(s.failed) failed")
            }
            return lines.joined(separator: "\n")
        }

        public func run() async throws {
            let (text, failed) = try await output()
            print(text)
            if failed > 0 { throw ExitCode(1) }
        }
    }
}
