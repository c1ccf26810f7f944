import Foundation
import PayfleetAMQP
import PayfleetCLI
import PayfleetCore
import PayfleetTestKit
import Testing

/// `payfleet dlq …` and `payfleet status` as an operator runs them: the real executable against
/// the private broker and a running demo worker that produces real dead letters.
@Suite(.serialized)
struct DLQIntegrationTests {
    /// 20 permanent failures, 15 that fail transiently 4 times (past the 3 retry tiers, so the
    /// 5th attempt — a replay — succeeds), 15 invalid events (negative amount).
    static func mixed(_ prefix: String) -> (permanent: [PaymentEvent], transient: [PaymentEvent], invalid: [PaymentEvent]) {
        let permanent = (0..<20).map { EventFactory.payment($0, prefix: prefix, metadata: ["demo_fault": "permanent"]) }
        let transient = (20..<35).map { EventFactory.payment($0, prefix: prefix, metadata: ["demo_fault": "transient:4"]) }
        let invalid = (35..<50).map { EventFactory.payment($0, prefix: prefix, amount: -5) }
        return (permanent, transient, invalid)
    }

    @Test("50 dead letters of 3 errors: 3 groups with the right counts; replay --error moves one group, the worker applies it")
    func groupsAndReplayOneGroup() async throws {
        try await WorkerProcess.demo(prefix: "cli-groups") { fleet in
            try await fleet.declare()
            try fleet.start()
            let (permanent, transient, invalid) = Self.mixed(fleet.name)
            #expect(try await fleet.deadLetter(permanent + transient + invalid, expectDLQ: 50))

            let plain = try await fleet.cli(["dlq", "list", "demo-worker", "--json"])
            #expect(plain.status == 0, "\(plain.stderr)")
            let rows = plain.json as? [[String: Any]] ?? []
            #expect(rows.count == 50)
            #expect(Set(rows.strings("id")) == Set((permanent + transient + invalid).map(\.id)))
            #expect(rows.allSatisfy { $0["type"] as? String == "payment.succeeded" && $0["error"] is String })

            let grouped = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
            #expect(grouped.status == 0, "\(grouped.stderr)")
            let groups = grouped.json as? [[String: Any]] ?? []
            var counts: [String: Int] = [:]
            for g in groups { counts[g["error_class"] as? String ?? "?"] = g["count"] as? Int }
            #expect(groups.count == 3, "\(grouped.stdout)")
            #expect(counts == ["DemoPermanent": 20, "DemoTransient": 15, "InvalidEvent": 15])
            let transientGroup = groups.first { $0["error_class"] as? String == "DemoTransient" }
            #expect(Set(transientGroup?["ids"] as? [String] ?? []) == Set(transient.map(\.id)))
            let human = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error"])
            #expect(human.stdout.contains("DemoTransient: attempt <n> of <n> failing for <id>"), "\(human.stdout)")
            // Listing left all 50 in place.
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 50 })

            let dry = try await fleet.cli(["dlq", "replay", fleet.name, "--error", "DemoTransient", "--dry-run", "--json"])
            #expect(dry.status == 0, "\(dry.stderr)")
            #expect(((dry.json as? [String: Any])?["selected"] as? [String])?.count == 15)
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 50 })

            // Replay by the group's id, as an operator would copy it from the listing. A window
            // of 4 deliveries: the 35 letters held and the 15 acked go through many consumers.
            let groupID = transientGroup?["fingerprint"] as? String ?? "?"
            let replay = try await fleet.cli(
                ["dlq", "replay", fleet.name, "--error", groupID, "--json", "--prefetch", "4", "--batch-size", "3"])
            #expect(replay.status == 0, "\(replay.stderr)")
            #expect(Set(((replay.json as? [String: Any])?["replayed"] as? [String]) ?? []) == Set(transient.map(\.id)))

            let applied = try await eventually(timeout: .seconds(60)) { try fleet.appliedIDs().ids.count >= 15 }
            #expect(applied)
            try await Task.sleep(for: .milliseconds(500))
            let a = try fleet.appliedIDs()
            #expect(a.ids == Set(transient.map(\.id)))
            #expect(a.rows == 15)
            let left = try await fleet.deadLetterIDs()
            #expect(left.count == 35)
            #expect(Set(left) == Set((permanent + invalid).map(\.id)))

            let audit = try JSONLines.read(fleet.auditPath)
            let republished = audit.filter { $0["action"] as? String == "dlq.replay" && $0["outcome"] as? String == "republished" }
            #expect(Set(republished.flatMap { $0["ids"] as? [String] ?? [] }) == Set(transient.map(\.id)))
            #expect(audit.allSatisfy { ($0["user"] as? String)?.isEmpty == false && $0["at"] is String })
        }
    }

    @Test("list and replay filter by merchant, type, customer and --since; replay --max N; a letter older than processed_retention is refused unless --force")
    func filtersMaxAndTheDedupeWindow() async throws {
        try await WorkerProcess.demo(prefix: "cli-filter") { fleet in
            try await fleet.declare()
            try fleet.start()
            let a = (0..<6).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_fa", metadata: ["demo_fault": "permanent"]) }
            let b = (6..<10).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_fb", metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(a + b, expectDLQ: 10))
            func listed(_ args: [String]) async throws -> [String] {
                let r = try await fleet.cli(["dlq", "list", fleet.name, "--json"] + args)
                #expect(r.status == 0, "\(r.stderr)")
                return (r.json as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            }
            #expect(Set(try await listed(["--merchant", "m_fa"])) == Set(a.map(\.id)))
            #expect(try await listed(["--type", "payment.refunded"]).isEmpty)
            #expect(Set(try await listed(["--customer", a[0].customer?.id ?? ""])) == Set((a + b).filter { $0.customer?.id == a[0].customer?.id }.map(\.id)))
            #expect(try await listed(["--since", "1h"]).count == 10)
            #expect(try await listed(["--since", "2020-01-01T00:00:00Z"]).count == 10)
            let bad = try await fleet.cli(["dlq", "list", fleet.name, "--since", "yesterday"])
            #expect(bad.status != 0 && bad.stderr.contains("--since"), "\(bad.stderr)")

            // A dead letter that first failed 40 days ago (past the 35-day processed_retention).
            let old = EventFactory.payment(99, prefix: fleet.name, merchant: "m_fa")
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
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 11 })
            #expect(try await listed(["--since", "30d"]).count == 10)
            #expect(try await listed(["--merchant", "m_fa"]).count == 7)

            // --max 2 stops reading once two are chosen: the old letter (last in the queue) is
            // not reached, so not refused either; everything else is still in the DLQ.
            let capped = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--merchant", "m_fa", "--max", "2", "--json"])
            let cj = capped.json as? [String: Any] ?? [:]
            let replayed = cj["replayed"] as? [String] ?? []
            #expect(replayed.count == 2, "\(capped.stdout) \(capped.stderr)")
            #expect(Set(replayed).isSubset(of: Set(a.map(\.id))))
            #expect(cj["read_whole_queue"] as? Bool == false)
            #expect((cj["read"] as? Int ?? 99) < 11, "\(cj)")
            #expect(cj["refused_older_than_retention"] as? [String] == [])
            #expect(capped.status == 0, "\(capped.stderr)")
            let untouched = Set((a + b + [old]).map(\.id)).subtracting(replayed)
            #expect(untouched.isSubset(of: Set(try await fleet.deadLetterIDs())))
            // The two replayed fail for good again (demo_fault permanent) and come back.
            #expect(try await eventually(timeout: .seconds(20)) { try await fleet.depth(fleet.topology.dlq) == 11 })
            #expect(Set(try await fleet.deadLetterIDs()) == Set((a + b + [old]).map(\.id)))

            // The old letter asked for by id: refused, with the reason and the way out.
            let refused = try await fleet.cli(["dlq", "replay", fleet.name, "--id", old.id, "--json"])
            #expect((refused.json as? [String: Any])?["refused_older_than_retention"] as? [String] == [old.id])
            #expect((refused.json as? [String: Any])?["replayed"] as? [String] == [])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("processed_retention") && refused.stderr.contains("--force"), "\(refused.stderr)")
            #expect(try await fleet.deadLetterIDs().contains(old.id))

            let forced = try await fleet.cli(["dlq", "replay", fleet.name, "--id", old.id, "--force", "--json"])
            #expect(forced.status == 0, "\(forced.stderr)")
            #expect((forced.json as? [String: Any])?["replayed"] as? [String] == [old.id])
            // The old letter (no fault) is applied once replayed.
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.appliedIDs().ids.contains(old.id) })
        }
    }

    @Test("replay --all while the worker fails them again ends; the replays are counted on the dead letters")
    func replayDoesNotLoop() async throws {
        try await WorkerProcess.demo(prefix: "cli-loop") { fleet in
            try await fleet.declare()
            try fleet.start()
            let events = (0..<40).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(events, expectDLQ: 40))
            let run = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--batch-size", "5", "--rate", "100", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let replayed = ((run.json as? [String: Any])?["replayed"] as? [String]) ?? []
            #expect(replayed.count == 40 && Set(replayed) == Set(events.map(\.id)))
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.topology.dlq) == 40 })
            let letters = try await fleet.deadLetters()
            #expect(Set(letters.compactMap(\.messageID)) == Set(events.map(\.id)))
            #expect(letters.allSatisfy { $0.headers["x-payfleet-replays"]?.intValue == 1 })
            #expect(letters.allSatisfy { $0.headers["x-payfleet-previous-error"]?.stringValue?.hasPrefix("DemoPermanent") == true })
            #expect(try fleet.appliedIDs().rows == 0)
        }
    }

    @Test("kill -9 of the CLI while replaying 1,000 dead letters: each is in the queue, the DLQ or applied — none lost")
    func killMidReplay() async throws {
        try await WorkerProcess.demo(prefix: "cli-kill") { fleet in
            try await fleet.declare()
            try fleet.start()
            let events = (0..<1_000).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "transient:4"]) }
            let all = Set(events.map(\.id))
            #expect(try await fleet.deadLetter(events, expectDLQ: 1_000))

            let log = fleet.dir + "/replay.log"
            let cli = try ChildProcess(
                executable: TestEnvironment.binDir + "/payfleet",
                arguments: ["dlq", "replay", fleet.name, "--all", "--batch-size", "50", "--rate", "250", "--config", fleet.configPath],
                logPath: log)
            let midway = try await eventually(timeout: .seconds(60), every: .milliseconds(10)) {
                try fleet.appliedIDs().ids.count >= 200
            }
            #expect(midway)
            let runningAtKill = cli.isRunning
            cli.signal(SIGKILL)
            _ = await cli.wait(timeout: .seconds(10))
            #expect(runningAtKill, "the kill must land mid-replay")

            // Let the worker finish what reached its queue.
            #expect(try await eventually(timeout: .seconds(60)) { try await fleet.depth(fleet.queue) == 0 })
            try await Task.sleep(for: .seconds(1))
            let applied = try fleet.appliedIDs()
            let inDLQ = try await fleet.deadLetterIDs()
            #expect(applied.rows == applied.ids.count, "no event applied twice")
            #expect(!inDLQ.isEmpty, "the kill must leave work undone")
            let lost = all.subtracting(applied.ids).subtracting(inDLQ)
            #expect(lost.isEmpty, "lost: \(lost.prefix(5))")
            #expect(Set(inDLQ).isSubset(of: all))
            // The killed run's audit trail: started, some batches, never completed.
            let audit = try JSONLines.read(fleet.auditPath)
            #expect(audit.contains { $0["outcome"] as? String == "started" })
            #expect(!audit.contains { $0["outcome"] as? String == "completed" })

            // A second run finishes the job; duplicates (confirmed, not yet acked at the kill) are deduped.
            let again = try await fleet.cli(["dlq", "replay", fleet.name, "--all"])
            #expect(again.status == 0, "\(again.stderr)")
            let dlqBefore = try await fleet.depth(fleet.topology.dlq)
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.appliedIDs().ids == all })
            try await Task.sleep(for: .milliseconds(500))
            #expect(try fleet.appliedIDs().rows == 1_000)
            let left = try await fleet.deadLetters()
            #expect(left.isEmpty, "\(again.stdout) depth after: \(dlqBefore) \(left.prefix(3).map { $0.headers.mapValues(\.description) })")
        }
    }

    @Test("edit fixes a missing field, the event is applied, the original is archived and the audit log has the diff")
    func editAndReplay() async throws {
        try await WorkerProcess.demo(prefix: "cli-edit") { fleet in
            try await fleet.declare()
            try fleet.start()
            var broken = EventFactory.payment(1, prefix: fleet.name, type: .paymentRefunded)
            broken.payment?.id = nil
            let other = EventFactory.payment(2, prefix: fleet.name, metadata: ["demo_fault": "permanent"])
            #expect(try await fleet.deadLetter([broken, other], expectDLQ: 2))

            let show = try await fleet.cli(["dlq", "show", fleet.name, broken.id, "--json"])
            #expect(show.status == 0, "\(show.stderr)")
            let shown = show.json as? [String: Any] ?? [:]
            #expect((shown["error"] as? String)?.contains("payment.id") == true, "\(show.stdout)")
            #expect((shown["headers"] as? [String: Any])?["x-payfleet-attempts"] as? Int == 1)

            // Bad input, each refused with a reason and nothing changed.
            let notNumber = try await fleet.cli(["dlq", "edit", fleet.name, broken.id, "--set", "amount.value=abc"])
            #expect(notNumber.status != 0)
            #expect(notNumber.stderr.contains("amount.value holds a number"), "\(notNumber.stderr)")
            let stillInvalid = try await fleet.cli(["dlq", "edit", fleet.name, broken.id, "--set", "amount.value=-1"])
            #expect(stillInvalid.status != 0)
            #expect(stillInvalid.stderr.contains("still invalid"), "\(stillInvalid.stderr)")
            let idChange = try await fleet.cli(["dlq", "edit", fleet.name, broken.id, "--set", "id=evt_other"])
            #expect(idChange.stderr.contains("id cannot be edited"), "\(idChange.stderr)")
            let unknown = try await fleet.cli(["dlq", "edit", fleet.name, "evt_nope", "--set", "payment.id=pi_1"])
            #expect(unknown.stderr.contains("no dead letter with id 'evt_nope'"), "\(unknown.stderr)")
            let badPath = try await fleet.cli(["dlq", "edit", fleet.name, broken.id, "--set", "payment..id=x"])
            #expect(badPath.stderr.contains("is not a path"), "\(badPath.stderr)")
            let noEdit = try await fleet.cli(["dlq", "edit", fleet.name, broken.id])
            #expect(noEdit.status != 0)
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 2 })
            #expect(try fleet.appliedIDs().rows == 0)

            let edit = try await fleet.cli(["dlq", "edit", fleet.name, broken.id, "--set", "payment.id=pi_original_1"])
            #expect(edit.status == 0, "\(edit.stderr)")
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.appliedIDs().ids.contains(broken.id) })
            #expect(try await fleet.deadLetterIDs() == [other.id])

            let archive = try JSONLines.read(fleet.dir + "/state/dlq-archive/\(fleet.name).jsonl")
            #expect(archive.count == 1)
            #expect(archive.first?["id"] as? String == broken.id)
            #expect(archive.first?["reason"] as? String == "edited")
            let original = try EventCodec.decoder().decode(
                PaymentEvent.self, from: Data((archive.first?["body"] as? String ?? "").utf8))
            #expect(original.id == broken.id && original.payment?.id == nil && original.amount == broken.amount)

            let audit = try JSONLines.read(fleet.auditPath)
            let e = audit.first { $0["action"] as? String == "dlq.edit" }
            #expect(e?["ids"] as? [String] == [broken.id])
            let changes = e?["changes"] as? [[String: Any]] ?? []
            #expect(changes.count == 1)
            #expect(changes.first?["path"] as? String == "payment.id")
            #expect(changes.first?["before"] is NSNull)
            #expect(changes.first?["after"] as? String == "\"pi_original_1\"")
        }
    }

    @Test("purge without an archive is refused; with one the JSONL holds every purged message")
    func purgeWithArchive() async throws {
        try await WorkerProcess.demo(prefix: "cli-purge") { fleet in
            try await fleet.declare()
            try fleet.start()
            let events = (0..<6).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(events, expectDLQ: 6))

            let refused = try await fleet.cli(["dlq", "purge", fleet.name, "--all"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("refusing to purge without --archive"), "\(refused.stderr)")
            let neither = try await fleet.cli(["dlq", "purge", fleet.name, "--archive", fleet.dir + "/x.jsonl"])
            #expect(neither.status != 0)
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 6 })

            let archive = fleet.dir + "/purged.jsonl"
            let one = try await fleet.cli(["dlq", "purge", fleet.name, "--id", events[3].id, "--archive", archive])
            #expect(one.status == 0, "\(one.stderr)")
            #expect(try JSONLines.read(archive).strings("id") == [events[3].id])
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 5 })

            let rest = try await fleet.cli(["dlq", "purge", fleet.name, "--all", "--archive", archive])
            #expect(rest.status == 0, "\(rest.stderr)")
            let lines = try JSONLines.read(archive)
            #expect(lines.count == 6)
            #expect(Set(lines.strings("id")) == Set(events.map(\.id)))
            // Every line holds the whole message: the event body and the runtime's headers.
            for l in lines {
                let body = Data((l["body"] as? String ?? "").utf8)
                let event = try EventCodec.decoder().decode(PaymentEvent.self, from: body)
                #expect(event.id == l["id"] as? String)
                #expect((l["headers"] as? [String: Any])?["x-payfleet-error"] is String)
            }
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == 0 })
            let audit = try JSONLines.read(fleet.auditPath).filter { $0["action"] as? String == "dlq.purge" }
            #expect(Set(audit.flatMap { $0["ids"] as? [String] ?? [] }) == Set(events.map(\.id)))
        }
    }

    @Test("listing neither loses, reorders nor duplicates; concurrent runs wait for each other")
    func listLeavesQueueAsItWas() async throws {
        try await WorkerProcess.demo(prefix: "cli-order") { fleet in
            try await fleet.declare()
            try fleet.start()
            let events = (0..<30).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(events, expectDLQ: 30))
            // (Not `deadLetters()`: closing a connection that holds messages returns them in
            // the broker's own order; the CLI requeues one by one, in order.)
            let first = try await fleet.cli(["dlq", "list", fleet.name, "--json"])
            let before = (first.json as? [[String: Any]])?.strings("id") ?? []
            #expect(Set(before) == Set(events.map(\.id)) && before.count == 30)

            let partial = try await fleet.cli(["dlq", "list", fleet.name, "--limit", "10", "--json"])
            // A consumer that stalls at its prefetch reads the rest with basic.get, in order.
            let stalled = try await fleet.cli(["dlq", "list", fleet.name, "--json", "--prefetch", "7"])
            #expect((stalled.json as? [[String: Any]])?.strings("id") == before, "\(stalled.stderr)")
            #expect((partial.json as? [[String: Any]])?.strings("id") == Array(before.prefix(10)))
            async let a = fleet.cli(["dlq", "list", fleet.name, "--json"])
            async let b = fleet.cli(["dlq", "list", fleet.name, "--json"])
            async let c = fleet.cli(["dlq", "show", fleet.name, before[7]])
            let (ra, rb, rc) = try await (a, b, c)
            #expect((ra.json as? [[String: Any]])?.strings("id") == before, "\(ra.stderr)")
            #expect((rb.json as? [[String: Any]])?.strings("id") == before, "\(rb.stderr)")
            #expect(rc.stdout.contains(before[7]), "\(rc.stderr)")
            let after = try await fleet.cli(["dlq", "list", fleet.name, "--json"])
            #expect((after.json as? [[String: Any]])?.strings("id") == before)
            #expect(try await fleet.deadLetterIDs().count == 30)
        }
    }

    @Test("status --json reflects arranged depths and exits non-zero with a non-empty DLQ or a worker down")
    func statusReflectsDepths() async throws {
        try await WorkerProcess.demo(prefix: "cli-status", retryDelays: ["1m"]) { fleet in
            try await fleet.declare()
            try fleet.start()
            let bad = (0..<3).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "permanent"]) }
            #expect(try await fleet.deadLetter(bad, expectDLQ: 3))
            // The batch is acked right after its dead letters are confirmed; let that land.
            try await Task.sleep(for: .seconds(1))
            await fleet.process?.killNow()

            // Arrange: 7 in the main queue (no consumer now), 4 in the 1-minute retry tier.
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish((10..<17).map { EventFactory.payment($0, prefix: fleet.name) }, via: pub)
            let tier = fleet.topology.retryQueue(delayMS: 60_000, partition: 0)
            for n in 20..<24 {
                let e = EventFactory.payment(n, prefix: fleet.name)
                try await pub.publish(AMQPOutgoing(exchange: "", routingKey: tier, message: AMQPMessage(body: EventFactory.body(e), messageID: e.id)))
            }
            pub.close()

            let down = try await fleet.cli(["status", "--json", "--no-management"])
            #expect(down.status == 2, "\(down.stdout) \(down.stderr)")
            let row = ((down.json as? [String: Any])?["workers"] as? [[String: Any]])?.first ?? [:]
            #expect(row["name"] as? String == fleet.name)
            #expect(row["ready"] as? Int == 7)
            #expect(row["depth"] as? Int == 7)
            #expect(row["consumers"] as? Int == 0)
            #expect(row["retry_depth"] as? Int == 4)
            #expect(row["dlq_depth"] as? Int == 3)
            #expect(row["worker_state"] as? String == "down")
            #expect(row["unacked"] is NSNull)
            #expect((down.json as? [String: Any])?["ingest"] is NSNull)

            try fleet.start()
            #expect(try await eventually(timeout: .seconds(30)) {
                let drained = try await fleet.depth(fleet.queue) == 0
                let ready = await fleet.admin("/readyz")
                return drained && ready?.status == 200
            })
            let mgmt = ["PAYFLEET_BROKER_MANAGEMENT_URL": TestEnvironment.managementURL]
            // The management API publishes a new queue's statistics within its collection interval.
            var dlqOnly = try await fleet.cli(["status", "--json"], environment: mgmt)
            func firstRow(_ run: CLIRun) -> [String: Any] {
                ((run.json as? [String: Any])?["workers"] as? [[String: Any]])?.first ?? [:]
            }
            let counted = try await eventually(timeout: .seconds(30), every: .milliseconds(500)) {
                dlqOnly = try await fleet.cli(["status", "--json"], environment: mgmt)
                return firstRow(dlqOnly)["unacked"] is Int
            }
            #expect(counted, "\(dlqOnly.stdout)")
            #expect(dlqOnly.status == 2, "\(dlqOnly.stdout) \(dlqOnly.stderr)")
            let j = dlqOnly.json as? [String: Any] ?? [:]
            let r2 = firstRow(dlqOnly)
            #expect(j["source"] as? String == "management", "\(j["notes"] ?? "")")
            #expect(r2["worker_state"] as? String == "ready")
            #expect(r2["consumers"] as? Int == 1)
            #expect(r2["dlq_depth"] as? Int == 3)
            #expect(r2["unacked"] is Int)
            #expect((j["problems"] as? [String])?.count == 1)

            // Management API configured but not answering: AMQP counts only, said so.
            let noAPI = try await fleet.cli(["status", "--json"], environment: ["PAYFLEET_BROKER_MANAGEMENT_URL": "http://127.0.0.1:1/"])
            let nj = noAPI.json as? [String: Any] ?? [:]
            #expect(noAPI.status == 2)
            #expect(nj["source"] as? String == "amqp")
            #expect((nj["notes"] as? [String])?.first?.contains("management API unavailable") == true, "\(noAPI.stdout)")
            #expect(firstRow(noAPI)["dlq_depth"] as? Int == 3)

            let purge = try await fleet.cli(["dlq", "purge", fleet.name, "--all", "--yes-discard"])
            #expect(purge.status == 0, "\(purge.stderr)")
            let healthy = try await fleet.cli(["status"], environment: mgmt)
            #expect(healthy.status == 0, "\(healthy.stdout) \(healthy.stderr)")
            #expect(healthy.stdout.contains("healthy"))
            #expect(!healthy.stdout.contains("\u{1B}["), "no colour when piped")
        }
    }
}
