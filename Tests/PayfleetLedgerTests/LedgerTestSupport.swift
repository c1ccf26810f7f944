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

/// A ledger store in a temporary directory, fed through the runtime's own batch step
/// (`HandlerHarness`: one transaction per batch, one savepoint per event, `processed` dedupe).
final class LedgerHarness: @unchecked Sendable {
    let harness: HandlerHarness<LedgerHandler>
    var dir: String { harness.dir ?? "." }
    var path: String { harness.path }
    var handler: LedgerHandler { harness.handler }
    var store: Store { harness.store }

    init(handler: LedgerHandler = LedgerHandler(), name: String = "ledger") async throws {
        harness = try await HandlerHarness(handler: handler, name: name)
    }

    /// Applies events in batches; returns how many were new (not deduped). A refused event is
    /// undone alone and its error thrown after its batch committed (a test expecting a refusal
    /// sees it).
    @discardableResult
    func apply(_ events: [PaymentEvent], batch: Int = 200) async throws -> Int {
        try await harness.apply(events, batch: batch).filter(\.isNew).count
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
