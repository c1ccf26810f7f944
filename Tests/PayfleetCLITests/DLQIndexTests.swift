import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The dead-letter index (issue 18 item 3, migration runtime.3): the runtime writes each dead
/// letter's summary into its state file, `payfleet dlq list` answers from it, `trace` shows it,
/// and the commands that change the queue keep it in line with the queue (the source of truth).
/// A real broker, the real demo worker, the real `payfleet` executable, real SQLite files.
@Suite(.serialized)
struct DLQIndexTests {
    /// (event id, copies) of the index, read straight from the worker's state file.
    static func indexed(_ fleet: WorkerProcess) throws -> [String: Int] {
        guard let db = try fleet.database() else { return [:] }
        var out: [String: Int] = [:]
        for r in try db.query("SELECT event_id, copies FROM dead_letters") { out[r.string(0) ?? "?"] = Int(r.int(1) ?? 0) }
        return out
    }

    /// The queue's ids with their counts (copies), read and returned.
    static func queued(_ fleet: WorkerProcess) async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for id in try await fleet.deadLetterIDs() { out[id, default: 0] += 1 }
        return out
    }

    @Test("the runtime indexes each dead letter (summary only); list, --group-by error and the filters answer from the index; trace shows the letter")
    func runtimeIndexListAndTrace() async throws {
        try await WorkerProcess.demo(prefix: "cli-dlqidx") { fleet in
            try await fleet.declare()
            try fleet.start()
            let a = (0..<6).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_ia", metadata: ["demo_fault": "permanent"]) }
            let b = (6..<10).map {
                EventFactory.payment($0, prefix: fleet.name, type: .paymentRefunded, merchant: "m_ib", metadata: ["demo_fault": "permanent"])
            }
            let all = a + b
            #expect(try await fleet.deadLetter(all, expectDLQ: 10))
            // The index holds exactly the queue's letters (written before each ack).
            #expect(try await eventually(timeout: .seconds(10)) { try Self.indexed(fleet).count == 10 })
            #expect(try Self.indexed(fleet) == (try await Self.queued(fleet)))
            #expect(Set(try Self.indexed(fleet).keys) == Set(all.map(\.id)))
            let db = try #require(try fleet.database())
            let row = try #require(try db.queryOne(
                "SELECT type, merchant_id, customer_id, error_class, queue, attempts, first_failed_at FROM dead_letters WHERE event_id = ?",
                [.text(b[0].id)]))
            #expect(row.string(0) == "payment.refunded")
            #expect(row.string(1) == "m_ib")
            #expect(row.string(2) == b[0].customer?.id)
            #expect(row.string(3) == "DemoPermanent")
            #expect(row.string(4) == fleet.topology.dlq)
            #expect(row.int(5) == 1)
            #expect(row.string(6) != nil)
            // A summary, not the event: no customer's name or email, no card, no body. (The card's
            // "4242" as a bare substring would also match a millisecond timestamp such as
            // 1796424242xxx: the test looks for the card's fields instead.)
            let dump = try db.query("SELECT * FROM dead_letters").map { r in (0..<15).compactMap { r.string($0) }.joined(separator: " ") }
                .joined(separator: "\n")
            for secret in ["@example.com", "Customer ", "last4", "\"4242\"", "visa", "\"amount\"", "{"] {
                #expect(!dump.contains(secret), "dead_letters holds \(secret): \(dump)")
            }
            #expect(try db.queryOne("SELECT 1 FROM schema_migrations WHERE id = 'runtime.3'") != nil)

            func listed(_ args: [String]) async throws -> [String] {
                let r = try await fleet.cli(["dlq", "list", fleet.name, "--json", "--from", "index"] + args)
                #expect(r.status == 0, "\(r.stderr)")
                return (r.json as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            }
            #expect(Set(try await listed([])) == Set(all.map(\.id)))
            #expect(Set(try await listed(["--merchant", "m_ia"])) == Set(a.map(\.id)))
            #expect(Set(try await listed(["--type", "payment.refunded"])) == Set(b.map(\.id)))
            #expect(try await listed(["--type", "dispute.opened"]).isEmpty)
            let cus = try #require(a[0].customer?.id)
            #expect(Set(try await listed(["--customer", cus])) == Set(all.filter { $0.customer?.id == cus }.map(\.id)))
            #expect(try await listed(["--since", "1h"]).count == 10)
            #expect(try await listed(["--since", RFC3339.format(Date().addingTimeInterval(3600))]).isEmpty)
            #expect(try await listed(["--limit", "3"]).count == 3)

            // The index and the queue give the same groups and the same rows.
            let gi = try await fleet.cli(["dlq", "list", fleet.name, "--json", "--group-by", "error", "--from", "index"])
            let gq = try await fleet.cli(["dlq", "list", fleet.name, "--json", "--group-by", "error", "--from", "queue"])
            let groupsI = gi.json as? [[String: Any]] ?? []
            let groupsQ = gq.json as? [[String: Any]] ?? []
            #expect(groupsI.count == 1, "\(gi.stdout) \(gi.stderr)")
            #expect(groupsI.first?["count"] as? Int == 10)
            #expect(groupsI.first?["error_class"] as? String == "DemoPermanent")
            #expect(groupsI.map { $0["fingerprint"] as? String } == groupsQ.map { $0["fingerprint"] as? String })
            #expect(Set(groupsI.first?["ids"] as? [String] ?? []) == Set(groupsQ.first?["ids"] as? [String] ?? []))
            let ti = try await fleet.cli(["dlq", "list", fleet.name, "--from", "index"])
            let tq = try await fleet.cli(["dlq", "list", fleet.name, "--from", "queue"])
            #expect(Set(ti.stdout.split(separator: "\n")) == Set(tq.stdout.split(separator: "\n")), "\(ti.stdout)\n--\n\(tq.stdout)")
            #expect(ti.stdout.contains("10 dead letters"))

            // trace: the event's dead letter from the index (queue, error, attempts).
            let trace = try await fleet.cli(["trace", a[0].id, "--json"])
            #expect(trace.status == 0, "\(trace.stderr)")
            let steps = (trace.json as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let dead = steps.filter { $0["step"] as? String == "dead_letter" }
            #expect(dead.count == 1, "\(trace.stdout)")
            let fields = dead.first?["details"] as? [String: Any] ?? [:]
            #expect(fields["queue"] as? String == fleet.topology.dlq, "\(dead)")
            #expect((fields["error"] as? String)?.hasPrefix("DemoPermanent") == true, "\(dead)")
            let text = try await fleet.cli(["trace", a[0].id])
            #expect(text.stdout.contains("dead_letter") && !text.stdout.contains("no index"), "\(text.stdout)")
        }
    }

    @Test("a letter the index lacks: list reads the queue, says so and fixes the index; replay --max N and the retention refusal / --force leave index and queue in agreement")
    func replayKeepsTheIndexInLine() async throws {
        try await WorkerProcess.demo(prefix: "cli-dlqrep") { fleet in
            try await fleet.declare()
            try fleet.start()
            // transient:4 is past the 3 retry tiers, so dead-lettered; it applies when replayed.
            let letters = (0..<5).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_ir", metadata: ["demo_fault": "transient:4"]) }
            #expect(try await fleet.deadLetter(letters, expectDLQ: 5))
            #expect(try await eventually(timeout: .seconds(10)) { try Self.indexed(fleet).count == 5 })

            // Published straight into the DLQ (as the broker's delivery limit would): not indexed.
            // First failed 40 days ago, past the 35-day processed_retention.
            let old = EventFactory.payment(99, prefix: fleet.name, merchant: "m_ir")
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await pub.publish(AMQPOutgoing(
                exchange: "", routingKey: fleet.topology.dlq,
                message: AMQPMessage(
                    body: EventFactory.body(old), messageID: old.id,
                    headers: [
                        "x-payfleet-error": .string("DemoPermanent: old failure"), "x-payfleet-attempts": .int(1),
                        "x-payfleet-first-failed-at": .string(RFC3339.format(Date().addingTimeInterval(-40 * 86_400))),
                    ], persistent: true)))
            pub.close()
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 6 })
            #expect(try Self.indexed(fleet)[old.id] == nil)

            // --from index shows the index as it is, with a warning.
            let stale = try await fleet.cli(["dlq", "list", fleet.name, "--json", "--from", "index"])
            #expect((stale.json as? [[String: Any]])?.count == 5)
            #expect(stale.stderr.contains("index holds 5") && stale.stderr.contains("6"), "\(stale.stderr)")
            // auto: the counts differ, so the queue is read, the operator told, the index fixed.
            let auto = try await fleet.cli(["dlq", "list", fleet.name, "--json"])
            #expect(auto.status == 0, "\(auto.stderr)")
            #expect((auto.json as? [[String: Any]])?.count == 6)
            #expect(auto.stderr.contains("read the queue") && auto.stderr.contains("1 added"), "\(auto.stderr)")
            #expect(try Self.indexed(fleet) == (try await Self.queued(fleet)))
            let fromIndex = try await fleet.cli(["dlq", "list", fleet.name, "--json"])
            #expect(fromIndex.stderr.isEmpty, "\(fromIndex.stderr)")
            #expect((fromIndex.json as? [[String: Any]])?.count == 6)

            // replay --max 2: two replayed (and applied); it stops reading there, so the old one
            // (last in the queue) is not reached; the index takes out just the two.
            let capped = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--max", "2", "--json"])
            let cj = capped.json as? [String: Any] ?? [:]
            let replayed = cj["replayed"] as? [String] ?? []
            #expect(replayed.count == 2, "\(capped.stdout) \(capped.stderr)")
            #expect(Set(replayed).isSubset(of: Set(letters.map(\.id))))
            #expect(cj["read"] as? Int == 2 && cj["read_whole_queue"] as? Bool == false, "\(cj)")
            #expect(capped.status == 0, "\(capped.stderr)")
            #expect(try await eventually(timeout: .seconds(30)) { Set(replayed).isSubset(of: try fleet.appliedIDs().ids) })
            let afterMax = try await Self.queued(fleet)
            #expect(afterMax.count == 4)
            #expect(Set(afterMax.keys) == Set(letters.map(\.id) + [old.id]).subtracting(replayed))
            #expect(try Self.indexed(fleet) == afterMax)

            // A --max past what is there reads the whole queue: three replayed, the old one
            // refused (exit 1, why, --force); the index is what the read found.
            let wide = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--max", "10", "--json"])
            let wj = wide.json as? [String: Any] ?? [:]
            #expect((wj["replayed"] as? [String])?.count == 3, "\(wide.stdout) \(wide.stderr)")
            #expect(wj["refused_older_than_retention"] as? [String] == [old.id])
            #expect(wj["read_whole_queue"] as? Bool == true)
            #expect(wide.status == 1)
            #expect(wide.stderr.contains("processed_retention") && wide.stderr.contains("--force"), "\(wide.stderr)")
            let afterWide = try await Self.queued(fleet)
            #expect(Set(afterWide.keys) == [old.id])
            #expect(try Self.indexed(fleet) == afterWide)

            // --force replays the old one; it leaves queue and index.
            let forced = try await fleet.cli(["dlq", "replay", fleet.name, "--id", old.id, "--force", "--json"])
            #expect(forced.status == 0, "\(forced.stderr)")
            #expect((forced.json as? [String: Any])?["replayed"] as? [String] == [old.id])
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.appliedIDs().ids.contains(old.id) })
            let afterForce = try await Self.queued(fleet)
            #expect(afterForce.isEmpty)
            #expect(try Self.indexed(fleet) == afterForce)

            // Nothing left: index and queue both empty; the worker applied each event once.
            let rest = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--json"])
            #expect(rest.status == 0, "\(rest.stderr)")
            #expect((rest.json as? [String: Any])?["replayed"] as? [String] == [])
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.appliedIDs().ids.count == 6 })
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(try Self.indexed(fleet).isEmpty)
            #expect(try fleet.appliedIDs().rows == 6)
            let trace = try await fleet.cli(["trace", old.id, "--json"])
            let steps = (trace.json as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            #expect(!steps.contains { $0["step"] as? String == "dead_letter" }, "\(trace.stdout) \(trace.stderr)")
        }
    }

    @Test("purge and edit remove their letters from the index")
    func purgeAndEditLeaveTheIndex() async throws {
        try await WorkerProcess.demo(prefix: "cli-dlqpur") { fleet in
            try await fleet.declare()
            try fleet.start()
            let letters = (0..<3).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_ip", metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(letters, expectDLQ: 3))
            #expect(try await eventually(timeout: .seconds(10)) { try Self.indexed(fleet).count == 3 })
            let purge = try await fleet.cli(["dlq", "purge", fleet.name, "--id", letters[0].id, "--archive", fleet.dir + "/purged.jsonl"])
            #expect(purge.status == 0, "\(purge.stderr)")
            #expect(Set(try Self.indexed(fleet).keys) == Set([letters[1].id, letters[2].id]))
            #expect(try Self.indexed(fleet) == (try await Self.queued(fleet)))
            // Edited to a fault that no longer fails: replayed, applied, out of queue and index.
            let edit = try await fleet.cli(["dlq", "edit", fleet.name, letters[1].id, "--set", "metadata.demo_fault=transient:0"])
            #expect(edit.status == 0, "\(edit.stderr)")
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.appliedIDs().ids.contains(letters[1].id) })
            #expect(Set(try Self.indexed(fleet).keys) == Set([letters[2].id]))
            #expect(try Self.indexed(fleet) == (try await Self.queued(fleet)))
        }
    }
}
