import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetLedger
import PayfleetStore
import PayfleetTestKit

/// Builds one canonical event for ledger tests.
func ledgerEvent(
    _ id: String, _ type: PaymentEvent.EventType, merchant: String = "m_acme", amount: Int64, currency: String = "GBP",
    fee: Int64? = nil, provider: String = "stripe", customer: String? = "cus_1", payment: String? = "pi_1",
    invoice: String? = nil, at: String = "2026-11-24T10:15:00Z", metadata: [String: String] = [:]
) -> PaymentEvent {
    let cur = Currency(code: currency)!
    return PaymentEvent(
        id: id, type: type, occurredAt: RFC3339.parse(at)!, receivedAt: RFC3339.parse(at)!,
        source: .init(provider: provider, eventID: "src_" + id), merchantID: merchant,
        customer: customer.map { .init(id: $0, name: "Ada Lovelace", email: "ada@example.com") },
        payment: payment.map { .init(id: $0, channel: "online", method: "card", card: .init(brand: "visa", last4: "4242")) },
        amount: Money(value: amount, currency: cur), fee: fee.map { Money(value: $0, currency: cur) }, invoiceID: invoice,
        metadata: metadata)
}

/// A ledger store in a temporary directory, fed the way the runtime feeds it: one transaction
/// per batch, one savepoint per event, the runtime's `processed` dedupe.
final class LedgerHarness: @unchecked Sendable {
    let dir: String
    let path: String
    let handler: LedgerHandler
    let store: Store

    init(handler: LedgerHandler = LedgerHandler(), name: String = "ledger") async throws {
        dir = TestEnvironment.makeTempDir("ledger-test")
        path = dir + "/\(name).sqlite"
        self.handler = handler
        store = try await Store(path: path, migrations: handler.migrations, durability: .normal)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// Applies events in batches; returns how many were new (not deduped). Handler errors
    /// propagate (a test expecting a refusal sees it).
    @discardableResult
    func apply(_ events: [PaymentEvent], batch: Int = 200) async throws -> Int {
        var applied = 0
        var i = 0
        while i < events.count {
            let chunk = Array(events[i..<min(i + batch, events.count)])
            let handler = self.handler
            applied += try await store.write { db in
                var n = 0
                for e in chunk {
                    if try db.isProcessed(e.id) { continue }
                    try db.savepoint {
                        _ = try handler.apply(e, db: db)
                        try db.markProcessed(e.id)
                    }
                    n += 1
                }
                return n
            }
            i += batch
        }
        return applied
    }

    func book() throws -> LedgerBook { try LedgerBook(files: [path]) }

    func balances(merchant: String? = nil, asOf: String? = nil) throws -> [LedgerBook.Balance] {
        try book().balances(merchant: merchant, asOf: asOf)
    }

    /// Postings of one transaction as [account: amount].
    func postings(_ txid: String) async throws -> [String: Int64] {
        try await store.withConnection { db in
            var out: [String: Int64] = [:]
            for r in try db.query("SELECT account, amount FROM postings WHERE txid = ?", [.text(txid)]) {
                out[r.string(0)!, default: 0] += r.int(1)!
            }
            return out
        }
    }

    func scalar(_ sql: String, _ args: [SQLValue] = []) async throws -> Int64? {
        try await store.withConnection { db in try db.queryOne(sql, args)?.int(0) }
    }
}


extension Array where Element == LedgerBook.Balance {
    var asDictionary: [String: Int64] {
        var d: [String: Int64] = [:]
        for b in self { d["\(b.account) \(b.currency)"] = b.balance }
        return d
    }
}
