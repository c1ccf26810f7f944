import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetStore

/// Manual journal entries (`payfleet ledger post | revert`), written by the operator's CLI
/// straight into `ledger-writer`'s SQLite file of the merchant's partition.
///
/// Why the CLI writes the file itself rather than publishing an internal event for
/// ledger-writer to book: the invariants that matter live in the database, not in
/// ledger-writer's code (the deferred balance check, `transaction_checks_balanced`, the
/// immutability triggers, the INTEGER and account-shape checks of `LedgerSchema`), so an entry
/// written here is held to exactly the rules a worker's posting is. The operator gets the answer
/// synchronously (the transaction id, or the trigger's refusal) instead of a message that might
/// be dead-lettered later, and no new routing key, binding or ingest refusal rule is needed.
/// Concurrency with a running ledger-writer is SQLite's: the file is in WAL mode, the whole
/// entry (transaction, postings, check row, `manual_entries` row) is one `BEGIN IMMEDIATE`
/// transaction with `synchronous=FULL`, and the busy timeout waits out the worker's short group
/// commits. ledger-writer keeps no cached balances that a manual entry could make stale.
///
/// Which file: a merchant's postings live in the one partition the consistent-hash exchange
/// sends it to, which the CLI cannot compute (the mapping depends on the broker's binding
/// order). So an entry goes to the file that already holds the merchant's transactions; with
/// one partition, to its only file; a merchant no file knows yet (or, after a badly done move,
/// that two files know) needs `--state-file`. A reversal goes to the file holding the
/// transaction it reverses.
public struct LedgerJournal: Sendable {
    /// One leg of a manual entry: signed minor units, debit positive.
    public struct Leg: Sendable, Equatable {
        public var account: String
        public var currency: String
        public var amount: Int64
        public init(account: String, currency: String, amount: Int64) {
            self.account = account
            self.currency = currency
            self.amount = amount
        }
    }

    /// What was written.
    public struct Entry: Sendable, Equatable {
        public var transactionID: String
        public var file: String
        public var merchantID: String
        public var date: String
        public var description: String
        public var legs: [Leg]
        public var reverses: String?
    }

    public let files: [String]

    public init(files: [String]) throws {
        let existing = files.filter { FileManager.default.fileExists(atPath: $0) }
        guard !existing.isEmpty else {
            throw CLIFailure("no ledger state found (looked for \(files.joined(separator: ", ")))")
        }
        self.files = existing
    }

    static let accountTypes: Set<String> = ["Assets", "Liabilities", "Equity", "Income", "Expenses"]

    /// `Type:Segment[:Segment…]` with segments every export format accepts (hledger, beancount).
    public static func checkAccount(_ account: String) throws {
        let parts = account.split(separator: ":", omittingEmptySubsequences: false)
        let segmentOK: (Substring) -> Bool = { s in
            guard let first = s.first, first.isASCII, first.isUppercase || first.isNumber else { return false }
            return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
        guard parts.count >= 2, accountTypes.contains(String(parts[0])), parts.dropFirst().allSatisfy(segmentOK),
            account.count <= 255
        else {
            throw CLIFailure(
                "account '\(account)' is not Type:Segment[:…] (Type one of \(accountTypes.sorted().joined(separator: ", ")); "
                    + "segments start with A-Z or 0-9 and hold only A-Z a-z 0-9 -)")
        }
    }

    /// A leg from `ACCOUNT AMOUNT CURRENCY` (major units, e.g. `Expenses:Acme:BankFees 12.50 GBP`).
    public static func parseLeg(_ text: String) throws -> Leg {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard words.count == 3 else {
            throw CLIFailure("--posting '\(text)': expected 'ACCOUNT AMOUNT CURRENCY', e.g. 'Expenses:Acme:BankFees 12.50 GBP'")
        }
        guard let currency = Currency(code: words[2].uppercased()) else {
            throw CLIFailure("--posting '\(text)': unknown currency '\(words[2])'")
        }
        let money: Money
        do { money = try Money(major: words[1], currency: currency) } catch {
            throw CLIFailure("--posting '\(text)': \(error)")
        }
        return Leg(account: words[0], currency: currency.code, amount: money.value)
    }

    /// Legs from a JSON file: `[{"account", "currency", "amount"}]` (amount: integer minor units,
    /// debit positive), or `{"postings": [...]}`.
    public static func parseFile(_ path: String) throws -> [Leg] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw CLIFailure("cannot read '\(path)': \(error.localizedDescription)")
        }
        struct Item: Decodable {
            var account: String
            var currency: String
            // Integer minor units only: 12.5 or "12.50" is refused, never rounded.
            var amount: Int64
        }
        struct Wrapped: Decodable { var postings: [Item] }
        let decoder = JSONDecoder()
        let items: [Item]
        if let list = try? decoder.decode([Item].self, from: data) {
            items = list
        } else if let wrapped = try? decoder.decode(Wrapped.self, from: data) {
            items = wrapped.postings
        } else {
            throw CLIFailure(
                "'\(path)': expected [{\"account\", \"currency\", \"amount\" (integer minor units)}] or {\"postings\": [...]}")
        }
        return try items.enumerated().map { i, o in
            guard let currency = Currency(code: o.currency.uppercased()) else {
                throw CLIFailure("'\(path)' posting \(i): unknown currency '\(o.currency)'")
            }
            return Leg(account: o.account, currency: currency.code, amount: o.amount)
        }
    }

    /// Refuses what the database would refuse, with a readable reason first.
    public static func checkLegs(_ legs: [Leg]) throws {
        guard legs.count >= 2 else { throw CLIFailure("a transaction needs at least two postings") }
        var sums: [String: Int64] = [:]
        for l in legs {
            try checkAccount(l.account)
            guard l.amount != 0 else { throw CLIFailure("posting to \(l.account) is zero") }
            guard l.amount.magnitude <= 1_000_000_000_000_000 else { throw CLIFailure("posting to \(l.account) is out of range") }
            sums[l.currency, default: 0] += l.amount
        }
        for (c, s) in sums.sorted(by: { $0.key < $1.key }) where s != 0 {
            throw CLIFailure("postings do not balance: \(c) sums to \(s) minor units")
        }
    }

    static func checkReason(_ reason: String) throws {
        let trimmed = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.count <= 1000 else { throw CLIFailure("--reason must be 1 to 1000 characters") }
    }

    /// The file for a merchant's new entry (see the type's comment).
    public func file(forMerchant merchant: String) throws -> String {
        var holders: [String] = []
        for f in files {
            let db = try SQLiteConnection(path: f, readOnly: true)
            if try db.queryOne("SELECT 1 FROM transactions WHERE merchant_id = ? LIMIT 1", [.text(merchant)]) != nil {
                holders.append(f)
            }
        }
        if holders.count == 1 { return holders[0] }
        if holders.isEmpty, files.count == 1 { return files[0] }
        if holders.isEmpty {
            throw CLIFailure("no partition holds transactions of merchant '\(merchant)'; name the file with --state-file")
        }
        throw CLIFailure("merchant '\(merchant)' has transactions in \(holders.joined(separator: ", ")); name one with --state-file")
    }

    static func open(_ path: String) throws -> SQLiteConnection {
        let db = try SQLiteConnection(path: path, durability: .full, busyTimeoutMS: 15_000)
        guard try db.queryOne("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'manual_entries'") != nil else {
            throw CLIFailure("\(path) has no manual_entries table: start this version's ledger-writer once to migrate it")
        }
        return db
    }

    /// A new transaction id for a manual entry: `man_<yyyymmdd>_<12 hex>`.
    static func newTransactionID(date: String) -> String {
        let hex = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12)
        return "man_\(date.replacingOccurrences(of: "-", with: ""))_\(hex)"
    }

    static func description(_ prefix: String, _ reason: String) -> String {
        // The same safe alphabet as ledger-writer's narrations: every export quotes it as is.
        let text = "\(prefix): \(reason)"
        return String(text.prefix(200).map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || " _.:/#-+@".contains(c)) ? c : "_"
        })
    }

    static func insert(_ db: SQLiteConnection, entry: Entry, action: String, reason: String, user: String) throws {
        try db.execute(
            """
            INSERT INTO transactions (txid, event_id, event_type, kind, merchant_id, date, description)
            VALUES (?, ?, ?, 'reclass', ?, ?, ?)
            """,
            [.text(entry.transactionID), .text(entry.transactionID), .text(action == "post" ? "manual.entry" : "manual.reversal"),
             .text(entry.merchantID), .text(entry.date), .text(entry.description)])
        for l in entry.legs {
            try db.execute(
                "INSERT INTO postings (txid, account, currency, amount) VALUES (?, ?, ?, ?)",
                [.text(entry.transactionID), .text(l.account), .text(l.currency), .int(l.amount)])
        }
        try db.execute(
            "INSERT INTO transaction_checks (txid, postings) VALUES (?, ?)",
            [.text(entry.transactionID), .int(Int64(entry.legs.count))])
        try db.execute(
            "INSERT INTO manual_entries (txid, action, reverses, reason, user, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(entry.transactionID), .text(action), SQLValue(entry.reverses), .text(reason), .text(user),
             .text(RFC3339.format(Date()))])
    }

    /// Posts a balanced manual entry for `merchant` dated `date`. With an `id` (the operator's
    /// idempotency key) the transaction is `man_<id>`: running the same command again after a
    /// timeout is refused instead of posting twice.
    public func post(
        merchant: String, date: String, reason: String, legs: [Leg], id: String? = nil, stateFile: String? = nil,
        user: String = AuditLog.user
    ) throws -> Entry {
        try Self.checkReason(reason)
        try Self.checkLegs(legs)
        guard !merchant.isEmpty, merchant.count <= 255 else { throw CLIFailure("--merchant is required") }
        if let id {
            guard !id.isEmpty, id.count <= 100, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            else { throw CLIFailure("--id: 1 to 100 characters of A-Z a-z 0-9 - _ .") }
            for f in files {
                let reader = try SQLiteConnection(path: f, readOnly: true)
                if try reader.queryOne("SELECT 1 FROM transactions WHERE txid = ?", [.text("man_\(id)")]) != nil {
                    throw CLIFailure("man_\(id) is already posted (in \(f)); nothing was written")
                }
            }
        }
        let path = try stateFile ?? file(forMerchant: merchant)
        let db = try Self.open(path)
        let entry = Entry(
            transactionID: id.map { "man_\($0)" } ?? Self.newTransactionID(date: date), file: path, merchantID: merchant, date: date,
            description: Self.description("manual", reason), legs: legs, reverses: nil)
        do {
            try db.transaction { try Self.insert(db, entry: entry, action: "post", reason: reason, user: user) }
        } catch let e as SQLiteError {
            if e.isConstraint, e.message.contains("UNIQUE") || e.message.contains("PRIMARY") {
                throw CLIFailure("\(entry.transactionID) is already posted; nothing was written")
            }
            throw CLIFailure("the ledger refused the entry: \(e.message)")
        }
        return entry
    }

    /// Posts the mirror image of `transactionID` (every posting negated) as a new transaction
    /// `<id>/revert` dated `date`. A transaction is reverted at most once.
    public func revert(transactionID: String, date: String, reason: String, user: String = AuditLog.user) throws -> Entry {
        try Self.checkReason(reason)
        for path in files {
            let reader = try SQLiteConnection(path: path, readOnly: true)
            guard let t = try reader.queryOne(
                "SELECT merchant_id, description FROM transactions WHERE txid = ?", [.text(transactionID)])
            else { continue }
            let db = try Self.open(path)
            let legs = try db.query(
                "SELECT account, currency, amount FROM postings WHERE txid = ? ORDER BY id", [.text(transactionID)]
            ).map { Leg(account: $0.string(0) ?? "", currency: $0.string(1) ?? "", amount: -($0.int(2) ?? 0)) }
            if let prior = try db.queryOne("SELECT txid FROM manual_entries WHERE reverses = ?", [.text(transactionID)]) {
                throw CLIFailure("\(transactionID) is already reverted by \(prior.string(0) ?? "?")")
            }
            let entry = Entry(
                transactionID: "\(transactionID)/revert", file: path, merchantID: t.string(0) ?? "", date: date,
                description: Self.description("reversal of \(transactionID)", reason), legs: legs,
                reverses: transactionID)
            do {
                try db.transaction { try Self.insert(db, entry: entry, action: "revert", reason: reason, user: user) }
            } catch let e as SQLiteError {
                if e.isConstraint, e.message.contains("UNIQUE") || e.message.contains("PRIMARY") {
                    throw CLIFailure("\(transactionID) is already reverted")
                }
                throw CLIFailure("the ledger refused the reversal: \(e.message)")
            }
            return entry
        }
        throw CLIFailure("no transaction '\(transactionID)' in \(files.joined(separator: ", "))")
    }
}
