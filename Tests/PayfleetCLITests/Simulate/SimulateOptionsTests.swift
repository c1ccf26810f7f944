import Foundation
import PayfleetCLI
import Testing

/// Bad options and configurations are refused with a message naming the problem.
@Suite struct SimulateOptionsTests {
    func error(_ args: [String]) -> String? {
        do {
            _ = try SimulateCommand.parse(args)
            return nil
        } catch {
            return SimulateCommand.message(for: error)
        }
    }

    @Test(arguments: [
        ([] as [String], "give --rate R --duration S, or --count N"),
        (["--rate", "10"], "give --rate R --duration S, or --count N"),
        (["--duration", "10s"], "give --rate R --duration S, or --count N"),
        (["--rate", "10", "--duration", "5s", "--count", "3"], "give --rate R --duration S, or --count N"),
        (["--count", "0"], "--count: must be between 1 and 1000000"),
        (["--rate", "0", "--duration", "5s"], "--rate: must be between 0 and 100000"),
        (["--rate", "10", "--duration", "soon"], "--duration: 'soon' is not a positive duration"),
        (["--count", "5", "--concurrency", "0"], "--concurrency: must be between 1 and 256"),
        (["--count", "5", "--settle-timeout", "later"], "--settle-timeout: 'later' is not a duration"),
        (["--count", "5", "--run-id", "Bad_ID"], "--run-id: 'Bad_ID' must be 1–12 characters of [a-z0-9]"),
        (["--count", "5", "--ingest-url", "ftp://x"], "--ingest-url: 'ftp://x' is not an http(s) URL"),
        (["--count", "5", "--stripe-outage", "9:3"], "--stripe-outage: '9:3' is not FROM:TO"),
        (["--count", "5", "--stripe-outage", "10"], "--stripe-outage: '10' is not FROM:TO"),
        (["--count", "5", "--stripe-outage", "3:3"], "--stripe-outage: '3:3' is not FROM:TO"),
    ])
    func badOptions(args: [String], message: String) {
        let e = error(args)
        #expect(e?.contains(message) == true, "\(e ?? "accepted")")
    }

    @Test func goodOptions() throws {
        #expect(error(["--count", "300", "--seed", "9"]) == nil)
        let c = try SimulateCommand.parse(["--rate", "50", "--duration", "2m"])
        #expect(c.requestCount == 6000)
        #expect(try SimulateCommand.parse(["--rate", "20", "--duration", "1.5"]).requestCount == 30)
    }

    @Test func aConfigWithoutChannelsOrFileIsRefused() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sim-opt-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let missing = try SimulateCommand.parse(["--config", dir + "/nope.yaml", "--count", "3"])
        await #expect(throws: CLIFailure.self) { _ = try await missing.execute() }
        let path = dir + "/payfleet.yaml"
        try "merchants:\n  - id: m_x\n    currencies: [GBP]\ningest:\n  port: 1\n".write(toFile: path, atomically: true, encoding: .utf8)
        let none = try SimulateCommand.parse(["--config", path, "--count", "3"])
        do {
            _ = try await none.execute()
            Issue.record("accepted a config without channels")
        } catch let e as CLIFailure {
            #expect(e.message.contains("no merchant with currencies and a configured channel"))
        }
        try "merchants:\n  - id: m_x\n    timezone: Mars/Olympus\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try await none.execute()
            Issue.record("accepted a bad time zone")
        } catch let e as CLIFailure {
            #expect(e.message.contains("merchants[0].timezone"))
        }
    }
}

@Suite struct SimulatePreflightTests {
    /// Nothing listens: one clear line at once, instead of retrying every request.
    @Test func anIngestThatDoesNotAnswerIsNamed() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sim-pre-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/payfleet.yaml"
        try SimFixtures.yaml(ingestPort: 0).write(toFile: path, atomically: true, encoding: .utf8)
        let port = Int.random(in: 50_000...59_999)
        let command = try SimulateCommand.parse(["--config", path, "--count", "3", "--ingest-url", "http://127.0.0.1:\(port)"])
        let started = ContinuousClock.now
        do {
            _ = try await command.execute()
            Issue.record("ran without ingest")
        } catch let e as CLIFailure {
            #expect(e.message.hasPrefix("ingest at http://127.0.0.1:\(port) does not answer"), "\(e.message)")
        }
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}
