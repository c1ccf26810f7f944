import ArgumentParser
import Foundation
import PayfleetCore
import PayfleetSettlement
import PayfleetStore

extension SettlementReportFormat: ExpressibleByArgument {}
extension SettlementProvider: ExpressibleByArgument {}

/// `payfleet settlement report | reconcile`: read-only queries over `settlement-aggregator`'s
/// state files, merged over partitions.
public struct SettlementCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "settlement", abstract: "Daily settlement reports and reconciliation against provider files.",
        subcommands: [Report.self, Reconcile.self])
    public init() {}

    /// The state files of the configured `settlement-aggregator`: `<state_dir>/<name>.sqlite`,
    /// or one `<name>.pN.sqlite` per partition.
    public static func stateFiles(_ context: CLIContext) -> [String] {
        let identity = WorkerIdentity.settlementAggregator
        guard let rc = context.runtime[identity.configSection] else {
            return [(context.stateDir as NSString).appendingPathComponent(identity.stateFileName(partition: 0, partitions: 1))]
        }
        return rc.partitionStatePaths
    }

    static func book(_ global: GlobalOptions, stateFiles: [String]) throws -> SettlementBook {
        do {
            if !stateFiles.isEmpty { return try SettlementBook(files: stateFiles) }
            return try SettlementBook(files: Self.stateFiles(try CLIContext.load(global)))
        } catch let e as SettlementError {
            throw CLIFailure(e.message)
        }
    }

    /// `reconciliation.sqlite` beside the (first) settlement state file.
    public static func resultsPath(beside files: [String]) -> String {
        let dir = files.first.map { ($0 as NSString).deletingLastPathComponent } ?? "."
        return ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(ReconciliationStore.fileName)
    }

    static func checked<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as SettlementError { throw CLIFailure(e.message) }
    }

    public struct Report: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Settlement per merchant, currency and business day (closed days with their adjustments).")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "Business day (YYYY-MM-DD).") public var date: String
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(help: "table, csv, json or html (default table; json with --json).") public var format: SettlementReportFormat?
        @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") public var output: String?
        @Option(name: .customLong("state-file"), help: "Read this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        @Option(name: .customLong("results-file"), help: "Reconciliation results to show (else reconciliation.sqlite beside the settlement state).")
        public var resultsFile: String?
        public init() {}

        /// The rendered report.
        public func render(now: Date = Date()) throws -> String {
            let date = try SettlementCommand.checked { try SettlementBook.checkDate(self.date, option: "--date") }
            let book = try SettlementCommand.book(global, stateFiles: stateFiles)
            let days = try SettlementCommand.checked { try book.report(date: date, merchant: merchant) }
            let path = resultsFile ?? SettlementCommand.resultsPath(beside: book.files)
            let runs = try SettlementCommand.checked { try ReconciliationStore.latest(path: path, date: date, merchant: merchant) }
            switch format ?? (global.json ? .json : .table) {
            case .json: return try SettlementReport.json(days, reconciliation: runs)
            case .csv: return SettlementReport.csv(days, reconciliation: runs)
            case .table: return SettlementReport.table(days, date: date, reconciliation: runs)
            case .html:
                let from = CalendarDay(date)!.adding(days: -13).description
                let history = try SettlementCommand.checked { try book.days(from: from, to: date, merchant: merchant) }
                return SettlementReport.html(
                    days, history: history, date: date, merchant: merchant, generatedAt: now, reconciliation: runs)
            }
        }

        public func run() async throws {
            let text = try render()
            if let output {
                try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
            } else {
                print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
            }
        }
    }

}
