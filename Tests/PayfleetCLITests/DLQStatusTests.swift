import Foundation
import PayfleetAMQP
import PayfleetCLI
import PayfleetCore
import PayfleetTestKit
import Testing

/// Investigation status of dead-letter groups (issue 18 item 3): set through `payfleet dlq
/// status`, kept as audit-log lines, shown by `dlq list --group-by error` (table and JSON).
@Suite(.serialized)
struct DLQStatusTests {
    @Test("open → investigating (by, note) → ignored: each change one audit line, the latest shown in the group listing")
    func statusThroughTheListing() async throws {
        try await WorkerProcess.demo(prefix: "cli-status") { fleet in
            try await fleet.declare()
            try fleet.start()
            let permanent = (0..<6).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "permanent"]) }
            let invalid = (6..<10).map { EventFactory.payment($0, prefix: fleet.name, amount: -5) }
            #expect(try await fleet.deadLetter(permanent + invalid, expectDLQ: 10))

            func groups() async throws -> [[String: Any]] {
                let r = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
                #expect(r.status == 0, "\(r.stderr)")
                return r.json as? [[String: Any]] ?? []
            }
            var g = try await groups()
            #expect(g.count == 2)
            // No status yet: every group is open.
            #expect(g.allSatisfy { $0["status"] as? String == "open" && $0["status_note"] is NSNull })
            let perm = try #require(g.first { $0["error_class"] as? String == "DemoPermanent" }?["fingerprint"] as? String)
            let inv = try #require(g.first { $0["error_class"] as? String == "InvalidEvent" }?["fingerprint"] as? String)

            let set = try await fleet.cli([
                "dlq", "status", fleet.name, perm, "investigating", "--by", "alice", "--note", "CRM-4411: connector mapping",
            ])
            #expect(set.status == 0, "\(set.stderr)")
            #expect(set.stdout.contains("group \(perm) of \(fleet.name): investigating (alice) — CRM-4411: connector mapping"))
            let ignore = try await fleet.cli(["dlq", "status", "demo-worker", inv, "ignored", "--note", "test data", "--json"])
            #expect(ignore.status == 0, "\(ignore.stderr)")
            #expect((ignore.json as? [String: Any])?["status"] as? String == "ignored")

            g = try await groups()
            let p = try #require(g.first { $0["fingerprint"] as? String == perm })
            #expect(p["status"] as? String == "investigating")
            #expect(p["status_by"] as? String == "alice")
            #expect(p["status_note"] as? String == "CRM-4411: connector mapping")
            #expect((p["status_at"] as? String).flatMap(RFC3339.parse) != nil)
            #expect(g.first { $0["fingerprint"] as? String == inv }?["status"] as? String == "ignored")
            let table = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error"])
            #expect(table.stdout.contains("STATUS"), "\(table.stdout)")
            #expect(table.stdout.split(separator: "\n").contains { $0.contains(perm) && $0.contains("investigating (alice)") && $0.contains("CRM-4411") })
            #expect(table.stdout.split(separator: "\n").contains { $0.contains(inv) && $0.contains("ignored") })

            // Back to open; the history stays in the audit log, one line per change.
            #expect(try await fleet.cli(["dlq", "status", fleet.name, perm, "open"]).status == 0)
            g = try await groups()
            #expect(g.first { $0["fingerprint"] as? String == perm }?["status"] as? String == "open")
            // One audit line per change, in order (read as text: the lines as the CLI wrote them).
            let text = try String(contentsOfFile: fleet.auditPath, encoding: .utf8)
            let audit = text.split(separator: "\n").filter { $0.contains(#""action":"dlq.group_status""#) }
            #expect(audit.count == 3, "\(text)")
            for (line, state) in zip(audit, ["investigating", "ignored", "open"]) {
                #expect(line.contains(#""state":"\#(state)""#), "\(line)")
                #expect(line.contains(#""worker":"\#(fleet.name)""#) && line.contains(#""user":""#) && line.contains(#""at":""#))
            }
            #expect(audit.first?.contains(#""note":"CRM-4411: connector mapping""#) == true)
            let list = try await fleet.cli(["dlq", "status", fleet.name, "--json"])
            #expect((list.json as? [[String: Any]])?.count == 2)
            // Setting a status moved no letter.
            #expect(try await fleet.depth(fleet.topology.dlq) == 10)
        }
    }

    @Test("Refused, naming the problem, nothing written: a bad group id, a bad state, a note with a line break, a state without a group")
    func refusals() async throws {
        let dir = TestEnvironment.makeTempDir("cli-status-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/payfleet.yaml"
        try "broker:\n  url: \(TestEnvironment.amqpURL)\nstate_dir: \(dir)/state\ncrm-sync: {}\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        func run(_ args: [String]) async throws -> CLIRun {
            try await CLIRun.run(["dlq", "status", "crm-sync"] + args + ["--config", config], environment: [:], dir: dir)
        }
        let cases: [([String], String)] = [
            (["zz12", "ignored"], "is not a group id (8 hex digits"),
            (["0a1b2c3d", "closed"], "closed"),
            (["0a1b2c3d", "ignored", "--note", "line\nbreak"], "--note: no control characters"),
            (["0a1b2c3d", "ignored", "--note", String(repeating: "n", count: 1001)], "--note: at most 1000 characters"),
            (["0a1b2c3d"], "give the state too"),
            (["--note", "x"], "--by and --note need GROUP and STATE"),
        ]
        for (args, message) in cases {
            let r = try await run(args)
            #expect(r.status != 0, "\(args)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/state/audit.jsonl"))
        let ok = try await run(["0A1B2C3D", "investigating"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let lines = try JSONLines.read(dir + "/state/audit.jsonl")
        #expect(lines.count == 1)
        #expect(lines.first?["group"] as? String == "0a1b2c3d")
        #expect(lines.first?["by"] as? String == lines.first?["user"] as? String)
    }
}
