import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetLedger
import Testing

/// Issue 4, "what must be shown" 1 and 4: 10,000 mixed events in two orders.
@Suite struct StreamTests {
    static func checkInvariants(_ h: LedgerHarness) async throws {
        // Every transaction balances per currency, and every transaction was closed by its check.
        #expect(
            try await h.scalar(
                "SELECT COUNT(*) FROM (SELECT txid FROM postings GROUP BY txid, currency HAVING SUM(amount) <> 0)") == 0)
        #expect(
            try await h.scalar(
                "SELECT COUNT(*) FROM transactions t WHERE NOT EXISTS (SELECT 1 FROM transaction_checks c WHERE c.txid = t.txid)")
                == 0)
        #expect(
            try await h.scalar("SELECT COUNT(*) FROM (SELECT txid FROM postings GROUP BY txid HAVING COUNT(*) < 2)") == 0)
        // The trial balance sums to zero per currency.
        var perCurrency: [String: Int64] = [:]
        for b in try h.balances() { perCurrency[b.currency, default: 0] += b.balance }
        #expect(perCurrency.values.allSatisfy { $0 == 0 }, "\(perCurrency)")
    }

    @Test("10,000 events in order and shuffled: identical balances, every transaction balanced, balances as computed from the events")
    func tenThousand() async throws {
        let stream = LedgerStream(total: 10_000, seed: 42)
        #expect(stream.events.count == 10_000)
        #expect(stream.uniqueCount < 10_000)
        for t in PaymentEvent.EventType.allCases where t != .settlementDayClosed {
            #expect((stream.typeCounts[t] ?? 0) > 50, "\(t.rawValue) appears in the stream")
        }
        let handler = LedgerHandler(merchants: LedgerStream.merchants)

        let ordered = try await LedgerHarness(handler: handler)
        #expect(try await ordered.apply(stream.events) == stream.uniqueCount)
        try await Self.checkInvariants(ordered)
        let orderedBalances = try ordered.balances()
        #expect(orderedBalances.asDictionary == stream.expected)
        #expect(try await ordered.scalar("SELECT COUNT(*) FROM ledger_events") == Int64(stream.uniqueCount))
        // Refunds that arrived before their payment were reclassified, none left to the unknown customer.
        #expect(try await ordered.scalar("SELECT COUNT(*) FROM transactions WHERE kind = 'reclass'")! > 0)
        #expect(try await ordered.scalar("SELECT COUNT(*) FROM unresolved_receivables WHERE resolved_txid IS NULL") == 0)
        // Every reversal found its original (some only after it arrived, then moved once).
        #expect(try await ordered.scalar("SELECT COUNT(*) FROM reversals WHERE matched = 0") == 0)
        #expect(try await ordered.scalar("SELECT COUNT(*) FROM transactions WHERE txid LIKE '%/match'")! > 0)

        var rng = SplitMix64(seed: 7)
        let shuffledEvents = stream.events.shuffled(using: &rng)
        let shuffled = try await LedgerHarness(handler: handler)
        #expect(try await shuffled.apply(shuffledEvents, batch: 137) == stream.uniqueCount)
        try await Self.checkInvariants(shuffled)
        #expect(try shuffled.balances() == orderedBalances)

        // Redelivering the whole stream changes nothing.
        #expect(try await shuffled.apply(stream.events) == 0)
        #expect(try shuffled.balances() == orderedBalances)

        // Partitioned by merchant into two files: the CLI's merge gives the same trial balance.
        let p0 = try await LedgerHarness(handler: handler, name: "ledger-writer.p0")
        let p1 = try await LedgerHarness(handler: handler, name: "ledger-writer.p1")
        let owners = Set(["m_acme", "m_bahrain"])
        try await p0.apply(shuffledEvents.filter { owners.contains($0.merchantID) })
        try await p1.apply(shuffledEvents.filter { !owners.contains($0.merchantID) })
        let merged = try LedgerBook(files: [p0.path, p1.path])
        #expect(try merged.balances() == orderedBalances)
        #expect(try merged.balances(merchant: "m_tokyo") == orderedBalances.filter { $0.account.contains(":Tokyo-Shop:") })
        let mergedSum = try merged.rows().reduce(into: [String: Int64]()) { $0[$1.currency, default: 0] += $1.amount }
        #expect(mergedSum.values.allSatisfy { $0 == 0 })
    }

    @Test("--as-of includes that business day and excludes later ones")
    func asOf() async throws {
        let h = try await LedgerHarness()
        try await h.apply([
            ledgerEvent("a", .paymentSucceeded, amount: 1000, at: "2026-11-23T12:00:00Z"),
            ledgerEvent("b", .paymentSucceeded, amount: 500, at: "2026-11-24T12:00:00Z"),
        ])
        #expect(try h.balances(asOf: "2026-11-23").asDictionary["Income:M-acme:Sales GBP"] == -1000)
        #expect(try h.balances(asOf: "2026-11-24").asDictionary["Income:M-acme:Sales GBP"] == -1500)
        #expect(try h.balances(asOf: "2026-11-22").isEmpty)
        #expect(try h.balances(merchant: "m_other").isEmpty)
        #expect(try LedgerBook.checkDate("2026-02-28", option: "--as-of") == "2026-02-28")
        for bad in ["2026-13-01", "2026-02-30", "26-11-24", "2026/11/24", "yesterday"] {
            #expect(throws: LedgerBookError.self) { try LedgerBook.checkDate(bad, option: "--as-of") }
        }
    }
}
