import ArgumentParser
import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetTestKit
import Testing

/// The real `ledger-writer` process against the private broker, then `payfleet ledger balance`.
@Suite(.serialized) struct LedgerIntegrationTests {
    /// `payfleet ledger balance --json` parsed into balances.
    static func parseBalanceJSON(_ text: String) throws -> [String: Int64] {
        let data = Data(text.utf8)
        let array = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        var out: [String: Int64] = [:]
        for o in array {
            let account = try #require(o["account"] as? String)
            let currency = try #require(o["currency"] as? String)
            let balance = try #require((o["balance"] as? NSNumber)?.int64Value)
            out["\(account) \(currency)"] = balance
        }
        return out
    }

    @Test("ledger-writer posts a 2,000-event stream with duplicates, then all of it redelivered; ledger balance --json shows the expected balances")
    func workerAndCLI() async throws {
        try await LedgerFleet.with(prefix: "ledger") { fleet in
            let stream = LedgerStream(total: 2_000, seed: 2026, prefix: fleet.name)
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(stream.events, via: pub)
            try fleet.start()
            let done = try await eventually(timeout: .seconds(180)) {
                try fleet.recorded() >= stream.uniqueCount
            }
            #expect(done, "expected \(stream.uniqueCount) events recorded; log: \(fleet.process?.log.suffix(2000) ?? "")")
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.queue) == 0 })

            // The CLI library, parsed exactly as the command line would be.
            let command = try PayfleetCommand.parseAsRoot(["ledger", "balance", "--json", "--config", fleet.configPath])
            let balance = try #require(command as? LedgerCommand.Balance)
            let json = try balance.output()
            #expect(try Self.parseBalanceJSON(json) == stream.expected)

            // Redelivery of every event changes nothing.
            try await fleet.publish(stream.events, via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(60)) { try await fleet.depth(fleet.queue) == 0 })
            try await Task.sleep(for: .milliseconds(500))
            #expect(try fleet.recorded() == stream.uniqueCount)
            #expect(try Self.parseBalanceJSON(try balance.output()) == stream.expected)
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)

            // The built `payfleet` binary, when present beside the worker, prints the same JSON.
            let binary = TestEnvironment.binDir + "/payfleet"
            if FileManager.default.isExecutableFile(atPath: binary) {
                let (status, out) = try AccountingTools.run(binary, ["ledger", "balance", "--json", "--config", fleet.configPath])
                #expect(status == 0, "\(out)")
                #expect(try Self.parseBalanceJSON(out) == stream.expected)
                let (csvStatus, csv) = try AccountingTools.run(
                    binary, ["ledger", "export", "--format", "csv", "--config", fleet.configPath])
                #expect(csvStatus == 0)
                #expect(csv.hasPrefix("date,transaction_id,event_id,merchant_id,account,currency,amount\n"))
            }

            // SIGTERM: graceful stop, exit 0.
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }

    /// Drains `events` (published before the worker starts) and returns events/s, timed from
    /// the first recorded event to the last, so process start-up is not counted.
    static func throughput(worker: String, events: [PaymentEvent], unique: Int) async throws -> Double {
        var rate = 0.0
        try await LedgerFleet.with(prefix: "bench", worker: worker) { fleet in
            try await fleet.declare()
            let pub = fleet.publisher()
            _ = await pub.waitUntilConnected()
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            _ = try await eventually(timeout: .seconds(120), every: .milliseconds(2)) { try fleet.recorded() > 0 }
            let first = ContinuousClock.now
            let firstCount = try fleet.recorded()
            let done = try await eventually(timeout: .seconds(600), every: .milliseconds(10)) {
                try fleet.recorded() >= unique
            }
            let elapsed = ContinuousClock.now - first
            #expect(done, "\(worker) drained")
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            rate = Double(unique - firstCount) / max(seconds, 0.001)
        }
        return rate
    }

    @Test(
        "Benchmark: events/s through ledger-writer vs the runtime's demonstration handler (PAYFLEET_LEDGER_BENCH=N)",
        .enabled(if: ProcessInfo.processInfo.environment["PAYFLEET_LEDGER_BENCH"] != nil, "set PAYFLEET_LEDGER_BENCH=N to run"))
    func benchmark() async throws {
        let n = Int(ProcessInfo.processInfo.environment["PAYFLEET_LEDGER_BENCH"] ?? "") ?? 20_000
        let stream = LedgerStream(total: n, seed: 11, prefix: "bench")
        // The baseline gets the same unique events (its table has no dedupe of its own).
        var seen = Set<String>()
        let unique = stream.events.filter { seen.insert($0.id).inserted }
        let baseline = try await Self.throughput(worker: "demo-worker", events: unique, unique: unique.count)
        let ledger = try await Self.throughput(worker: "ledger-writer", events: unique, unique: unique.count)
        let line = String(
            format: "ledger-writer benchmark: %d events; demo-worker %.0f events/s, ledger-writer %.0f events/s, ratio %.2f",
            unique.count, baseline, ledger, ledger / baseline)
        print(line)
        FileHandle.standardError.write(Data((line + "\n").utf8))
        #expect(ledger > 0 && baseline > 0)
    }
}
