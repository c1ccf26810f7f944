import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing

/// Issue 15 item 5 through the real `settlement-aggregator` process: a total that would pass
/// Int64 is dead-lettered at once as `AmountOverflow` and the day keeps its representable
/// totals. (No day is closed and no feed queue bound here: other suites running at the same
/// time count `settlement.day_closed` messages on the shared exchange.)
@Suite(.serialized) struct SettlementOverflowIntegrationTests {
    @Test("Two payments of 2^62 on one day: the second is dead-lettered as AmountOverflow; the worker keeps running")
    func overflowDeadLettered() async throws {
        try await WorkerProcess.settlement(prefix: "settle-ovf", section: ["grace_period: 3650d", "close_interval: 100ms", "day_closed_queue: \"\""]) { fleet in
            let n = fleet.name
            let half = Int64.max / 2 + 1
            let events = [
                event("\(n)-1", .paymentSucceeded, merchant: "m_ovf_\(n)", at: "2026-11-20T10:00:00Z", amount: half, currency: "GBP"),
                event("\(n)-2", .paymentSucceeded, merchant: "m_ovf_\(n)", at: "2026-11-20T11:00:00Z", amount: half, currency: "GBP"),
                event("\(n)-3", .paymentReversed, merchant: "m_ovf_\(n)", at: "2026-11-20T12:00:00Z", amount: 1000, currency: "GBP",
                      payment: "pi_\(n)-1"),
            ]
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            // Only this test's events are looked at: other suites publish to the same exchange.
            let mine = events.map { "'\($0.id)'" }.joined(separator: ", ")
            let boom = events[1].id
            #expect(
                try await eventually(timeout: .seconds(120)) {
                    try await fleet.deadLetters().contains { $0.messageID == boom }
                })
            #expect(
                try await eventually(timeout: .seconds(60)) {
                    try fleet.count("settlement_events", where: "event_id IN (\(mine))") == 2
                })
            let dead = try await fleet.deadLetters().first { $0.messageID == boom }
            if case .string(let error)? = dead?.headers["x-payfleet-error"] {
                #expect(error.hasPrefix("AmountOverflow"), "\(error)")
            } else {
                Issue.record("no x-payfleet-error header")
            }
            // The day keeps its representable figures: gross and net 2^62 − 1000, count 1 − 1 = 0.
            let report = try JSONSerialization.jsonObject(with: Data(try fleet.report("2026-11-20").utf8)) as? [[String: Any]]
            let line = try #require(report?.first { $0["merchant_id"] as? String == "m_ovf_\(n)" })
            #expect((line["gross"] as? NSNumber)?.int64Value == half - 1000)
            #expect((line["net"] as? NSNumber)?.int64Value == half - 1000)
            #expect((line["count"] as? NSNumber)?.int64Value == 0)
            #expect(fleet.process?.isRunning == true)
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }
}
