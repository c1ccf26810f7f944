import ArgumentParser
import Foundation
import PayfleetCore
import PayfleetSettlement

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
        guard let rc = context.runtime["settlement-aggregator"] else {
            return [(context.stateDir as NSString).appendingPathComponent("settlement-aggregator.sqlite")]
        }
        let partitions = rc.topology.partitions
        guard partitions > 1 else { return [rc.statePath] }
        let dir = (rc.statePath as NSString).deletingLastPathComponent
        return (0..<partitions).map { (dir as NSString).appendingPathComponent("\(rc.worker).p\($0).sqlite") }
    }

    static func book(_ global: GlobalOptions, stateFiles: [String]) throws -> SettlementBook {
        do {
            if !stateFiles.isEmpty { return try SettlementBook(files: stateFiles) }
            return try SettlementBook(files: Self.stateFiles(try CLIContext.load(global)))
        } catch let e as SettlementError {
            throw CLIFailure(e.message)
        }
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
        public init() {}

        /// The rendered report.
        public func render(now: Date = Date()) throws -> String {
            let date = try SettlementCommand.checked { try SettlementBook.checkDate(self.date, option: "--date") }
            let book = try SettlementCommand.book(global, stateFiles: stateFiles)
            let days = try SettlementCommand.checked { try book.report(date: date, merchant: merchant) }
            switch format ?? (global.json ? .json : .table) {
            case .json: return try SettlementReport.json(days)
            case .csv: return SettlementReport.csv(days)
            case .table: return SettlementReport.table(days, date: date)
            case .html:
                let from = CalendarDay(date)!.adding(days: -13).description
                let history = try SettlementCommand.checked { try book.days(from: from, to: date, merchant: merchant) }
                return SettlementReport.html(days, history: history, date: date, merchant: merchant, generatedAt: now)
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

    public struct Reconcile: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Match a provider settlement file against recorded events; exit 0 only when everything matches.")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "Business day whose recorded events must appear in the file (YYYY-MM-DD).") public var date: String
        @Option(help: "stripe (payout reconciliation report) or adyen (Settlement Details Report).")
        public var provider: SettlementProvider
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(name: .customLong("state-file"), help: "Read this SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        @Argument(help: "The provider's CSV file.") public var file: String
        @Option(
            name: .customLong("metrics-file"),
            help: "Also write the result as Prometheus text (node_exporter's textfile collector), replacing FILE atomically.")
        public var metricsFile: String?
        public init() {}

        /// The Prometheus text `--metrics-file` writes: mismatches per kind (the alert
        /// PayfleetReconciliationMismatch reads them), matched lines, and when this ran.
        public func metrics(_ r: Reconciliation, now: Date = Date()) -> String {
            func esc(_ s: String) -> String {
                s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    .replacingOccurrences(of: "\n", with: "\\n")
            }
            let base = "provider=\"\(r.provider.rawValue)\",merchant=\"\(esc(merchant ?? "all"))\",date=\"\(esc(r.date))\""
            var out = [
                "# HELP payfleet_settlement_reconcile_mismatches Lines of the last reconciliation that did not match, by kind",
                "# TYPE payfleet_settlement_reconcile_mismatches gauge",
            ]
            for (kind, n) in [
                ("missing_ours", r.missingOurs.count), ("missing_provider", r.missingProvider.count),
                ("amount", r.amountMismatches.count), ("fee", r.feeMismatches.count),
            ] {
                out.append("payfleet_settlement_reconcile_mismatches{\(base),kind=\"\(kind)\"} \(n)")
            }
            out += [
                "# HELP payfleet_settlement_reconcile_matched Lines of the last reconciliation that matched",
                "# TYPE payfleet_settlement_reconcile_matched gauge",
                "payfleet_settlement_reconcile_matched{\(base)} \(r.matched.count)",
                "# HELP payfleet_settlement_reconcile_last_run_timestamp_seconds When the last reconciliation ran",
                "# TYPE payfleet_settlement_reconcile_last_run_timestamp_seconds gauge",
                "payfleet_settlement_reconcile_last_run_timestamp_seconds{\(base)} \(Int64(now.timeIntervalSince1970))",
            ]
            return out.joined(separator: "\n") + "\n"
        }

        func writeMetrics(_ r: Reconciliation) throws {
            guard let metricsFile else { return }
            // Beside the target, then renamed: the collector never reads half a file.
            let tmp = metricsFile + ".tmp.\(getpid())"
            do {
                try Data(metrics(r).utf8).write(to: URL(fileURLWithPath: tmp))
                if FileManager.default.fileExists(atPath: metricsFile) { try FileManager.default.removeItem(atPath: metricsFile) }
                try FileManager.default.moveItem(atPath: tmp, toPath: metricsFile)
            } catch {
                try? FileManager.default.removeItem(atPath: tmp)
                throw CLIFailure("--metrics-file: cannot write \(metricsFile): \(error.localizedDescription)")
            }
        }

        /// The reconciliation (the text or JSON is rendered by the caller).
        public func reconcile() throws -> Reconciliation {
            let date = try SettlementCommand.checked { try SettlementBook.checkDate(self.date, option: "--date") }
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIFailure("\(file): cannot read the file") }
            guard let text = String(data: data, encoding: .utf8) else { throw CLIFailure("\(file): not UTF-8 text") }
            let book = try SettlementCommand.book(global, stateFiles: stateFiles)
            return try SettlementCommand.checked {
                let parsed = try (provider == .stripe ? ProviderFile.stripe(text) : ProviderFile.adyen(text))
                let events = try book.events(provider: provider.rawValue, merchant: merchant)
                return Reconciliation.match(
                    date: date, provider: provider, lines: parsed.lines, skipped: parsed.skipped, events: events)
            }
        }

        /// What `run` prints and the exit status (0 only when everything matches).
        public func output() throws -> (text: String, status: Int32) {
            let r = try reconcile()
            try writeMetrics(r)
            return (global.json ? try r.json() : r.text(), r.allMatch ? 0 : 1)
        }

        public func run() async throws {
            let (text, status) = try output()
            print(text)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
