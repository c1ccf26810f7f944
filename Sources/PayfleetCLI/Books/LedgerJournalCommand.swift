import ArgumentParser
import Foundation
import PayfleetCore
import PayfleetLedger

extension LedgerCommand {
    static func journal(_ global: GlobalOptions, stateFiles: [String]) throws -> (LedgerJournal, CLIContext?) {
        if !stateFiles.isEmpty { return (try LedgerJournal(files: stateFiles), try? CLIContext.load(global)) }
        let ctx = try CLIContext.load(global)
        return (try LedgerJournal(files: LedgerBook.stateFiles(ctx)), ctx)
    }

    static func audit(_ ctx: CLIContext?, auditLog: String?, action: String, entry: LedgerJournal.Entry, reason: String)
        throws
    {
        guard let path = auditLog ?? ctx?.auditLogPath else { return }
        let legs: [[String: Any]] = entry.legs.map { ["account": $0.account, "currency": $0.currency, "amount": $0.amount] }
        var extra: [String: Any] = [
            "reason": reason, "merchant_id": entry.merchantID, "date": entry.date, "postings": legs, "file": entry.file,
        ]
        if let r = entry.reverses { extra["reverses"] = r }
        do {
            try AuditLog(path: path).record(
                action: action, worker: "ledger-writer", outcome: "posted", ids: [entry.transactionID], extra: extra)
        } catch {
            throw CLIFailure("\(entry.transactionID) is posted, but the audit log could not be written: \(error)")
        }
    }

    static func render(_ entry: LedgerJournal.Entry, json: Bool) throws -> String {
        if json {
            var o: [String: Any] = [
                "transaction_id": entry.transactionID, "merchant_id": entry.merchantID, "date": entry.date,
                "file": entry.file,
                "postings": entry.legs.map { ["account": $0.account, "currency": $0.currency, "amount": $0.amount] },
            ]
            if let r = entry.reverses { o["reverses"] = r }
            let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            return String(decoding: data, as: UTF8.self)
        }
        var lines = ["\(entry.date) \(entry.transactionID)  \(entry.description)"]
        for l in entry.legs { lines.append("    \(l.account)  \(LedgerExportFormat.major(l.amount, l.currency))") }
        return lines.joined(separator: "\n")
    }

    /// `payfleet ledger post --merchant M --date D --reason TEXT (--posting … | --file F)`.
    public struct Post: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Post a balanced manual journal entry (written to the merchant's ledger partition, audited).",
            discussion: """
                Postings come from repeated --posting 'ACCOUNT AMOUNT CURRENCY' (major units, debit positive, \
                e.g. --posting 'Expenses:Acme:BankFees 12.50 GBP' --posting 'Assets:Acme:Bank -12.50 GBP') or \
                from --file, a JSON list of {"account", "currency", "amount"} in integer minor units. The \
                database refuses an entry that does not balance per currency, as it does the workers' postings.
                """)
        @OptionGroup public var global: GlobalOptions
        @Option(help: "The merchant id whose books take the entry.") public var merchant: String
        @Option(help: "Business day of the entry (YYYY-MM-DD).") public var date: String
        @Option(help: "Why (kept with the entry, in its narration and in the audit log).") public var reason: String
        @Option(name: .customLong("posting"), help: "'ACCOUNT AMOUNT CURRENCY' (repeatable).") public var postings: [String] = []
        @Option(help: "JSON file of postings (minor units).") public var file: String?
        @Option(help: "Idempotency key: the transaction is man_<ID>, and the same ID is never posted twice.")
        public var id: String?
        @Option(name: .customLong("state-file"), help: "Write this SQLite file (the merchant's partition) instead of finding it.")
        public var stateFile: String?
        @Option(name: .customLong("audit-log"), help: "Audit log file (default: the config's cli.audit_log).")
        public var auditLog: String?
        public init() {}

        public func output() throws -> String {
            guard let date = try LedgerBook.checkDate(date, option: "--date") else { throw CLIFailure("--date is required") }
            var legs = try postings.map(LedgerJournal.parseLeg)
            if let file { legs += try LedgerJournal.parseFile(file) }
            let (journal, ctx) = try LedgerCommand.journal(global, stateFiles: stateFile.map { [$0] } ?? [])
            let entry = try journal.post(merchant: merchant, date: date, reason: reason, legs: legs, id: id, stateFile: stateFile)
            try LedgerCommand.audit(ctx, auditLog: auditLog, action: "ledger.post", entry: entry, reason: reason)
            return try LedgerCommand.render(entry, json: global.json)
        }

        public func run() async throws { print(try output()) }
    }

    /// `payfleet ledger revert TRANSACTION_ID --reason TEXT [--date D]`.
    public struct Revert: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Reverse a transaction with a new one (every posting negated); the original stays.")
        @OptionGroup public var global: GlobalOptions
        @Argument(help: "The transaction to reverse (a worker's or a manual one).") public var transactionID: String
        @Option(help: "Why (kept with the entry and in the audit log).") public var reason: String
        @Option(help: "Business day of the reversal (YYYY-MM-DD; default today, UTC).") public var date: String?
        @Option(name: .customLong("state-file"), help: "Search this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        @Option(name: .customLong("audit-log"), help: "Audit log file (default: the config's cli.audit_log).")
        public var auditLog: String?
        public init() {}

        public func output() throws -> String {
            let day = try LedgerBook.checkDate(date, option: "--date") ?? String(RFC3339.format(Date()).prefix(10))
            let (journal, ctx) = try LedgerCommand.journal(global, stateFiles: stateFiles)
            let entry = try journal.revert(transactionID: transactionID, date: day, reason: reason)
            try LedgerCommand.audit(ctx, auditLog: auditLog, action: "ledger.revert", entry: entry, reason: reason)
            return try LedgerCommand.render(entry, json: global.json)
        }

        public func run() async throws { print(try output()) }
    }

    /// `payfleet ledger statement ACCOUNT [--from D] [--to D]`.
    public struct Statement: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "An account's postings with a running balance (opening balance before --from).")
        @OptionGroup public var global: GlobalOptions
        @Argument(help: "The account, e.g. Assets:M-acme:Clearing:Stripe.") public var account: String
        @Option(help: "First business day included (YYYY-MM-DD).") public var from: String?
        @Option(help: "Last business day included (YYYY-MM-DD).") public var to: String?
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(name: .customLong("state-file"), help: "Read this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        public init() {}

        /// A table, or with `--json` `{"account", "opening": [{"currency","balance"}], "lines":
        /// [{"date","transaction_id","event_id","description","currency","amount","balance"}]}`.
        public func output() throws -> String {
            let from = try LedgerBook.checkDate(from, option: "--from")
            let to = try LedgerBook.checkDate(to, option: "--to")
            let (opening, lines) = try LedgerCommand.book(global, stateFiles: stateFiles).statement(
                account: account, merchant: merchant, from: from, to: to)
            if global.json {
                let o: [String: Any] = [
                    "account": account,
                    "opening": opening.sorted { $0.key < $1.key }.map { ["currency": $0.key, "balance": $0.value] },
                    "lines": lines.map {
                        [
                            "date": $0.date, "transaction_id": $0.transactionID, "event_id": $0.eventID,
                            "description": $0.description, "currency": $0.currency, "amount": $0.amount,
                            "balance": $0.balance,
                        ] as [String: Any]
                    },
                ]
                let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                return String(decoding: data, as: UTF8.self)
            }
            func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
            func lpad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
            let txWidth = max(14, lines.map(\.transactionID.count).max() ?? 0)
            var out = ["\(account)"]
            out.append("\(pad("DATE", 10))  \(pad("TRANSACTION", txWidth))  \(lpad("AMOUNT", 20))  \(lpad("BALANCE", 20))  DESCRIPTION")
            for (c, v) in opening.sorted(by: { $0.key < $1.key }) {
                out.append("\(pad(from ?? "", 10))  \(pad("(opening)", txWidth))  \(lpad("", 20))  \(lpad(LedgerExportFormat.major(v, c), 20))")
            }
            for l in lines {
                out.append(
                    "\(pad(l.date, 10))  \(pad(l.transactionID, txWidth))  \(lpad(LedgerExportFormat.major(l.amount, l.currency), 20))  "
                        + "\(lpad(LedgerExportFormat.major(l.balance, l.currency), 20))  \(l.description)")
            }
            return out.joined(separator: "\n")
        }

        public func run() async throws { print(try output()) }
    }
}
