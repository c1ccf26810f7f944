import Foundation
import PayfleetCore
import PayfleetWorker

/// The stored reconciliation of the report's day (`payfleet settlement reconcile`), shown in
/// every format of `payfleet settlement report`.
extension SettlementReport {
    /// The runs that concern one report line: its merchant's (or a run over every merchant).
    static func runs(_ runs: [ReconciliationRun], for d: SettlementDay) -> [ReconciliationRun] {
        runs.filter { $0.merchantID == d.merchantID || $0.merchantID == "*" }
    }

    /// One run as the JSON report carries it, limited to `currency` when given.
    public static func reconciliationObject(_ run: ReconciliationRun, currency: String?) -> [String: Any] {
        let items = run.items.filter { currency == nil || $0.currency == currency }
        func list(_ section: String) -> [[String: Any]] {
            items.filter { $0.section == section }.map {
                [
                    "status": $0.status, "reference": $0.reference, "currency": $0.currency,
                    "ours": $0.ours.map { $0 as Any } ?? NSNull(), "provider": $0.provider.map { $0 as Any } ?? NSNull(),
                    "kind": $0.kind.map { $0 as Any } ?? NSNull(), "detail": $0.detail,
                ]
            }
        }
        let problems = ["missing_ours", "missing_provider", "amount_mismatch", "fee_mismatch"]
        return [
            "provider": run.provider, "run_id": run.runID, "created_at": run.createdAt, "files": run.files,
            "all_match": run.allMatch, "mismatches": run.mismatches, "total_mismatches": run.totalMismatches,
            "matched": run.matched, "expected": run.expected, "payouts": list("payout"), "balances": list("balance"),
            "missing_events": list("missing_event"),
            "problems": items.filter { problems.contains($0.section) }.map {
                [
                    "section": $0.section, "kind": $0.kind.map { $0 as Any } ?? NSNull(), "reference": $0.reference,
                    "currency": $0.currency, "ours": $0.ours.map { $0 as Any } ?? NSNull(),
                    "provider": $0.provider.map { $0 as Any } ?? NSNull(),
                ]
            },
        ]
    }

    /// `reconciliation`: `ok`, `mismatch` or empty; `reconciliation_mismatches`: their number.
    static func csvReconciliation(_ runs: [ReconciliationRun]) -> (String, String) {
        guard !runs.isEmpty else { return ("", "") }
        let n = runs.reduce(0) { $0 + $1.totalMismatches }
        return (n == 0 ? "ok" : "mismatch", "\(n)")
    }

    /// The table's reconciliation section.
    static func tableReconciliation(_ runs: [ReconciliationRun]) -> [String] {
        guard !runs.isEmpty else { return [] }
        var lines = ["", "Reconciliation (latest payfleet settlement reconcile of this date):"]
        for run in runs {
            let m = run.mismatches.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            lines.append(
                "  \(run.provider) \(run.merchantID) run \(run.runID) at \(run.createdAt): "
                    + (run.allMatch ? "OK" : "MISMATCH (\(m.joined(separator: ", ")))")
                    + ", \(run.matched) matched, \(run.expected) expected (in flight)")
            for i in run.items where i.section == "payout" || i.section == "balance" {
                func amt(_ v: Int64?) -> String { v.map { major($0, i.currency) } ?? "n/a" }
                lines.append("    \(i.section) \(i.reference) \(i.currency) \(i.status): books \(amt(i.ours)), provider \(amt(i.provider))")
            }
            for i in run.items where ["missing_ours", "missing_provider", "amount_mismatch", "fee_mismatch", "missing_event"].contains(i.section) {
                func amt(_ v: Int64?) -> String { v.map { major($0, i.currency) } ?? "n/a" }
                lines.append("    \(i.section) \(i.kind ?? "") \(i.reference) \(i.currency): books \(amt(i.ours)), provider \(amt(i.provider)) \(i.detail)")
            }
        }
        return lines
    }

    /// The HTML report's reconciliation section.
    static func htmlReconciliation(_ runs: [ReconciliationRun]) -> String {
        var h = "<section id=\"reconciliation\">\n<h2>Reconciliation</h2>\n"
        guard !runs.isEmpty else {
            return h + "<p class=\"empty\">No provider report was reconciled for this date.</p>\n</section>\n"
        }
        for run in runs {
            h += "<h3 data-provider=\"\(escape(run.provider))\" class=\"\(run.allMatch ? "closed" : "neg")\">\(escape(run.provider)) — \(escape(run.merchantID)): "
                + (run.allMatch ? "reconciled" : "\(run.totalMismatches) mismatches") + "</h3>\n"
            h += "<p class=\"meta\">Run \(run.runID) at \(escape(run.createdAt)); \(run.matched) lines matched, \(run.expected) expected (paid after the date). Files: \(escape(run.files.joined(separator: "; ")))</p>\n"
            let shown = run.items.filter { $0.section != "expected" && $0.section != "posted" }
            guard !shown.isEmpty else { continue }
            h += "<table>\n<thead><tr><th>Check</th><th>Status</th><th>Reference</th><th>Currency</th><th class=\"num\">Books</th><th class=\"num\">Provider</th><th>Detail</th></tr></thead>\n<tbody>\n"
            for i in shown {
                func amt(_ v: Int64?) -> String { v.map { major($0, i.currency) } ?? "" }
                let bad = !["ok", "expected", "not_checked"].contains(i.status)
                h += "<tr class=\"recon\(bad ? " neg" : "")\" data-section=\"\(escape(i.section))\"><td>\(escape(i.section))</td><td>\(escape(i.status))</td><td><code>\(escape(i.reference))</code></td><td>\(escape(i.currency))</td><td class=\"num\">\(amt(i.ours))</td><td class=\"num\">\(amt(i.provider))</td><td>\(escape(i.detail))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        return h + "</section>\n"
    }
}
