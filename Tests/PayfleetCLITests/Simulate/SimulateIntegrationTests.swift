import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetTestKit
import Testing

/// `payfleet simulate` against a real `ingest` and a real `ledger-writer` on the private
/// broker: signed provider traffic in, the ledger agrees with what was sent.
@Suite(.serialized) struct SimulateIntegrationTests {
    /// Starts ingest on a free port with the fleet's config; returns the process and its URL.
    func startIngest(_ fleet: WorkerProcess) async throws -> (ChildProcess, String) {
        let ready = fleet.dir + "/ingest.ready"
        let ingest = try ChildProcess(
            executable: TestEnvironment.binDir + "/ingest", arguments: ["--config", fleet.configPath],
            environment: ["PAYFLEET_READY_FILE": ready], logPath: fleet.dir + "/ingest.log")
        var port = 0
        let up = await eventually(timeout: .seconds(30)) {
            guard let data = FileManager.default.contents(atPath: ready),
                let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let p = o["port"] as? Int, p > 0
            else { return false }
            port = p
            return true
        }
        if !up {
            await ingest.killNow()
            Issue.record("ingest did not start: \(ingest.log)")
            throw CLIFailure("ingest did not start")
        }
        return (ingest, "http://127.0.0.1:\(port)")
    }

    @Test func aSimulatedRunAgreesWithTheLedger() async throws {
        var options = WorkerProcess.Options.worker("ledger-writer", prefix: "sim-it")
        options.topLevelYAML = SimFixtures.yaml(ingestPort: 0)
        try await WorkerProcess.with(options) { fleet in
            try fleet.start()
            let readyWorker = await eventually(timeout: .seconds(30)) { await fleet.admin("/readyz")?.status == 200 }
            #expect(readyWorker, "ledger-writer not ready: \(fleet.process?.log ?? "")")
            let (ingest, url) = try await startIngest(fleet)
            do {
                let command = try SimulateCommand.parse([
                    "--config", fleet.configPath, "--ingest-url", url, "--count", "300", "--seed", "11", "--run-id", "itone",
                    "--settle-timeout", "60s",
                ])
                let report = try await command.execute()
                print(report.text)
                #expect(report.accepted == 300)
                #expect(report.rejected == 0)
                let byName = Dictionary(report.checks.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
                #expect(byName["ledger"]?.status == .agree, "\(byName["ledger"]?.differences ?? [])")
                #expect(byName["crm"]?.status == .notRunning)
                #expect(byName["crm"]?.summary.hasPrefix("not running: crm-sync") == true)
                #expect(byName["receipts"]?.summary.hasPrefix("not running: receipt-sender") == true)
                #expect(byName["settlement"]?.summary.hasPrefix("not running: settlement-aggregator") == true)
                #expect(report.agree, "\(report.text)")
                #expect(report.text.hasSuffix("all agree"))
                let recorded = try fleet.count("ledger_events")
                #expect(recorded > 200 && recorded < 300)  // duplicates and second notifications collapse

                // A second run through the executable, against the books the first one left:
                // it compares what changed, and exits 0 with --json.
                let cli = try ChildProcess(
                    executable: TestEnvironment.binDir + "/payfleet",
                    arguments: ["simulate", "--config", fleet.configPath, "--ingest-url", url, "--count", "120", "--seed", "12",
                                "--run-id", "ittwo", "--json", "--rate", "400"],
                    logPath: fleet.dir + "/simulate.log")
                let status = await cli.wait(timeout: .seconds(90))
                #expect(status == 0, "\(cli.log)")
                let json = cli.log
                let start = try #require(json.firstIndex(of: "{"))
                let object = try #require(try JSONSerialization.jsonObject(with: Data(json[start...].utf8)) as? [String: Any])
                #expect(object["agree"] as? Bool == true)
                #expect(object["result"] as? String == "all agree")
                #expect((object["sent"] as? [String: Any])?["accepted"] as? Int == 120)
            } catch {
                await ingest.killNow()
                throw error
            }
            ingest.signal(SIGTERM)
            #expect(await ingest.wait(timeout: .seconds(20)) == 0)
        }
    }

    /// `--stripe-outage`: the Stripe webhooks of a stretch are withheld, the simulator serves the
    /// run's Stripe events on a loopback Events API and backfills them into ingest; the ledger
    /// then agrees with every fact sent (BackfillFleetTests shows the same with ingest really
    /// stopped and every worker, figures computed by the test).
    @Test func aStripeOutageIsBackfilledAndTheLedgerAgrees() async throws {
        var options = WorkerProcess.Options.worker("ledger-writer", prefix: "sim-out")
        options.topLevelYAML = SimFixtures.yaml(ingestPort: 0)
        try await WorkerProcess.with(options) { fleet in
            try fleet.start()
            let readyWorker = await eventually(timeout: .seconds(30)) { await fleet.admin("/readyz")?.status == 200 }
            #expect(readyWorker, "ledger-writer not ready: \(fleet.process?.log ?? "")")
            let (ingest, url) = try await startIngest(fleet)
            do {
                let command = try SimulateCommand.parse([
                    "--config", fleet.configPath, "--ingest-url", url, "--count", "200", "--seed", "19", "--run-id", "itout",
                    "--stripe-outage", "50:150", "--settle-timeout", "60s", "--json",
                ])
                let report = try await command.execute()
                print(report.text)
                let o = try #require(try JSONSerialization.jsonObject(with: Data(report.text.utf8)) as? [String: Any])
                let out = try #require(o["stripe_outage"] as? [String: Int])
                let withheld = try #require(out["withheld"])
                #expect(withheld > 0 && report.accepted == 200 - withheld && report.rejected == 0)
                #expect(out["failed"] == 0 && (out["recovered"] ?? 0) > 0)
                #expect((out["recovered"] ?? 0) + (out["duplicate"] ?? 0) == out["listed"])
                #expect((out["recovered"] ?? 0) <= withheld)
                #expect(report.checks.first { $0.name == "ledger" }?.status == .agree, "\(report.text)")
                #expect(report.agree)
            } catch {
                await ingest.killNow()
                throw error
            }
            await ingest.killNow()
        }
    }

    /// With the ledger-writer stopped, nothing can agree: the run says so and exits non-zero.
    @Test func aRunTheFleetDoesNotProcessDisagrees() async throws {
        var options = WorkerProcess.Options.worker("ledger-writer", prefix: "sim-dis")
        options.topLevelYAML = SimFixtures.yaml(ingestPort: 0)
        try await WorkerProcess.with(options) { fleet in
            // The worker runs once (creates its books and queue), then stops: events wait in its queue.
            try fleet.start()
            let readyWorker = await eventually(timeout: .seconds(30)) { await fleet.admin("/readyz")?.status == 200 }
            #expect(readyWorker)
            fleet.process?.signal(SIGTERM)
            _ = await fleet.process?.wait(timeout: .seconds(20))
            let (ingest, url) = try await startIngest(fleet)
            do {
                let command = try SimulateCommand.parse([
                    "--config", fleet.configPath, "--ingest-url", url, "--count", "40", "--seed", "5", "--run-id", "itdis",
                    "--settle-timeout", "1s",
                ])
                let report = try await command.execute()
                #expect(report.accepted == 40)
                #expect(!report.agree)
                #expect(report.text.contains("DISAGREE: ledger:"))
                #expect(report.checks.first { $0.name == "ledger" }?.status == .disagree)
            } catch {
                await ingest.killNow()
                throw error
            }
            await ingest.killNow()
        }
    }
}
