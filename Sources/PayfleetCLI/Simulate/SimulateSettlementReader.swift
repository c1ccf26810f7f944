import Foundation
import PayfleetSettlement

/// The simulator's settlement check reads the worker's files as `settlement report` does:
/// every partition's file, each day's totals plus its late adjustments.
struct BookSettlementReader: SimSettlementReader {
    func totals(configPath: String, from: String, to: String) throws -> [SimExpectation.DayKey: SimExpectation.DayTotals]? {
        let ctx = try CLIContext.load(configPath: configPath)
        let files = SettlementCommand.stateFiles(ctx).filter { FileManager.default.fileExists(atPath: $0) }
        guard !files.isEmpty else { return nil }
        var out: [SimExpectation.DayKey: SimExpectation.DayTotals] = [:]
        for d in try SettlementBook(files: files).days(from: from, to: to, merchant: nil) {
            let t = d.adjusted
            out[.init(merchant: d.merchantID, currency: d.currency, date: d.date)] =
                .init(count: t.count, gross: t.gross, refunds: t.refunds, disputes: t.disputes, fees: t.fees)
        }
        return out
    }
}
