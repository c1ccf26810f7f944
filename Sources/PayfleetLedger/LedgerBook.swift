import Foundation
import PayfleetCore
import PayfleetStore

/// A ledger query that cannot be answered (no state file, a bad date, a balance beyond Int64).
public struct LedgerBookError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Read-only access to `ledger-writer`'s SQLite files (one per partition), merged: the queries
/// behind `payfleet ledger balance` and `payfleet ledger export`.
public struct LedgerBook: Sendable {
    /// One posting with its transaction, as exported (signed minor units, debit positive).
    public struct Row: Sendable, Equatable {
        public var date: String
        public var transactionID: String
        public var eventID: String
        public var merchantID: String
        public var description: String
        public var account: String
        public var currency: String
        public var amount: Int64
    }

    /// One line of the trial balance.
    public struct Balance: Sendable, Equatable, Hashable {
        public var account: String
        public var currency: String
        public var balance: Int64
        public init(account: String, currency: String, balance: Int64) {
            self.account = account
            self.currency = currency
            self.balance = balance
        }
    }

    public let files: [String]

    public init(files: [String]) throws {
        let existing = files.filter { FileManager.default.fileExists(atPath: $0) }
        guard !existing.isEmpty else {
            throw LedgerBookError("no ledger state found (looked for \(files.joined(separator: ", ")))")
        }
        self.files = existing
    }

    /// `YYYY-MM-DD` or a failure naming the option.
    public static func checkDate(_ s: String?, option: String) throws -> String? {
        guard let s else { return nil }
        let shape = s.count == 10 && s.enumerated().allSatisfy { i, c in (i == 4 || i == 7) ? c == "-" : c.isASCII && c.isNumber }
        let parts = s.split(separator: "-").compactMap { Int($0) }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        // A real calendar day: 2026-02-30 does not round-trip.
        let real = shape && parts.count == 3
            && calendar.date(from: DateComponents(year: parts[0], month: parts[1], day: parts[2])).map {
                calendar.dateComponents([.year, .month, .day], from: $0) == DateComponents(year: parts[0], month: parts[1], day: parts[2])
            } == true
        guard real else {
            throw LedgerBookError("\(option): '\(s)' is not a date (YYYY-MM-DD)")
        }
        return s
    }

    func open(_ path: String) throws -> SQLiteConnection {
        try SQLiteConnection(path: path, readOnly: true)
    }

    /// Trial balance per account and currency, merged over partitions; zero balances omitted.
    /// `asOf` includes that day.
    public func balances(merchant: String? = nil, asOf: String? = nil) throws -> [Balance] {
        var sums: [String: [String: Int64]] = [:]
        for f in files {
            let db = try open(f)
            let rows = try db.query(
                """
                SELECT p.account, p.currency, SUM(p.amount) FROM postings p JOIN transactions t ON t.txid = p.txid
                WHERE (?1 IS NULL OR t.merchant_id = ?1) AND (?2 IS NULL OR t.date <= ?2)
                GROUP BY p.account, p.currency
                """,
                [SQLValue(merchant), SQLValue(asOf)])
            for r in rows {
                guard let account = r.string(0), let currency = r.string(1), let v = r.int(2) else { continue }
                let (sum, overflow) = sums[account, default: [:]][currency, default: 0].addingReportingOverflow(v)
                guard !overflow else { throw LedgerBookError("balance of \(account) \(currency) overflows Int64") }
                sums[account, default: [:]][currency] = sum
            }
        }
        var out: [Balance] = []
        for (account, byCurrency) in sums {
            for (currency, v) in byCurrency where v != 0 {
                out.append(Balance(account: account, currency: currency, balance: v))
            }
        }
        return out.sorted { ($0.account, $0.currency) < ($1.account, $1.currency) }
    }

    /// Every posting in the date range (both ends included), ordered by date, then by the
    /// order the worker wrote them.
    public func rows(merchant: String? = nil, from: String? = nil, to: String? = nil) throws -> [Row] {
        var keyed: [(key: (String, Int, Int64, Int64), row: Row)] = []
        for (fileIndex, f) in files.enumerated() {
            let db = try open(f)
            let rows = try db.query(
                """
                SELECT t.date, t.txid, t.event_id, t.merchant_id, t.description, p.account, p.currency, p.amount,
                       t.rowid, p.id
                FROM postings p JOIN transactions t ON t.txid = p.txid
                WHERE (?1 IS NULL OR t.merchant_id = ?1) AND (?2 IS NULL OR t.date >= ?2) AND (?3 IS NULL OR t.date <= ?3)
                ORDER BY t.date, t.rowid, p.id
                """,
                [SQLValue(merchant), SQLValue(from), SQLValue(to)])
            for r in rows {
                let row = Row(
                    date: r.string(0) ?? "", transactionID: r.string(1) ?? "", eventID: r.string(2) ?? "",
                    merchantID: r.string(3) ?? "", description: r.string(4) ?? "", account: r.string(5) ?? "",
                    currency: r.string(6) ?? "", amount: r.int(7) ?? 0)
                keyed.append(((row.date, fileIndex, r.int(8) ?? 0, r.int(9) ?? 0), row))
            }
        }
        keyed.sort { $0.key < $1.key }
        return keyed.map(\.row)
    }
}

/// The export formats of `payfleet ledger export`.
public enum LedgerExportFormat: String, CaseIterable, Sendable {
    case hledger, beancount, csv

    public func render(_ rows: [LedgerBook.Row]) -> String {
        switch self {
        case .csv: return LedgerExportFormat.csv(rows)
        case .hledger: return LedgerExportFormat.hledger(rows)
        case .beancount: return LedgerExportFormat.beancount(rows)
        }
    }

    /// `date,transaction_id,event_id,merchant_id,account,currency,amount` (DESIGN §6), signed
    /// minor units, RFC 4180 quoting where needed.
    public static func csv(_ rows: [LedgerBook.Row]) -> String {
        func field(_ s: String) -> String {
            guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
            return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        var out = "date,transaction_id,event_id,merchant_id,account,currency,amount\n"
        for r in rows {
            out += [r.date, r.transactionID, r.eventID, r.merchantID, r.account, r.currency, String(r.amount)]
                .map(field).joined(separator: ",") + "\n"
        }
        return out
    }

    public static func major(_ amount: Int64, _ code: String) -> String {
        guard let c = Currency(code: code) else { return "\(amount) \(code)" }
        return Money(value: amount, currency: c).majorString + " " + code
    }

    /// Transactions grouped in order, with their postings.
    static func transactions(_ rows: [LedgerBook.Row]) -> [[LedgerBook.Row]] {
        var out: [[LedgerBook.Row]] = []
        for r in rows {
            if let last = out.last?.last, last.transactionID == r.transactionID {
                out[out.count - 1].append(r)
            } else {
                out.append([r])
            }
        }
        return out
    }

    /// hledger journal: account and commodity declarations, then one entry per transaction
    /// with its ids as tags. Amounts in major units with the currency code.
    public static func hledger(_ rows: [LedgerBook.Row]) -> String {
        // The decimal mark is declared, so `1.250 BHD` can never be read as one thousand two
        // hundred and fifty; each commodity gets its ISO exponent as display precision.
        var out = "; Payfleet ledger export (hledger journal). Amounts in major units.\n\ndecimal-mark .\n\n"
        let currencies = Set(rows.map(\.currency)).sorted()
        for c in currencies {
            let exponent = Currency(code: c)?.exponent ?? 2
            out += "commodity 1000.\(String(repeating: "0", count: exponent)) \(c)\n"
        }
        if !currencies.isEmpty { out += "\n" }
        for a in Set(rows.map(\.account)).sorted() { out += "account \(a)\n" }
        for tx in transactions(rows) {
            let h = tx[0]
            out += "\n\(h.date) * \(h.description)  ; event_id:\(h.eventID), merchant_id:\(h.merchantID), "
                + "transaction_id:\(h.transactionID)\n"
            let width = max(40, (tx.map(\.account.count).max() ?? 0) + 2)
            for p in tx {
                let pad = String(repeating: " ", count: max(2, width - p.account.count + 2))
                out += "    \(p.account)\(pad)\(major(p.amount, p.currency))\n"
            }
        }
        return out
    }

    /// Beancount: `open` directives on each account's first date, then one transaction per
    /// ledger transaction with its ids as metadata.
    public static func beancount(_ rows: [LedgerBook.Row]) -> String {
        var out = "; Payfleet ledger export (beancount). Amounts in major units.\n"
        out += "option \"title\" \"Payfleet ledger\"\n\n"
        var opened: [String: String] = [:]
        for r in rows where opened[r.account].map({ r.date < $0 }) ?? true { opened[r.account] = r.date }
        for (account, date) in opened.sorted(by: { ($0.value, $0.key) < ($1.value, $1.key) }) {
            out += "\(date) open \(account)\n"
        }
        for tx in transactions(rows) {
            let h = tx[0]
            out += "\n\(h.date) * \"\(quote(h.description))\"\n"
            out += "  event_id: \"\(quote(h.eventID))\"\n"
            out += "  merchant_id: \"\(quote(h.merchantID))\"\n"
            out += "  transaction_id: \"\(quote(h.transactionID))\"\n"
            for p in tx {
                out += "  \(p.account)  \(major(p.amount, p.currency))\n"
            }
        }
        return out
    }

    static func quote(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }
}
