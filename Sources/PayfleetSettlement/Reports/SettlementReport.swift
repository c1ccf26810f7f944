import PayfleetWorker
import Foundation
import PayfleetCore

/// The formats of `payfleet settlement report`.
public enum SettlementReportFormat: String, CaseIterable, Sendable {
    case table, csv, json, html
}

/// Renders settlement report lines (DESIGN §6): amounts in integer minor units in CSV and JSON,
/// in major units with the currency's exponent for people (table, HTML).
public enum SettlementReport {
    static func major(_ v: Int64, _ code: String) -> String {
        guard let c = Currency(code: code) else { return "\(v)" }
        return Money(value: v, currency: c).majorString
    }

    /// `[{"merchant_id","currency","date","count","gross","refunds","disputes","fees","net","adjustments"}]`
    /// plus `failed_count`, `payouts`, `closed`, `closed_at`, `adjusted_net` and `adjustment_items`.
    /// `adjustments` is the net of the late events recorded against the day (minor units).
    public static func jsonObjects(_ days: [SettlementDay], reconciliation: [ReconciliationRun] = []) -> [[String: Any]] {
        days.map { d in
            let t = d.totals
            var o: [String: Any] = [
                "merchant_id": d.merchantID, "currency": d.currency, "date": d.date, "count": t.count, "gross": t.gross,
                "refunds": t.refunds, "disputes": t.disputes, "fees": t.fees, "net": t.net, "adjustments": d.adjustmentsNet,
                "adjusted_net": d.adjustedNet, "failed_count": t.failedCount, "payouts": t.payouts,
                "closed": d.closed,
                "adjustment_items": d.adjustments.map { a -> [String: Any] in
                    [
                        "event_id": a.eventID, "type": a.type, "arrived_at": a.arrivedAt, "count": a.delta.count,
                        "gross": a.delta.gross, "refunds": a.delta.refunds, "disputes": a.delta.disputes,
                        "fees": a.delta.fees, "net": a.delta.net, "payouts": a.delta.payouts,
                        "failed_count": a.delta.failedCount,
                    ]
                },
            ]
            o["closed_at"] = d.closedAt.map { $0 as Any } ?? NSNull()
            o["reconciliation"] = runs(reconciliation, for: d).map { reconciliationObject($0, currency: d.currency) }
            return o
        }
    }

    public static func json(_ days: [SettlementDay], reconciliation: [ReconciliationRun] = []) throws -> String {
        let data = try JSONSerialization.data(
            withJSONObject: jsonObjects(days, reconciliation: reconciliation), options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// RFC 4180 CSV, integer minor units.
    public static func csv(_ days: [SettlementDay], reconciliation: [ReconciliationRun] = []) -> String {
        func field(_ s: String) -> String {
            guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
            return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        var out = "merchant_id,currency,date,count,gross,refunds,disputes,fees,net,adjustments,adjusted_net,failed_count,payouts,closed,reconciliation,reconciliation_mismatches\n"
        for d in days {
            let t = d.totals
            let rec = csvReconciliation(runs(reconciliation, for: d))
            out += [d.merchantID, d.currency, d.date, "\(t.count)", "\(t.gross)", "\(t.refunds)", "\(t.disputes)",
                    "\(t.fees)", "\(t.net)", "\(d.adjustmentsNet)", "\(d.adjustedNet)", "\(t.failedCount)",
                    "\(t.payouts)", d.closed ? "true" : "false", rec.0, rec.1].map(field).joined(separator: ",") + "\n"
        }
        return out
    }

    /// A fixed-width table in major units, then the late-event adjustments.
    public static func table(_ days: [SettlementDay], date: String, reconciliation: [ReconciliationRun] = []) -> String {
        guard !days.isEmpty else {
            return (["no settlement activity on \(date)"] + tableReconciliation(reconciliation)).joined(separator: "\n")
        }
        let header = ["MERCHANT", "CUR", "DATE", "COUNT", "GROSS", "REFUNDS", "DISPUTES", "FEES", "NET", "ADJ", "FAILED",
                      "PAYOUTS", "STATE"]
        var rows: [[String]] = [header]
        for d in days {
            let t = d.totals
            let c = d.currency
            rows.append([d.merchantID, c, d.date, "\(t.count)", major(t.gross, c), major(t.refunds, c),
                         major(t.disputes, c), major(t.fees, c), major(t.net, c), major(d.adjustmentsNet, c),
                         "\(t.failedCount)", major(t.payouts, c), d.closed ? "closed" : "open"])
        }
        var widths = [Int](repeating: 0, count: header.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var lines = rows.map { r in
            r.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return (i < 3 || i == 12) ? c + pad : pad + c
            }.joined(separator: "  ")
        }
        let adjustments = days.flatMap { d in d.adjustments.map { (d, $0) } }
        if !adjustments.isEmpty {
            lines.append("")
            lines.append("Adjustments (events that arrived after the day closed):")
            for (d, a) in adjustments {
                lines.append("  \(d.merchantID) \(d.currency) \(a.type) \(a.eventID) arrived \(a.arrivedAt) net \(major(a.delta.net, d.currency))")
            }
        }
        lines += tableReconciliation(reconciliation)
        return lines.joined(separator: "\n")
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for c in s {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default: o.append(c)
            }
        }
        return o
    }

    /// A self-contained HTML page (no external resources, no script): totals per currency, the
    /// day's lines per merchant, an inline SVG bar chart of the last 14 days' net per currency
    /// (adjustments included), and the adjustments listed. `history` holds the lines of the 14
    /// days ending with `date`.
    public static func html(_ days: [SettlementDay], history: [SettlementDay], date: String, merchant: String?,
                            generatedAt: Date = Date(), reconciliation: [ReconciliationRun] = []) -> String {
        let currencies = Set(days.map(\.currency)).union(history.map(\.currency)).sorted()
        let title = "Settlement \(date)" + (merchant.map { " — \($0)" } ?? "")
        var h = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title))</title>
            <style>
            body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2330; padding: 0 1rem; }
            h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #dde; padding-bottom: .3rem; }
            .meta { color: #667; font-size: .9rem; }
            .cards { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 1rem; }
            .card { border: 1px solid #dde3ee; border-radius: 8px; padding: 1rem 1.2rem; min-width: 16rem; background: #f8faff; }
            .card h3 { margin: 0 0 .5rem; font-size: 1rem; }
            .card .net { font-size: 1.6rem; font-weight: 600; }
            .card dl { display: grid; grid-template-columns: auto auto; gap: .15rem 1rem; margin: .6rem 0 0; font-size: .9rem; }
            .card dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
            table { border-collapse: collapse; width: 100%; font-size: .9rem; margin-top: .5rem; }
            th, td { padding: .35rem .6rem; border-bottom: 1px solid #eef; text-align: left; }
            td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
            .neg { color: #b3261e; } .closed { color: #2e7d32; } .open { color: #8a6d00; }
            .chart { margin-top: 1rem; } .empty { color: #667; font-style: italic; }
            </style>
            </head>
            <body>
            <h1>\(escape(title))</h1>
            <p class="meta">Business day \(escape(date)) in each merchant's time zone and cut-off. Generated \(RFC3339.format(generatedAt)). Amounts in major units.</p>

            """
        h += "<section id=\"totals\">\n<h2>Totals per currency</h2>\n"
        if days.isEmpty {
            h += "<p class=\"empty\">No settlement activity on this day.</p>\n"
        } else {
            h += "<div class=\"cards\">\n"
            for c in currencies {
                let lines = days.filter { $0.currency == c }
                guard !lines.isEmpty else { continue }
                let t = lines.reduce(SettlementDelta()) { $0 + $1.totals }
                let adj = lines.reduce(Int64(0)) { Saturating.add($0, $1.adjustmentsNet) }
                h += """
                    <div class="card" data-currency="\(c)">
                    <h3>\(c)</h3>
                    <div class="net\(t.net < 0 ? " neg" : "")">\(escape(Money(value: t.net, currency: Currency(code: c)!).formatted))</div>
                    <dl>
                    <dt>Payments</dt><dd>\(t.count)</dd>
                    <dt>Gross</dt><dd>\(major(t.gross, c))</dd>
                    <dt>Refunds</dt><dd>\(major(t.refunds, c))</dd>
                    <dt>Disputes</dt><dd>\(major(t.disputes, c))</dd>
                    <dt>Fees</dt><dd>\(major(t.fees, c))</dd>
                    <dt>Net</dt><dd>\(major(t.net, c))</dd>
                    <dt>Adjustments</dt><dd>\(major(adj, c))</dd>
                    <dt>Net after adjustments</dt><dd>\(major(Saturating.add(t.net, adj), c))</dd>
                    <dt>Failed payments</dt><dd>\(t.failedCount)</dd>
                    <dt>Payouts</dt><dd>\(major(t.payouts, c))</dd>
                    </dl>
                    </div>

                    """
            }
            h += "</div>\n"
        }
        h += "</section>\n<section id=\"merchants\">\n<h2>Per merchant</h2>\n"
        if !days.isEmpty {
            h += "<table>\n<thead><tr><th>Merchant</th><th>Currency</th><th class=\"num\">Count</th><th class=\"num\">Gross</th><th class=\"num\">Refunds</th><th class=\"num\">Disputes</th><th class=\"num\">Fees</th><th class=\"num\">Net</th><th class=\"num\">Adjustments</th><th class=\"num\">Failed</th><th class=\"num\">Payouts</th><th>State</th></tr></thead>\n<tbody>\n"
            for d in days {
                let t = d.totals
                let c = d.currency
                h += "<tr><td>\(escape(d.merchantID))</td><td>\(c)</td><td class=\"num\">\(t.count)</td><td class=\"num\">\(major(t.gross, c))</td><td class=\"num\">\(major(t.refunds, c))</td><td class=\"num\">\(major(t.disputes, c))</td><td class=\"num\">\(major(t.fees, c))</td><td class=\"num\(t.net < 0 ? " neg" : "")\">\(major(t.net, c))</td><td class=\"num\">\(major(d.adjustmentsNet, c))</td><td class=\"num\">\(t.failedCount)</td><td class=\"num\">\(major(t.payouts, c))</td>"
                h += d.closed
                    ? "<td class=\"closed\">closed \(escape(d.closedAt ?? ""))</td></tr>\n" : "<td class=\"open\">open</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        } else {
            h += "<p class=\"empty\">None.</p>\n"
        }
        h += "</section>\n<section id=\"chart\">\n<h2>Net, last 14 days</h2>\n"
        let end = CalendarDay(date) ?? CalendarDay(ordinal: 0)
        let dates = (0..<14).map { end.adding(days: $0 - 13).description }
        if currencies.isEmpty { h += "<p class=\"empty\">No activity in the last 14 days.</p>\n" }
        for c in currencies {
            var net: [String: Int64] = [:]
            for d in history where d.currency == c { net[d.date] = Saturating.add(net[d.date] ?? 0, d.adjustedNet) }
            h += chart(currency: c, dates: dates, net: net)
        }
        h += "</section>\n<section id=\"adjustments\">\n<h2>Adjustments</h2>\n"
        let adjustments = days.flatMap { d in d.adjustments.map { (d, $0) } }
        if adjustments.isEmpty {
            h += "<p class=\"empty\">No late events were recorded against this day.</p>\n"
        } else {
            h += "<p>Events that arrived after the day was closed; the closed totals above are not rewritten.</p>\n"
            h += "<table>\n<thead><tr><th>Merchant</th><th>Currency</th><th>Event</th><th>Type</th><th>Arrived</th><th class=\"num\">Gross</th><th class=\"num\">Refunds</th><th class=\"num\">Disputes</th><th class=\"num\">Fees</th><th class=\"num\">Net</th></tr></thead>\n<tbody>\n"
            for (d, a) in adjustments {
                let c = d.currency
                h += "<tr class=\"adjustment\"><td>\(escape(d.merchantID))</td><td>\(c)</td><td><code>\(escape(a.eventID))</code></td><td>\(escape(a.type))</td><td>\(escape(a.arrivedAt))</td><td class=\"num\">\(major(a.delta.gross, c))</td><td class=\"num\">\(major(a.delta.refunds, c))</td><td class=\"num\">\(major(a.delta.disputes, c))</td><td class=\"num\">\(major(a.delta.fees, c))</td><td class=\"num\(a.delta.net < 0 ? " neg" : "")\">\(major(a.delta.net, c))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        h += "</section>\n"
        h += htmlReconciliation(reconciliation)
        h += "</body>\n</html>\n"
        return h
    }

    /// An inline SVG bar chart: one bar per day, negative bars below the zero line.
    static func chart(currency c: String, dates: [String], net: [String: Int64]) -> String {
        let width = 700.0, height = 220.0, left = 70.0, bottom = 30.0, top = 16.0
        let values = dates.map { net[$0] ?? 0 }
        // The labels use the integers themselves: Int64(Double(Int64.max)) would trap.
        let maxI = max(values.max() ?? 0, 0), minI = min(values.min() ?? 0, 0)
        let maxV = Double(maxI), minV = Double(minI)
        let span = max(maxV - minV, 1)
        let plotH = height - top - bottom
        let zeroY = top + plotH * (maxV / span)
        let slot = (width - left - 10) / Double(dates.count)
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        var s = "<figure class=\"chart\" data-currency=\"\(c)\">\n"
        s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"Net per day in \(c), last 14 days\">\n"
        s += "<title>Net per day in \(c)</title>\n"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(zeroY))\" x2=\"\(f(width - 10))\" y2=\"\(f(zeroY))\" stroke=\"#99a\" stroke-width=\"1\"/>\n"
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + 4))\" text-anchor=\"end\" font-size=\"10\" fill=\"#556\">\(major(maxI, c))</text>\n"
        if minV < 0 {
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(height - bottom))\" text-anchor=\"end\" font-size=\"10\" fill=\"#556\">\(major(minI, c))</text>\n"
        }
        for (i, d) in dates.enumerated() {
            let v = Double(values[i])
            let h = plotH * abs(v) / span
            let x = left + Double(i) * slot + slot * 0.15
            let y = v >= 0 ? zeroY - h : zeroY
            let color = v >= 0 ? "#3f6fd8" : "#d0473c"
            s += "<rect class=\"bar\" x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(slot * 0.7))\" height=\"\(f(max(h, v == 0 ? 0 : 1)))\" fill=\"\(color)\" data-date=\"\(d)\" data-net=\"\(values[i])\"><title>\(d): \(major(values[i], c)) \(c)</title></rect>\n"
            s += "<text x=\"\(f(x + slot * 0.35))\" y=\"\(f(height - 12))\" text-anchor=\"middle\" font-size=\"9\" fill=\"#556\">\(d.suffix(5))</text>\n"
        }
        s += "</svg>\n<figcaption>Net per business day in \(c) (adjustments included), \(dates.first ?? "") to \(dates.last ?? "").</figcaption>\n</figure>\n"
        return s
    }
}
