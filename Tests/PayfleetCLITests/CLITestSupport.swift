import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit

/// The demo worker (`payfleet-demo-worker`, table `applied`) under test for the CLI's suites.
extension WorkerProcess {
    static func demo(
        prefix: String, retryDelays: [String] = ["200ms", "400ms", "800ms"], _ body: (WorkerProcess) async throws -> Void
    ) async throws {
        var o = Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: prefix,
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.retryDelays = retryDelays
        try await with(o, body)
    }

    /// Distinct event ids the worker applied, and the number of rows (a double application
    /// would make rows exceed the distinct count).
    func appliedIDs() throws -> (ids: Set<String>, rows: Int) {
        guard let db = try database() else { return ([], 0) }
        let ids = try db.query("SELECT event_id FROM applied").compactMap { $0.string(0) }
        return (Set(ids), ids.count)
    }

    /// Ids of the messages in the DLQ, in queue order (read and returned, as `deadLetters`).
    func deadLetterIDs() async throws -> [String] {
        try await deadLetters().map { $0.messageID ?? "?" }
    }

    var auditPath: String { dir + "/state/audit.jsonl" }

    /// Runs the `payfleet` executable with this fleet's config; stdout and stderr separately.
    func cli(_ args: [String], environment: [String: String] = [:]) async throws -> CLIRun {
        try await CLIRun.run(args + ["--config", configPath], environment: environment, dir: dir)
    }

    /// Publishes `events` and waits until the DLQ holds `expectDLQ` messages.
    func deadLetter(_ events: [PaymentEvent], expectDLQ: Int) async throws -> Bool {
        let pub = publisher()
        defer { pub.close() }
        guard await pub.waitUntilConnected() else { return false }
        try await publish(events, via: pub)
        let reached = try await eventually(timeout: .seconds(120), every: .milliseconds(200)) {
            try await depth(topology.dlq) == expectDLQ
        }
        if !reached { await printWhyNoDeadLetters(expected: expectDLQ) }
        return reached
    }

    /// What a test that waited in vain for dead letters needs to know: the depths and the
    /// worker's log (its last lines).
    func printWhyNoDeadLetters(expected: Int) async {
        var lines = ["deadLetter: expected \(expected) in \(topology.dlq)"]
        let retries = topology.allQueues.indices.flatMap { p in topology.retryDelaysMS.map { topology.retryQueue(delayMS: $0, partition: p) } }
        for q in topology.allQueues + retries + [topology.dlq] {
            lines.append("  \(q): \((try? await depth(q)).map(String.init) ?? "?") messages")
        }
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("worker") && $0.hasSuffix(".log") }
        for name in logs.sorted() {
            let text = (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? ""
            lines.append("  \(name), last lines:")
            lines += text.split(separator: "\n").suffix(40).map { "    " + $0 }
        }
        print(lines.joined(separator: "\n"))
    }
}

/// One finished run of the `payfleet` executable.
struct CLIRun {
    var status: Int32
    var stdout: String
    var stderr: String

    var json: Any? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) }

    static func run(_ args: [String], environment: [String: String], dir: String) async throws -> CLIRun {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnvironment.binDir + "/payfleet")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "PAYFLEET_BROKER_MANAGEMENT_URL")
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let tag = UUID().uuidString.prefix(8)
        let outPath = dir + "/cli-\(tag).out"
        let errPath = dir + "/cli-\(tag).err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: outPath)
        p.standardError = FileHandle(forWritingAtPath: errPath)
        try p.run()
        while p.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        return CLIRun(
            status: p.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}

extension Array where Element == [String: Any] {
    func strings(_ key: String) -> [String] { compactMap { $0[key] as? String } }
}
