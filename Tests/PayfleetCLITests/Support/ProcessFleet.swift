import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetTestKit
import Testing
import Yams

@testable import PayfleetCLI

/// Ingest and the four workers as real processes on the private broker, configured from the
/// repository's `config/payfleet.yaml` (sandbox CRM and receipts) with names of their own, so a
/// suite's fleet shares nothing with another's. `TraceFleetTests`, `TracingFleetTests` and
/// `BackfillFleetTests` run on it; each changes the configuration through `edit`.
final class ProcessFleet: @unchecked Sendable {
    static let workers = WorkerIdentity.fleet.map(\.name)

    let dir: String
    /// The prefix of every worker's name (queues `payfleet.<stem>-<worker>`, state files).
    let stem: String
    var processes: [String: ChildProcess] = [:]
    var ingestURL = ""
    var config: String { dir + "/payfleet.yaml" }
    var state: String { dir + "/state" }
    /// Changes to the configuration before it is written.
    var edit: (inout [String: Any]) -> Void = { _ in }

    init(_ prefix: String) {
        dir = TestEnvironment.makeTempDir("\(prefix)-fleet")
        stem = TestEnvironment.uniqueName(prefix)
    }

    /// The stem's unique tail (digits and letters), for ids that must not meet another run's.
    var tag: String { String(stem.split(separator: "-").last!) }

    func write() throws {
        let text = try String(contentsOfFile: TestEnvironment.repoRoot + "/config/payfleet.yaml", encoding: .utf8)
        var doc = try #require(try Yams.load(yaml: text) as? [String: Any])
        doc["broker"] = ["url": TestEnvironment.amqpURL]
        doc["state_dir"] = state
        var ingest = try #require(doc["ingest"] as? [String: Any])
        ingest["port"] = 0
        doc["ingest"] = ingest
        for w in Self.workers {
            var s = (doc[w] as? [String: Any]) ?? [:]
            s["name"] = "\(stem)-\(w)"
            s["admin_port"] = 0
            s["retry_delays"] = ["200ms", "400ms"]
            // No shared day_closed feed queue left behind on the broker for other suites.
            if w == "settlement-aggregator" { s["day_closed_queue"] = "" }
            doc[w] = s
        }
        edit(&doc)
        try Yams.dump(object: doc, sortKeys: true).write(toFile: config, atomically: true, encoding: .utf8)
    }

    func start(_ name: String) throws {
        processes[name] = try ChildProcess(
            executable: TestEnvironment.binDir + "/" + name, arguments: ["--config", config],
            environment: ["PAYFLEET_READY_FILE": dir + "/\(name).ready"], logPath: dir + "/\(name).log")
    }

    /// The port a process wrote into its ready file (ingest's HTTP port, a worker's admin port).
    func port(_ name: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: dir + "/\(name).ready"),
            let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let p = (o["port"] ?? o["admin_port"]) as? Int, p > 0
        else { return nil }
        return p
    }

    /// Writes the configuration, starts the workers and then ingest, and waits for each to be ready.
    func startAll() async throws {
        try write()
        for w in Self.workers { try start(w) }
        try start("ingest")
        for name in Self.workers + ["ingest"] {
            let up = await eventually(timeout: .seconds(60)) { self.port(name) != nil }
            if !up { throw TestFailure("\(name) did not start: \(processes[name]?.log ?? "")") }
        }
        ingestURL = "http://127.0.0.1:\(port("ingest")!)"
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s), deletes the fleet's queues and
    /// exchanges and, unless `PAYFLEET_TEST_KEEP` is set, its directory.
    func stop() async {
        for (_, p) in processes { p.signal(SIGTERM) }
        for (_, p) in processes where await p.wait(timeout: .seconds(20)) == nil { await p.killNow() }
        if let ctx = try? CLIContext.load(configPath: config) { await OperabilityTests.deleteTopology(ctx) }
        if ProcessInfo.processInfo.environment["PAYFLEET_TEST_KEEP"] == nil { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Points ingest's Stripe API client at `server` with `key` in a 0600 `api_key_file` (the
    /// fee fetcher and backfill use it).
    func useStripeAPI(_ server: LoopbackStripe, key: String) throws {
        let keyFile = dir + "/stripe-api-key"
        try key.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        let api = server.url
        edit = { doc in
            var ingest = doc["ingest"] as? [String: Any] ?? [:]
            var stripe = ingest["stripe"] as? [String: Any] ?? [:]
            stripe["api_key_file"] = keyFile
            stripe["api_base"] = api
            ingest["stripe"] = stripe
            doc["ingest"] = ingest
        }
    }

    /// `startAll`, `body`, and `stop` whatever `body` did.
    func run(_ body: (ProcessFleet) async throws -> Void) async throws {
        do {
            try await startAll()
            try await body(self)
        } catch {
            await stop()
            throw error
        }
        await stop()
    }

    /// POST /v1/events with the sandbox API key (and a `traceparent` when given); the canonical
    /// id ingest answers.
    func send(_ event: [String: Any], key: String, traceparent: String? = nil) async throws -> String {
        var r = URLRequest(url: URL(string: ingestURL + "/v1/events")!)
        r.httpMethod = "POST"
        r.setValue("Bearer \(DevCommand.sandboxAPIKey)", forHTTPHeaderField: "Authorization")
        r.setValue(key, forHTTPHeaderField: "Idempotency-Key")
        r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        if let traceparent { r.setValue(traceparent, forHTTPHeaderField: "traceparent") }
        r.httpBody = try JSONSerialization.data(withJSONObject: event)
        let (data, response) = try await URLSession.shared.data(for: r)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 202, let o = try JSONSerialization.jsonObject(with: data) as? [String: Any], let id = o["id"] as? String
        else { throw TestFailure("ingest answered \(status): \(String(decoding: data, as: UTF8.self))") }
        return id
    }

    /// `payfleet trace ID --json`, parsed.
    func trace(_ id: String) async throws -> [String: Any] {
        let r = try await CLIRun.run(["trace", id, "--json", "--config", config], environment: [:], dir: dir)
        guard r.status == 0, let o = r.json as? [String: Any] else {
            throw TestFailure("trace \(id) exited \(r.status): \(r.stderr) \(r.stdout.prefix(500))")
        }
        return o
    }

    /// A canonical event as a phone-payment source sends it to `/v1/events`: merchant `m_acme`,
    /// GBP, a customer with email and phone (the sandbox receipts need both).
    static func phoneEvent(
        _ type: String, _ sourceID: String, occurredAt: Date, customer: String, payment: String, amount: Int64, fee: Int64?,
        extra: [String: Any] = [:]
    ) -> [String: Any] {
        var e: [String: Any] = [
            "schema": "payfleet.event/v1", "type": type, "occurred_at": RFC3339.format(occurredAt),
            "source": ["provider": "phonepay", "event_id": sourceID], "merchant_id": "m_acme",
            "customer": ["id": customer, "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+447700900123"],
            "payment": ["id": payment, "channel": "phone", "method": "card"],
            "amount": ["value": amount, "currency": "GBP"],
        ]
        if let fee { e["fee"] = ["value": fee, "currency": "GBP"] }
        for (k, v) in extra { e[k] = v }
        return e
    }
}
