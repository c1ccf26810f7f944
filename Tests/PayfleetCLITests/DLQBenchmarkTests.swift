import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing

/// Figures for BENCHMARKS.md, opt-in (`PAYFLEET_CLI_BENCH=1`): list and replay of 5,000 dead
/// letters through the real executable (debug or release, whichever `PAYFLEET_BIN_DIR` names).
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["PAYFLEET_CLI_BENCH"] != nil))
struct DLQBenchmarkTests {
    @Test("list, group and replay 5,000 dead letters")
    func listAndReplay() async throws {
        try await WorkerProcess.demo(prefix: "cli-bench") { fleet in
            try await fleet.declare()
            let n = 5_000
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            let out = (0..<n).map { i -> AMQPOutgoing in
                let e = EventFactory.payment(i, prefix: fleet.name)
                let headers: [String: AMQPFieldValue] = [
                    "x-payfleet-error": .string("HTTP503: CRM answered 503 for \(e.customer!.id!) after \(i % 7) s"),
                    "x-payfleet-attempts": .int(4), "x-payfleet-first-failed-at": .string(RFC3339.format(Date())),
                ]
                return AMQPOutgoing(exchange: "", routingKey: fleet.topology.dlq,
                                    message: AMQPMessage(body: EventFactory.body(e), messageID: e.id, headers: headers))
            }
            for chunk in stride(from: 0, to: n, by: 500) {
                let r = await pub.publish(batch: Array(out[chunk..<min(chunk + 500, n)]))
                #expect(r.allSatisfy { if case .success = $0 { true } else { false } })
            }
            pub.close()
            var t = ContinuousClock.now
            let list = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
            let listTime = ContinuousClock.now - t
            #expect((list.json as? [[String: Any]])?.count == 1)
            #expect((list.json as? [[String: Any]])?.first?["count"] as? Int == n)
            t = ContinuousClock.now
            let replay = try await fleet.cli(["dlq", "replay", fleet.name, "--all", "--json"])
            let replayTime = ContinuousClock.now - t
            #expect(((replay.json as? [String: Any])?["replayed"] as? [String])?.count == n)
            #expect(try await fleet.depth(fleet.queue) == n)
            print("BENCH dlq list --group-by error, \(n) messages: \(listTime); replay --all: \(replayTime)")
        }
    }
}
