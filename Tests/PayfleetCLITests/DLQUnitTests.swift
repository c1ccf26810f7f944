import ArgumentParser
import Foundation
import PayfleetAMQP
@testable import PayfleetCLI
import PayfleetCore
import PayfleetWorker
import PayfleetTestKit
import Testing

@Suite struct FingerprintTests {
    @Test("every normalization pattern compiles")
    func patternsCompile() {
        #expect(ErrorFingerprint.rules.count == ErrorFingerprint.patterns.count)
    }

    @Test("ids, numbers, quoted values and timestamps are normalized; the class is kept")
    func normalization() {
        let a = ErrorFingerprint("DemoTransient: attempt 4 of 4 failing for evt_01JD8Q2ZK3M4N5P6Q7R8S9T0VW")
        let b = ErrorFingerprint("DemoTransient: attempt 4 of 4 failing for evt_ABCDEFGHJKMNPQRSTVWXYZABCD")
        #expect(a == b)
        #expect(a.errorClass == "DemoTransient")
        #expect(a.text == "DemoTransient: attempt <n> of <n> failing for <id>")
        let c = ErrorFingerprint("HTTP503: CRM answered 503 for cus_123 at 2026-11-24T10:15:00Z after 1.5 s")
        #expect(c.text == "HTTP503: CRM answered <n> for <id> at <time> after <n> s")
        #expect(ErrorFingerprint("HTTP503: CRM answered 503 for cus_5 after 2 s").text == "HTTP503: CRM answered <n> for <id> after <n> s")
        #expect(ErrorFingerprint("InvalidEvent: occurred_at: '2026-13-01' is not an RFC 3339 date-time").text
            == "InvalidEvent: occurred_at: '<v>' is not an RFC <n> date-time")
        #expect(ErrorFingerprint("InvalidEvent: amount.value: must not be negative").text
            == "InvalidEvent: amount.value: must not be negative")
        // Names with underscores stay: they are what the message is about.
        #expect(ErrorFingerprint("Config: demo_fault unknown for m_acme").text == "Config: demo_fault unknown for m_acme")
        #expect(ErrorFingerprint("no class here at all").errorClass == "Error")
        #expect(a.id.count == 8 && a.id != c.id)
        #expect(a.matches(a.id, error: "x") && a.matches("DemoTransient", error: "x") && !a.matches("Invalid", error: "x"))
    }

    @Test("a dead letter without runtime headers takes its error from x-death (delivery limit)")
    func brokerDeadLettered() {
        let m = AMQPMessage(
            body: Array(#"{"id":"evt_1","type":"payment.succeeded","merchant_id":"m_acme"}"#.utf8), messageID: nil,
            headers: ["x-death": .array([.table([
                "reason": .string("delivery_limit"), "queue": .string("payfleet.w.p2"), "count": .int(1),
                "time": .timestamp(1_764_000_000),
            ])])])
        let l = DeadLetter(m)
        #expect(l.id == "evt_1")
        #expect(l.fingerprint.errorClass == "DeliveryLimit")
        #expect(l.firstFailedAt == "2025-11-24T16:00:00Z")
        #expect(l.sourcePartition(WorkerTopology(name: "w", routingKeys: [], partitions: 4)) == 2)
        #expect(l.sourcePartition(WorkerTopology(name: "w", routingKeys: [], partitions: 1)) == 0)
        let raw = DeadLetter(AMQPMessage(body: Array("not json".utf8)))
        #expect(raw.id.hasPrefix("sha256:"))
        #expect(raw.error.hasPrefix("Unknown"))
    }
}

@Suite struct EditTests {
    let event = EventFactory.payment(3, prefix: "edit", type: .paymentRefunded)

    func body(_ e: PaymentEvent) -> [UInt8] { EventFactory.body(e) }

    @Test("--set keeps field types, creates missing fields and yields a valid event and its diff")
    func setFields() throws {
        var broken = event
        broken.payment?.id = nil
        let (out, changes) = try DLQEdit.apply(sets: ["payment.id=pi_9", "amount.value=250", "reference=\"123\""], patch: nil, to: body(broken))
        let fixed = try EventCodec.decode(Data(out))
        #expect(fixed.payment?.id == "pi_9")
        #expect(fixed.amount.value == 250)
        #expect(fixed.reference == "123")
        #expect(changes.map(\.path) == ["amount.value", "payment.id", "reference"])
        #expect(changes.first { $0.path == "payment.id" }?.before == nil)
    }

    @Test("a merge patch sets and removes members")
    func mergePatch() throws {
        var broken = event
        broken.payment?.id = nil
        let patch: [String: Any] = ["payment": ["id": "pi_7"], "reference": NSNull()]
        var withRef = broken
        withRef.reference = "r"
        let (out, changes) = try DLQEdit.apply(sets: [], patch: patch, to: body(withRef))
        let fixed = try EventCodec.decode(Data(out))
        #expect(fixed.payment?.id == "pi_7" && fixed.reference == nil)
        #expect(Set(changes.map(\.path)) == ["payment.id", "reference"])
    }

    @Test("bad edits are refused with the reason", arguments: [
        ("amount.value=abc", "holds a number"),
        ("amount.value=-3", "still invalid: amount.value"),
        ("id=evt_x", "id cannot be edited"),
        ("payment..id=x", "is not a path"),
        ("nothing", "is not path=value"),
        ("amount.value.x=1", "not an object"),
        ("type=payment.unknown", "still invalid"),
    ])
    func refused(_ set: String, _ reason: String) {
        do {
            _ = try DLQEdit.apply(sets: [set], patch: nil, to: body(event))
            Issue.record("accepted \(set)")
        } catch {
            #expect("\(error)".contains(reason), "\(error)")
        }
    }

    @Test("an edit that changes nothing and a body that is not JSON are refused")
    func noChange() {
        #expect(throws: CLIFailure.self) { try DLQEdit.apply(sets: ["payment.id=\(event.payment!.id!)"], patch: nil, to: body(event)) }
        #expect(throws: CLIFailure.self) { try DLQEdit.apply(sets: ["a=b"], patch: nil, to: Array("[1]".utf8)) }
    }
}

@Suite struct CommandLineTests {
    @Test("purge refuses without --archive unless --yes-discard; exactly one selector")
    func purgeArguments() {
        #expect(throws: (any Error).self) { try DLQCommand.Purge.parse(["w", "--all"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Purge.parse(["w", "--archive", "a.jsonl"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Purge.parse(["w", "--all", "--id", "x", "--archive", "a"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Purge.parse(["w", "--all", "--archive", "a", "--yes-discard"]) }
        #expect((try? DLQCommand.Purge.parse(["w", "--all", "--yes-discard"])) != nil)
        #expect((try? DLQCommand.Purge.parse(["w", "--id", "a", "b", "--archive", "f"]))?.ids == ["a", "b"])
    }

    @Test("replay needs exactly one of --id, --all, --error; sane batch and rate")
    func replayArguments() {
        #expect(throws: (any Error).self) { try DLQCommand.Replay.parse(["w"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Replay.parse(["w", "--all", "--error", "x"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Replay.parse(["w", "--all", "--batch-size", "0"]) }
        #expect(throws: (any Error).self) { try DLQCommand.Replay.parse(["w", "--all", "--rate", "-1"]) }
        #expect((try? DLQCommand.Replay.parse(["w", "--error", "Demo", "--dry-run"]))?.dryRun == true)
        #expect(throws: (any Error).self) { try DLQCommand.Edit.parse(["w", "evt_1"]) }
        #expect(throws: (any Error).self) { try DLQCommand.List.parse(["w", "--limit", "0"]) }
        #expect(throws: (any Error).self) { try DLQCommand.List.parse(["w", "--group-by", "merchant"]) }
    }

    @Test("an unknown worker is named with the configured ones")
    func unknownWorker() throws {
        let dir = TestEnvironment.makeTempDir("cli-ctx")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "broker:\n  url: amqp://guest:guest@127.0.0.1:1/\ndemo-worker:\n  name: demo-x\n".write(
            toFile: dir + "/c.yaml", atomically: true, encoding: .utf8)
        var g = GlobalOptions()
        g.config = dir + "/c.yaml"
        let ctx = try CLIContext.load(g)
        #expect(ctx.configuredWorkers == ["demo-worker"])
        #expect(try ctx.worker("demo-x").topology.dlq == "payfleet.demo-x.dlq")
        #expect(try ctx.worker("demo-worker").worker == "demo-x")
        #expect(ctx.auditLogPath == ".payfleet/dev/state/audit.jsonl")
        #expect(throws: CLIFailure.self) { try ctx.worker("nope") }
    }

    @Test("the audit log appends whole fsync'd lines and records the OS user")
    func auditLog() throws {
        let dir = TestEnvironment.makeTempDir("cli-audit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try AuditLog(path: dir + "/sub/audit.jsonl", argv: ["payfleet", "dlq", "replay", "w", "--all"])
        try log.record(action: "dlq.replay", worker: "w", outcome: "republished", ids: ["a", "b"])
        let again = try AuditLog(path: dir + "/sub/audit.jsonl", argv: ["payfleet"])
        try again.record(action: "dlq.purge", worker: "w", outcome: "archived", ids: ["c"])
        let lines = try JSONLines.read(dir + "/sub/audit.jsonl")
        #expect(lines.count == 2)
        #expect(lines[0]["command"] as? String == "dlq replay w --all")
        #expect(lines[0]["ids"] as? [String] == ["a", "b"])
        #expect(lines[0]["user"] as? String == AuditLog.user)
        #expect(lines[1]["action"] as? String == "dlq.purge")
        #expect(throws: CLIFailure.self) { try JSONLines(path: "/proc/nope/audit.jsonl") }
    }
}

@Suite struct ReplayRoutingTests {
    let event = EventFactory.payment(5, prefix: "route", merchant: "m_acme")

    func letter(_ headers: [String: AMQPFieldValue]) -> DeadLetter {
        DeadLetter(AMQPMessage(body: EventFactory.body(event), messageID: event.id, headers: headers))
    }

    let failed: [String: AMQPFieldValue] = [
        "x-payfleet-error": .string("DemoTransient: attempt 4 of 4"), "x-payfleet-attempts": .int(4),
        "x-payfleet-first-failed-at": .string("2026-11-24T10:00:00Z"), "x-payfleet-worker": .string("w"),
        "x-delivery-count": .int(3), "x-payfleet-merchant": .string("m_acme"),
    ]

    @Test("back to the worker's queue with a fresh retry budget, the replay counted and the old error kept")
    func plainQueue() {
        let out = DLQAccess.outgoing(for: letter(failed), topology: WorkerTopology(name: "w", routingKeys: []), runID: "run1")
        #expect(out.exchange == "" && out.routingKey == "payfleet.w" && out.mandatory)
        let h = out.message.headers
        #expect(h["x-payfleet-error"] == nil && h["x-payfleet-attempts"] == nil && h["x-delivery-count"] == nil)
        #expect(h["x-payfleet-first-failed-at"] == nil && h["x-death"] == nil)
        #expect(h["x-payfleet-merchant"] == .string("m_acme"))
        #expect(h["x-payfleet-replays"] == .int(1))
        #expect(h["x-payfleet-previous-error"] == .string("DemoTransient: attempt 4 of 4"))
        #expect(h["x-payfleet-replay-run"] == .string("run1"))
        #expect(out.message.body == EventFactory.body(event) && out.message.persistent)
        var again = failed
        again["x-payfleet-replays"] = .int(1)
        let second = DLQAccess.outgoing(for: letter(again), topology: WorkerTopology(name: "w", routingKeys: []), runID: "r")
        #expect(second.message.headers["x-payfleet-replays"] == .int(2))
    }

    @Test("partitioned: to the partition queue named by x-death, else through the partition exchange by key")
    func partitions() {
        let topo = WorkerTopology(name: "w", routingKeys: [], partitions: 4, partitionKey: .customer)
        var viaTier = failed
        viaTier["x-death"] = .array([.table(["queue": .string("payfleet.w.p2.retry.1s"), "reason": .string("expired")])])
        let a = DLQAccess.outgoing(for: letter(viaTier), topology: topo, runID: "r")
        #expect(a.exchange == "" && a.routingKey == "payfleet.w.p2")
        #expect(a.message.headers["x-death"] == nil)
        let b = DLQAccess.outgoing(for: letter(failed), topology: topo, runID: "r")
        #expect(b.exchange == "payfleet.w.partition")
        #expect(b.message.headers["x-partition-customer"] == .string(event.customer!.id!))
        let byMerchant = WorkerTopology(name: "w", routingKeys: [], partitions: 4, partitionKey: .merchant)
        let c = DLQAccess.outgoing(for: letter(failed), topology: byMerchant, runID: "r")
        #expect(c.message.headers["x-partition-merchant"] == .string("m_acme"))
        var keyed = failed
        keyed["x-partition-customer"] = .string("cus_kept")
        let d = DLQAccess.outgoing(for: letter(keyed), topology: topo, runID: "r")
        #expect(d.message.headers["x-partition-customer"] == .string("cus_kept"))
    }
}
