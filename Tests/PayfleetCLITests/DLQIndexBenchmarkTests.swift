import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The 100,000-letter figure for BENCHMARKS.md (issue 18 item 3), opt-in (`PAYFLEET_DLQ_BENCH=1`):
/// 100,000 dead letters in the real DLQ and their summaries in the worker's state file (written
/// with `DeadLetterIndex.record`, as the runtime writes them), then `payfleet dlq list
/// --group-by error`, a filtered list and the plain list through the real executable (debug or
/// release, whichever `PAYFLEET_BIN_DIR` names). Prints `BENCH …` lines.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["PAYFLEET_DLQ_BENCH"] != nil))
struct DLQIndexBenchmarkTests {
    /// Five groups: each message varies only in ids and numbers.
    static func error(_ i: Int, _ e: PaymentEvent) -> String {
        switch i % 5 {
        case 0: return "HTTP503: CRM answered 503 for \(e.customer?.id ?? "cus_0") after \(i % 7) s"
        case 1: return "DemoPermanent: event \(e.id) is not valid for merchant m_x"
        case 2: return "InvalidEvent: amount.value: \(i % 97) is negative in \(e.id)"
        case 3: return "Timeout: ledger did not answer in \(i % 900) ms for \(e.id)"
        default: return "Store: disk I/O error at page \(i)"
        }
    }

    @Test("dlq list --group-by error on 100,000 dead letters answers from the index in under 10 s")
    func hundredThousand() async throws {
        let n = Int(ProcessInfo.processInfo.environment["PAYFLEET_DLQ_BENCH_N"] ?? "") ?? 100_000
        try await WorkerProcess.demo(prefix: "cli-dlqbench") { fleet in
            try await fleet.declare()
            var summaries: [DeadLetterIndex.Summary] = []
            var out: [AMQPOutgoing] = []
            let now = Date()
            for i in 0..<n {
                let e = EventFactory.payment(i, prefix: fleet.name, merchant: "m_b\(i % 10)")
                let error = Self.error(i, e)
                let first = RFC3339.format(now.addingTimeInterval(-Double(i % 3_600)))
                let headers: [String: AMQPFieldValue] = [
                    "x-payfleet-error": .string(error), "x-payfleet-attempts": .int(4), "x-payfleet-first-failed-at": .string(first),
                ]
                let m = AMQPMessage(body: EventFactory.body(e), messageID: e.id, headers: headers, persistent: true)
                out.append(AMQPOutgoing(exchange: "", routingKey: fleet.topology.dlq, message: m))
                summaries.append(DeadLetterIndex.Summary(message: m, worker: fleet.name, queue: fleet.topology.dlq, now: now))
            }
            var t = ContinuousClock.now
            let store = try await Store(path: fleet.dbPath, migrations: EffectJournal.migrations + DeadLetterIndex.migrations)
            for chunk in stride(from: 0, to: n, by: 10_000) {
                let rows = Array(summaries[chunk..<min(chunk + 10_000, n)])
                try await store.write { db in try DeadLetterIndex.record(rows, db: db) }
            }
            let indexTime = ContinuousClock.now - t
            t = ContinuousClock.now
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            for chunk in stride(from: 0, to: n, by: 1_000) {
                let r = await pub.publish(batch: Array(out[chunk..<min(chunk + 1_000, n)]))
                #expect(r.allSatisfy { if case .success = $0 { true } else { false } })
            }
            pub.close()
            let publishTime = ContinuousClock.now - t
            #expect(try await eventually(timeout: .seconds(60)) { try await fleet.depth(fleet.topology.dlq) == n })

            t = ContinuousClock.now
            let grouped = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
            let groupTime = ContinuousClock.now - t
            #expect(grouped.status == 0, "\(grouped.stderr)")
            #expect(grouped.stderr.isEmpty, "\(grouped.stderr)")  // answered from the index: no queue read
            let groups = grouped.json as? [[String: Any]] ?? []
            #expect(groups.count == 5, "\(groups.map { $0["error"] ?? "" })")
            #expect(groups.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == n)

            t = ContinuousClock.now
            let table = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error"])
            let tableTime = ContinuousClock.now - t
            #expect(table.stdout.contains("\(n) dead letters"), "\(table.stdout.suffix(300))")

            t = ContinuousClock.now
            let merchant = try await fleet.cli(["dlq", "list", fleet.name, "--merchant", "m_b3", "--json"])
            let merchantTime = ContinuousClock.now - t
            #expect((merchant.json as? [[String: Any]])?.count == (0..<n).filter { $0 % 10 == 3 }.count)

            t = ContinuousClock.now
            let plain = try await fleet.cli(["dlq", "list", fleet.name])
            let plainTime = ContinuousClock.now - t
            #expect(plain.stdout.split(separator: "\n").count == n + 2)

            // replay --max 1000: stops reading once 1,000 are chosen; the index loses just those;
            // the next list answers from the index again.
            t = ContinuousClock.now
            let replay = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--max", "1000", "--json"])
            let replayTime = ContinuousClock.now - t
            let rj = replay.json as? [String: Any] ?? [:]
            #expect((rj["replayed"] as? [String])?.count == 1_000, "\(replay.stderr)")
            #expect(rj["read"] as? Int == 1_000 && rj["read_whole_queue"] as? Bool == false, "\(rj["read"] ?? "?")")
            #expect(try await eventually(timeout: .seconds(10)) { try await fleet.depth(fleet.topology.dlq) == n - 1_000 })
            t = ContinuousClock.now
            let after = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
            let afterTime = ContinuousClock.now - t
            #expect(after.stderr.isEmpty, "\(after.stderr)")
            #expect((after.json as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == n - 1_000)

            // A whole-queue read past the 65,535 prefetch (consumers hand over): a dry run reads
            // every letter, selects them all, and leaves the queue and the index as they were.
            t = ContinuousClock.now
            let whole = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--dry-run", "--json"])
            let wholeTime = ContinuousClock.now - t
            let wj = whole.json as? [String: Any] ?? [:]
            #expect(wj["read"] as? Int == n - 1_000 && (wj["selected"] as? [String])?.count == n - 1_000, "\(whole.stderr)")
            // The command returns once its requeues are back: the depth is whole at once.
            #expect(try await fleet.depth(fleet.topology.dlq) == n - 1_000)

            print("BENCH dlq index, \(n) letters: index written in \(indexTime), published in \(publishTime)")
            print("BENCH dlq list --group-by error --json, \(n) letters: \(groupTime)")
            print("BENCH dlq list --group-by error (table), \(n) letters: \(tableTime)")
            print("BENCH dlq list --merchant m_b3 --json, \(n) letters: \(merchantTime)")
            print("BENCH dlq list (all rows, table), \(n) letters: \(plainTime)")
            print("BENCH dlq replay --all --max 1000, \(n) letters: \(replayTime); list --group-by error after it: \(afterTime)")
            print("BENCH dlq replay --all --dry-run (reads all \(n - 1_000) letters, requeues them in order): \(wholeTime)")
            #expect(groupTime < .seconds(10))
        }
    }
}
