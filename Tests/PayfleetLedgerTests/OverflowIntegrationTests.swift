import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing

/// Issue 15 item 5 through the real `ledger-writer` process and broker: an amount whose sum
/// overflows Int64 is dead-lettered at once as `AmountOverflow`; the worker keeps running and
/// books the events around it, reversals included.
@Suite(.serialized) struct OverflowIntegrationTests {
    @Test("payment.disputed 9223372036854775807 + fee 1 goes to the DLQ as AmountOverflow; the worker never crashes")
    func overflowDeadLettered() async throws {
        try await LedgerFleet.with(prefix: "ovf") { fleet in
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            let events = [
                ledgerEvent("\(fleet.name)-pay", .paymentSucceeded, merchant: "m_acme", amount: 5000, fee: 100, payment: "pi_o"),
                ledgerEvent("\(fleet.name)-boom", .paymentDisputed, merchant: "m_acme", amount: .max, fee: 1, payment: "pi_o"),
                ledgerEvent("\(fleet.name)-rev", .paymentReversed, merchant: "m_acme", amount: 5000, fee: 100, payment: "pi_o"),
            ]
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
                    try fleet.count("ledger_events", where: "event_id IN (\(mine))") == 2
                })
            let dead = try await fleet.deadLetters().first { $0.messageID == boom }
            if case .string(let error)? = dead?.headers["x-payfleet-error"] {
                #expect(error.hasPrefix("AmountOverflow"), "\(error)")
            } else {
                Issue.record("no x-payfleet-error header: \(String(describing: dead?.headers))")
            }
            // Still alive; the payment and its reversal posted three legs each, the overflow none.
            #expect(fleet.process?.isRunning == true)
            #expect(try fleet.count("postings", where: "txid IN (\(mine))") == 6)
            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }
}
