import Foundation
import PayfleetCore
import PayfleetTestKit

/// One `ledger-writer` process under test (config with the stream's `merchants:`). With
/// `worker: "demo-worker"` the same harness runs the runtime's demonstration handler (the
/// benchmark's baseline).
typealias LedgerFleet = WorkerProcess

extension WorkerProcess {
    static func with(
        prefix: String, worker: String = "ledger-writer", _ body: (WorkerProcess) async throws -> Void
    ) async throws {
        let isLedger = worker == "ledger-writer"
        var o = Options(
            executable: isLedger ? "ledger-writer" : "payfleet-demo-worker", section: worker, prefix: prefix,
            routingKeys: isLedger
                ? WorkerIdentity.ledgerWriter.routingKeys
                : PaymentEvent.EventType.allCases.map(\.rawValue))
        let merchants = LedgerStream.merchants.map { m -> String in
            var s = "  - id: \(m.id)\n    timezone: \(m.timeZone)\n"
            s += "    cutoff: \"\(String(format: "%02d:%02d", m.cutoffMinutes / 60, m.cutoffMinutes % 60))\"\n"
            s += "    currencies: [\(m.currencies.joined(separator: ", "))]\n"
            if m.ledgerName != Merchant.accountSegment(m.id) { s += "    ledger_name: \"\(m.ledgerName)\"\n" }
            return s
        }.joined()
        o.topLevelYAML = "merchants:\n" + merchants
        if isLedger { o.sectionYAML = ["unknown_customer: Unidentified"] }
        try await with(o, body)
    }

    /// Events the worker recorded (posted or not).
    func recorded() throws -> Int {
        try count(options.executable == "ledger-writer" ? "ledger_events" : "applied")
    }
}
