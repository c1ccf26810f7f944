import ArgumentParser
import Foundation
import PayfleetCore
import PayfleetLedger

extension LedgerExportFormat: ExpressibleByArgument {}

/// `payfleet ledger balance | export | statement` (read-only) and `post | revert` (manual entries, see
/// `LedgerJournal`) over `ledger-writer`'s state files,
/// merged over partitions.
public struct LedgerCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Trial balance and exports of the ledger.",
        subcommands: [Balance.self, Export.self, Post.self, Revert.self, Statement.self])
    public init() {}

    static func book(_ global: GlobalOptions, stateFiles: [String]) throws -> LedgerBook {
        if !stateFiles.isEmpty { return try LedgerBook(files: stateFiles) }
        return try LedgerBook(files: LedgerBook.stateFiles(try CLIContext.load(global)))
    }

    public struct Balance: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Trial balance per account and currency (zero balances omitted).")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(name: .customLong("as-of"), help: "Include transactions up to and including this business day (YYYY-MM-DD).")
        public var asOf: String?
        @Option(name: .customLong("state-file"), help: "Read this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        public init() {}

        /// What `run` prints: a table, or `[{"account","currency","balance"}]` with `--json`.
        public func output() throws -> String {
            let asOf = try LedgerBook.checkDate(asOf, option: "--as-of")
            let balances = try LedgerCommand.book(global, stateFiles: stateFiles).balances(merchant: merchant, asOf: asOf)
            if global.json {
                let objects: [[String: Any]] = balances.map {
                    ["account": $0.account, "currency": $0.currency, "balance": $0.balance]
                }
                let data = try JSONSerialization.data(
                    withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                return String(decoding: data, as: UTF8.self)
            }
            let width = max(7, balances.map(\.account.count).max() ?? 0)
            func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
            func lpad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
            var lines = ["\(pad("ACCOUNT", width))  CURRENCY  \(lpad("BALANCE", 20))"]
            var totals: [String: Int64] = [:]
            for b in balances {
                lines.append("\(pad(b.account, width))  \(pad(b.currency, 8))  \(lpad(LedgerExportFormat.major(b.balance, b.currency), 20))")
                totals[b.currency, default: 0] &+= b.balance
            }
            for (c, t) in totals.sorted(by: { $0.key < $1.key }) {
                lines.append("\(pad("(total)", width))  \(pad(c, 8))  \(lpad(LedgerExportFormat.major(t, c), 20))")
            }
            return lines.joined(separator: "\n")
        }

        public func run() async throws {
            print(try output())
        }
    }

    public struct Export: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Export postings as an hledger journal, a beancount file or CSV.")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "hledger, beancount or csv.") public var format: LedgerExportFormat
        @Option(help: "First business day included (YYYY-MM-DD).") public var from: String?
        @Option(help: "Last business day included (YYYY-MM-DD).") public var to: String?
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") public var output: String?
        @Option(name: .customLong("state-file"), help: "Read this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        public init() {}

        /// The exported text.
        public func render() throws -> String {
            let from = try LedgerBook.checkDate(from, option: "--from")
            let to = try LedgerBook.checkDate(to, option: "--to")
            let rows = try LedgerCommand.book(global, stateFiles: stateFiles).rows(merchant: merchant, from: from, to: to)
            return format.render(rows)
        }

        public func run() async throws {
            let text = try render()
            if let output {
                try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }
}

extension LedgerBook {
    /// The state files of the configured `ledger-writer`: `<state_dir>/<name>.sqlite`, or one
    /// `<name>.pN.sqlite` per partition.
    public static func stateFiles(_ context: CLIContext) -> [String] {
        let identity = WorkerIdentity.ledgerWriter
        guard let rc = context.runtime[identity.configSection] else {
            return [(context.stateDir as NSString).appendingPathComponent(identity.stateFileName(partition: 0, partitions: 1))]
        }
        return rc.partitionStatePaths
    }
}
