import Foundation
import PayfleetCore
import PayfleetStore

extension LedgerBook {
    /// One line of an account statement.
    public struct StatementLine: Sendable, Equatable {
        public var date: String
        public var transactionID: String
        public var eventID: String
        public var description: String
        public var currency: String
        public var amount: Int64
        /// The account's balance in `currency` after this line (opening balance included).
        public var balance: Int64
    }

    /// The postings of `account` from `from` to `to` (both included) with a running balance per
    /// currency that starts from the balance before `from`; also those opening balances.
    public func statement(account: String, merchant: String? = nil, from: String? = nil, to: String? = nil) throws
        -> (opening: [String: Int64], lines: [StatementLine])
    {
        var opening: [String: Int64] = [:]
        if let from {
            for f in files {
                let db = try open(f)
                for r in try db.query(
                    """
                    SELECT p.currency, SUM(p.amount) FROM postings p JOIN transactions t ON t.txid = p.txid
                    WHERE p.account = ?1 AND t.date < ?2 AND (?3 IS NULL OR t.merchant_id = ?3) GROUP BY p.currency
                    """, [.text(account), .text(from), SQLValue(merchant)])
                {
                    guard let c = r.string(0), let v = r.int(1) else { continue }
                    let (s, o) = opening[c, default: 0].addingReportingOverflow(v)
                    guard !o else { throw LedgerBookError("balance of \(account) \(c) overflows Int64") }
                    opening[c] = s
                }
            }
        }
        var running = opening
        var lines: [StatementLine] = []
        for r in try rows(merchant: merchant, from: from, to: to) where r.account == account {
            let (s, o) = running[r.currency, default: 0].addingReportingOverflow(r.amount)
            guard !o else { throw LedgerBookError("balance of \(account) \(r.currency) overflows Int64") }
            running[r.currency] = s
            lines.append(
                StatementLine(
                    date: r.date, transactionID: r.transactionID, eventID: r.eventID, description: r.description,
                    currency: r.currency, amount: r.amount, balance: s))
        }
        return (opening, lines)
    }
}
