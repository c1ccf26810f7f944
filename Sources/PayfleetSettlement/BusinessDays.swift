import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// A merchant's business days in the settlement store: when one ends (`end(of:for:)`), which
/// are overdue, and closing the due ones (`closeDue`): freezing their totals and writing one
/// `settlement.day_closed` event per currency into the outbox, in one transaction (so a close
/// is never half done, and a restart neither loses nor repeats it). `DayCloser` is the timer
/// that calls it.
public enum BusinessDays {
    /// The instant merchant `m`'s business day `day` ends: the next local day at the cut-off,
    /// in the merchant's time zone (a 23- or 25-hour day across a DST change).
    public static func end(of day: String, for m: Merchant) -> Date? {
        let p = day.split(separator: "-").compactMap { Int($0) }
        guard p.count == 3 else { return nil }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: m.timeZone) ?? TimeZone(identifier: "UTC")!
        guard let noon = cal.date(from: DateComponents(year: p[0], month: p[1], day: p[2], hour: 12)),
            let next = cal.date(byAdding: .day, value: 1, to: noon)
        else { return nil }
        let c = cal.dateComponents([.year, .month, .day], from: next)
        // A cut-off inside a spring-forward gap resolves to the first valid instant after it.
        return cal.date(
            from: DateComponents(
                year: c.year, month: c.month, day: c.day, hour: m.cutoffMinutes / 60, minute: m.cutoffMinutes % 60))
    }

    /// One closed merchant day.
    public struct Closed: Sendable, Equatable {
        public var merchantID: String
        public var day: String
        public var events: [String]
    }

    /// Closes every day whose end plus `graceMS` is at or before `now` and that is not closed yet.
    /// Runs inside the caller's transaction.
    ///
    /// First, every fee still waiting for its payment (`settlement_pending_fees`) whose own
    /// business day is due is booked on that day, so a fee whose payment never arrives is still
    /// counted. A day whose net would not fit Int64 (only reachable from state written before
    /// the worker checked its sums) is left open and reported through `problem`, never trapped on.
    public static func closeDue(
        _ db: SQLiteConnection, merchants: [String: Merchant], graceMS: Int, now: Date,
        problem: (String) -> Void = { _ in }
    ) throws -> [Closed] {
        func due(_ day: String, _ m: Merchant) -> Date? {
            guard let end = end(of: day, for: m), end.addingTimeInterval(Double(graceMS) / 1000) <= now else {
                return nil
            }
            return end
        }
        for r in try db.query(
            """
            SELECT event_id, merchant_id, currency, amount, own_day FROM settlement_pending_fees
            WHERE resolved_at IS NULL ORDER BY own_day, event_id
            """)
        {
            guard let id = r.string(0), let merchantID = r.string(1), let currency = r.string(2), let amount = r.int(3),
                let day = r.string(4), due(day, merchants[merchantID] ?? Merchant(id: merchantID)) != nil
            else { continue }
            do {
                try db.savepoint {
                    try SettlementPosting.bookFee(
                        db, eventID: id, merchantID: merchantID, currency: currency, amount: amount, day: day,
                        arrived: RFC3339.format(now))
                }
            } catch let e as HandlerError {
                problem("fee \(id) of \(merchantID) on \(day) not booked: \(e)")
            }
        }
        let open = try db.query(
            """
            SELECT DISTINCT t.merchant_id, t.day FROM settlement_totals t
            WHERE NOT EXISTS (SELECT 1 FROM settlement_days d WHERE d.merchant_id = t.merchant_id AND d.day = t.day)
            ORDER BY t.day, t.merchant_id
            """)
        var out: [Closed] = []
        for row in open {
            guard let merchantID = row.string(0), let day = row.string(1) else { continue }
            let m = merchants[merchantID] ?? Merchant(id: merchantID)
            guard let end = due(day, m) else { continue }
            do {
                out.append(try close(db, merchant: m, day: day, end: end, now: now))
            } catch let e as HandlerError {
                problem("day \(day) of \(merchantID) not closed: \(e)")
            }
        }
        return out
    }

    /// Per merchant, how long past its cut-off + grace the oldest day still open is (seconds; a
    /// merchant with no such day is absent): a day `closeDue` should have closed but did not (a
    /// net that does not fit, a store that refuses writes, a closer that does not run).
    public static func overdue(
        _ db: SQLiteConnection, merchants: [String: Merchant], graceMS: Int, now: Date
    ) throws -> [String: TimeInterval] {
        var out: [String: TimeInterval] = [:]
        for row in try db.query(
            """
            SELECT DISTINCT t.merchant_id, t.day FROM settlement_totals t
            WHERE NOT EXISTS (SELECT 1 FROM settlement_days d WHERE d.merchant_id = t.merchant_id AND d.day = t.day)
            """)
        {
            guard let merchantID = row.string(0), let day = row.string(1),
                let end = end(of: day, for: merchants[merchantID] ?? Merchant(id: merchantID))
            else { continue }
            let late = now.timeIntervalSince(end.addingTimeInterval(Double(graceMS) / 1000))
            if late > 0 { out[merchantID] = max(out[merchantID] ?? 0, late) }
        }
        return out
    }

    static func close(_ db: SQLiteConnection, merchant m: Merchant, day: String, end: Date, now: Date) throws -> Closed {
        let closedAt = RFC3339.format(now)
        let rows = try db.query(
            """
            SELECT currency, \(SettlementDelta.columns)
            FROM settlement_totals WHERE merchant_id = ? AND day = ? ORDER BY currency
            """, [.text(m.id), .text(day)])
        // Every net first: a day is closed whole or not at all.
        var lines: [(Currency, SettlementDelta, Int64)] = []
        for r in rows {
            guard let code = r.string(0), let currency = Currency(code: code) else { continue }
            let d = SettlementDelta.read(r, from: 1)
            lines.append((currency, d, try d.checkedNet()))
        }
        try db.execute(
            "INSERT INTO settlement_days (merchant_id, day, closed_at) VALUES (?, ?, ?)",
            [.text(m.id), .text(day), .text(closedAt)])
        var ids: [String] = []
        for (currency, d, net) in lines {
            let code = currency.code
            let sourceID = "settlement.day_closed:\(m.id):\(code):\(day)"
            let id = PaymentEvent.canonicalID(provider: "payfleet", eventID: sourceID)
            let event = PaymentEvent(
                id: id, type: .settlementDayClosed, occurredAt: end, receivedAt: now,
                source: .init(provider: "payfleet", eventID: sourceID), merchantID: m.id,
                amount: Money(value: net, currency: currency),
                fee: d.fees >= 0 ? Money(value: d.fees, currency: currency) : nil,
                reference: "settlement \(m.id) \(day) \(code)",
                metadata: [
                    "date": day, "count": "\(d.count)", "gross": "\(d.gross)", "refunds": "\(d.refunds)",
                    "disputes": "\(d.disputes)", "fees": "\(d.fees)", "net": "\(net)", "payouts": "\(d.payouts)",
                    "failed_count": "\(d.failedCount)", "closed_at": closedAt,
                ])
            try db.execute(
                """
                INSERT OR IGNORE INTO settlement_outbox (event_id, merchant_id, day, currency, body, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """,
                [.text(id), .text(m.id), .text(day), .text(code), .blob(Array(EventCodec.encode(event))), .text(closedAt)])
            ids.append(id)
        }
        return Closed(merchantID: m.id, day: day, events: ids)
    }
}
