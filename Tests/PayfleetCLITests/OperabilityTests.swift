import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing
import Yams

@testable import PayfleetCLI

/// What an operator meets first (issue 14, defects 6–8): `--help` of every executable, `payfleet
/// status` listing exactly the processes the configuration runs (exit 0 = healthy), and `payfleet
/// dev down | logs` taking `--config` like every other command. The real executables from the
/// build directory.
@Suite(.serialized)
struct OperabilityTests {
    static let fleetWorkers = WorkerIdentity.fleet.map(\.name)

    /// Runs an executable of the build directory; stdout and stderr separately.
    static func run(_ executable: String, _ args: [String], environment: [String: String] = [:], dir: String)
        async throws -> CLIRun
    {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnvironment.binDir + "/" + executable)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let outPath = dir + "/\(executable)-\(UUID().uuidString.prefix(8)).out"
        let errPath = outPath + ".err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: outPath)
        p.standardError = FileHandle(forWritingAtPath: errPath)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = ContinuousClock.now + .seconds(120)
        while p.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        return CLIRun(
            status: p.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    // MARK: Defect 8

    @Test(
        "ingest, crm-sync, ledger-writer, receipt-sender, settlement-aggregator --help: usage and exit 0, no configuration read"
    )
    func everyExecutableAnswersHelp() async throws {
        let dir = TestEnvironment.makeTempDir("ops-help")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for exe in ["ingest"] + Self.fleetWorkers {
            for flag in ["--help", "-h"] {
                // A configuration that does not exist: --help must not need one.
                let r = try await Self.run(
                    exe, [flag], environment: ["PAYFLEET_CONFIG": dir + "/missing.yaml"], dir: dir)
                #expect(r.status == 0, "\(exe) \(flag) exited \(r.status): \(r.stderr)")
                #expect(r.stdout.hasPrefix("USAGE: \(exe) "), "\(exe) \(flag): \(r.stdout.prefix(200))")
                #expect(r.stdout.contains("--config FILE"))
                #expect(r.stderr.isEmpty, "\(exe) \(flag): \(r.stderr)")
            }
        }
    }

    // MARK: Defect 6

    @Test("The default configuration runs the fleet's four workers and ingest: no demo worker")
    func theDefaultConfigurationHasNoDemoWorker() throws {
        let ctx = try CLIContext.load(configPath: TestEnvironment.repoRoot + "/config/payfleet.yaml")
        #expect(ctx.configuredWorkers == Self.fleetWorkers)
    }

    @Test("The dev configuration lists the processes `dev up` runs, even from a base that configures the demo worker")
    func theDevConfigurationHasNoDemoWorker() throws {
        let dir = TestEnvironment.makeTempDir("ops-devcfg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try String(contentsOfFile: TestEnvironment.repoRoot + "/config/payfleet.yaml", encoding: .utf8)
        let withDemo = dir + "/base.yaml"
        try (base + "\ndemo-worker:\n  admin_port: 9190\n").write(toFile: withDemo, atomically: true, encoding: .utf8)
        for source in [TestEnvironment.repoRoot + "/config/payfleet.yaml", withDemo] {
            let dev = try DevLayout(stateDir: dir + "/dev")
            try dev.writeConfig(from: source, merchantsFile: nil)
            let ctx = try CLIContext.load(configPath: dev.configPath)
            #expect(ctx.configuredWorkers == Self.fleetWorkers, "\(source)")
            #expect(DevLayout.workers.map(\.name) == ctx.configuredWorkers)
        }
    }

    @Test("`payfleet status` on the default configuration with its topology declared: the four workers, exit 0")
    func statusOfAHealthyFleetExitsZero() async throws {
        let dir = TestEnvironment.makeTempDir("ops-status")
        let stem = TestEnvironment.uniqueName("ops")
        // The repository's configuration on the test broker, with queue names of this test,
        // no admin ports probed (no worker runs here) and no ingest to probe.
        let text = try String(contentsOfFile: TestEnvironment.repoRoot + "/config/payfleet.yaml", encoding: .utf8)
        var doc = try #require(try Yams.load(yaml: text) as? [String: Any])
        doc["broker"] = ["url": TestEnvironment.amqpURL]
        doc["state_dir"] = dir + "/state"
        doc["ingest"] = nil
        for (section, value) in doc {
            guard Self.fleetWorkers.contains(section) || section == "demo-worker", var s = value as? [String: Any]
            else { continue }
            s["name"] = "\(stem)-\(section)"
            s["admin_port"] = 0
            doc[section] = s
        }
        let config = dir + "/payfleet.yaml"
        try Yams.dump(object: doc, sortKeys: true).write(toFile: config, atomically: true, encoding: .utf8)
        let ctx = try CLIContext.load(configPath: config)
        defer {
            try? FileManager.default.removeItem(atPath: dir)
        }
        do {
            let declare = try await Self.run("payfleet", ["topology", "declare", "--config", config], dir: dir)
            #expect(declare.status == 0, "\(declare.stderr)")
            let status = try await Self.run(
                "payfleet", ["status", "--config", config, "--json", "--no-management"], dir: dir)
            #expect(status.status == 0, "status exited \(status.status): \(status.stderr) \(status.stdout)")
            let o = try #require(status.json as? [String: Any], "\(status.stdout)")
            let rows = try #require(o["workers"] as? [[String: Any]])
            #expect(Set(rows.strings("name")) == Set(Self.fleetWorkers.map { "\(stem)-\($0)" }))
            #expect(!rows.strings("name").contains { $0.contains("demo") })
        } catch {
            await Self.deleteTopology(ctx)
            throw error
        }
        await Self.deleteTopology(ctx)
    }

    static func deleteTopology(_ ctx: CLIContext) async {
        guard let s = try? await AMQPSession.connect(ctx.amqp) else { return }
        _ = try? await s.declare { d in
            for w in ctx.workers {
                for q in w.declarations.queues { try d.delete(queue: q.name) }
                for e in w.declarations.exchanges where e.name != Topology.eventsExchange {
                    try d.delete(exchange: e.name)
                }
            }
        }
        await s.close()
    }

    // MARK: Defect 7

    /// A state directory as `payfleet dev up` leaves it, with a stand-in for the supervisor
    /// (a process of this test) and a broker on ports nothing listens on.
    static func fakeDevDir() throws -> (dir: String, config: String) {
        let dir = TestEnvironment.makeTempDir("ops-dev")
        for d in ["run", "logs", "state"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + d, withIntermediateDirectories: true)
        }
        let port = Int.random(in: 51_000...58_000)
        let yaml = """
            # Generated by `payfleet dev up` from config/payfleet.yaml; pass it as --config to other commands.
            broker:
              url: amqp://guest:guest@127.0.0.1:\(port)/
              management_url: http://guest:guest@127.0.0.1:\(port + 1)/
            state_dir: \(dir)/state
            ingest:
              port: \(port + 10)

            """
        try yaml.write(toFile: dir + "/payfleet.yaml", atomically: true, encoding: .utf8)
        try "ingest started\nlistening on port \(port + 10)\n".write(
            toFile: dir + "/logs/ingest.log", atomically: true, encoding: .utf8)
        return (dir, dir + "/payfleet.yaml")
    }

    @Test("`payfleet dev down --config DIR/payfleet.yaml` stops that fleet (its supervisor) and exits 0")
    func devDownTakesConfig() async throws {
        let (dir, config) = try Self.fakeDevDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let supervisor = Process()
        // Exits 0 on SIGTERM, as the supervisor does after stopping its processes (a handler of
        // its own, SIGTERM unblocked: the test runner's children inherit it blocked).
        supervisor.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        supervisor.arguments = [
            "-c",
            "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nsignal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])\ntime.sleep(300)",
        ]
        try supervisor.run()
        try await Task.sleep(for: .milliseconds(300))  // its handler installed
        defer { if supervisor.isRunning { kill(supervisor.processIdentifier, SIGKILL) } }
        try "\(supervisor.processIdentifier)\n".write(
            toFile: dir + "/run/supervisor.pid", atomically: true, encoding: .utf8)

        let r = try await Self.run("payfleet", ["dev", "down", "--config", config], dir: dir)
        #expect(r.status == 0, "dev down --config exited \(r.status): \(r.stderr)")
        #expect(
            r.stdout.contains("Payfleet stopped (state kept in \(URL(fileURLWithPath: dir).standardized.path))"),
            "\(r.stdout)")
        // Stopped: SIGTERM ended it (this test is its parent and reaps it).
        let stopped = await eventually(timeout: .seconds(20)) { !supervisor.isRunning }
        #expect(stopped, "dev down left the supervisor running")
        if !stopped { kill(supervisor.processIdentifier, SIGKILL) }
        supervisor.waitUntilExit()
        #expect(supervisor.terminationReason == .exit && supervisor.terminationStatus == 0, "not stopped by SIGTERM")
        #expect(!FileManager.default.fileExists(atPath: dir + "/run/supervisor.pid"))
    }

    @Test("`payfleet dev logs --config FILE` shows that fleet's logs; a file `dev up` did not write is refused, named")
    func devLogsTakesConfig() async throws {
        let (dir, config) = try Self.fakeDevDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try await Self.run("payfleet", ["dev", "logs", "ingest", "--config", config], dir: dir)
        #expect(r.status == 0, "dev logs --config exited \(r.status): \(r.stderr)")
        #expect(r.stdout.contains("listening on port"))

        let other = dir + "/state/other.yaml"
        try "broker:\n  url: amqp://guest:guest@127.0.0.1:1/\n".write(toFile: other, atomically: true, encoding: .utf8)
        let refused = try await Self.run("payfleet", ["dev", "down", "--config", other], dir: dir)
        #expect(refused.status != 0)
        #expect(refused.status != 64, "--config is an option of dev down")
        #expect(refused.stderr.contains("--config"), "\(refused.stderr)")
    }
}
