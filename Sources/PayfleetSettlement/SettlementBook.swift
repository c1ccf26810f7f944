import PayfleetWorker
import Foundation
import PayfleetCore
import PayfleetStore

/// A failure of a settlement command or query, with a one-line reason.
public struct SettlementError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A late event recorded against a closed day.
public struct SettlementAdjustment: Sendable, Equatable {
    public var eventID: String
    public var type: String
    public var arrivedAt: String
    public var delta: SettlementDelta
}

/// One line of the settlement report: a merchant's day in one currency.
public struct SettlementDay: Sendable, Equatable {
    public var merchantID: String
    public var currency: String
    public var date: String
    /// The day's totals (frozen once closed).
    public var totals: SettlementDelta
    public var closedAt: String?
    public var adjustments: [SettlementAdjustment]

    public var closed: Bool { closedAt != nil }
    /// Net of the adjustments (saturating: reading never traps).
    public var adjustmentsNet: Int64 { adjustments.reduce(0) { Saturating.add($0, $1.delta.net) } }
    /// The day's net with its adjustments.
    public var adjustedNet: Int64 { Saturating.add(totals.net, adjustmentsNet) }
    /// Totals plus adjustments: what the day finally came to.
    public var adjusted: SettlementDelta { adjustments.reduce(totals) { $0 + $1.delta } }
}

/// One event as the worker recorded it (the "ours" side of a reconciliation).
public struct RecordedEvent: Sendable, Equatable {
    public var eventID: String
    public var type: String
    public var merchantID: String
    public var provider: String
    public var paymentID: String?
    public var pspReference: String?
    public var currency: String
    public var amount: Int64
    public var fee: Int64
    public var outcome: String?
    public var businessDay: String

    public init(eventID: String, type: String, merchantID: String, provider: String, paymentID: String?,
                pspReference: String?, currency: String, amount: Int64, fee: Int64, outcome: String?, businessDay: String) {
        self.eventID = eventID
        self.type = type
        self.merchantID = merchantID
        self.provider = provider
        self.paymentID = paymentID
        self.pspReference = pspReference
        self.currency = currency
        self.amount = amount
        self.fee = fee
        self.outcome = outcome
        self.businessDay = businessDay
    }
}

/// Read-only access to `settlement-aggregator`'s SQLite files (one per partition), merged.
public struct SettlementBook: Sendable {
    public let files: [String]

    public init(files: [String]) throws {
        let existing = files.filter { FileManager.default.fileExists(atPath: $0) }
        guard !existing.isEmpty else {
            throw SettlementError("no settlement state found (looked for \(files.joined(separator: ", ")))")
        }
        self.files = existing
    }

    func open(_ path: String) throws -> SQLiteConnection {
        do { return try SQLiteConnection(path: path, readOnly: true) } catch {
            throw SettlementError("cannot open \(path): \(error)")
        }
    }

    static func delta(_ r: SQLRow, from i: Int) -> SettlementDelta {
        var d = SettlementDelta()
        d.count = r.int(i) ?? 0
        d.gross = r.int(i + 1) ?? 0
        d.failedCount = r.int(i + 2) ?? 0
        d.refunds = r.int(i + 3) ?? 0
        d.disputesOpened = r.int(i + 4) ?? 0
        d.disputesWon = r.int(i + 5) ?? 0
        d.fees = r.int(i + 6) ?? 0
        d.payouts = r.int(i + 7) ?? 0
        return d
    }

    static let columns = "count, gross, failed_count, refunds, disputes_opened, disputes_won, fees, payouts"

    /// The report lines of business days `from...to` (both included), merged over partitions,
    /// ordered by date, merchant, currency. A day with only adjustments still has a line.
    public func days(from: String, to: String, merchant: String? = nil) throws -> [SettlementDay] {
        struct Key: Hashable, Comparable {
            var date: String, merchant: String, currency: String
            static func < (l: Key, r: Key) -> Bool { (l.date, l.merchant, l.currency) < (r.date, r.merchant, r.currency) }
        }
        var out: [Key: SettlementDay] = [:]
        func line(_ k: Key) -> SettlementDay {
            out[k] ?? SettlementDay(merchantID: k.merchant, currency: k.currency, date: k.date, totals: SettlementDelta(),
                                   closedAt: nil, adjustments: [])
        }
        for f in files {
            let db = try open(f)
            let args: [SQLValue] = [.text(from), .text(to), SQLValue(merchant)]
            for r in try db.query(
                """
                SELECT day, merchant_id, currency, \(Self.columns) FROM settlement_totals
                WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR merchant_id = ?3)
                """, args)
            {
                let k = Key(date: r.string(0) ?? "", merchant: r.string(1) ?? "", currency: r.string(2) ?? "")
                var l = line(k)
                l.totals = l.totals + Self.delta(r, from: 3)
                out[k] = l
            }
            for r in try db.query(
                """
                SELECT day, merchant_id, currency, event_id, type, arrived_at, \(Self.columns) FROM settlement_adjustments
                WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR merchant_id = ?3) ORDER BY arrived_at, event_id
                """, args)
            {
                let k = Key(date: r.string(0) ?? "", merchant: r.string(1) ?? "", currency: r.string(2) ?? "")
                var l = line(k)
                l.adjustments.append(
                    SettlementAdjustment(
                        eventID: r.string(3) ?? "", type: r.string(4) ?? "", arrivedAt: r.string(5) ?? "",
                        delta: Self.delta(r, from: 6)))
                out[k] = l
            }
            for r in try db.query(
                """
                SELECT day, merchant_id, closed_at FROM settlement_days
                WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR merchant_id = ?3)
                """, args)
            {
                for (k, var l) in out where k.date == r.string(0) && k.merchant == r.string(1) {
                    l.closedAt = r.string(2)
                    out[k] = l
                }
            }
        }
        return out.sorted { $0.key < $1.key }.map(\.value)
    }

    /// The report of one business day.
    public func report(date: String, merchant: String? = nil) throws -> [SettlementDay] {
        try days(from: date, to: date, merchant: merchant)
    }

    /// Every event recorded from `provider` (optionally one merchant's).
    public func events(provider: String, merchant: String? = nil) throws -> [RecordedEvent] {
        var out: [RecordedEvent] = []
        for f in files {
            let db = try open(f)
            for r in try db.query(
                """
                SELECT event_id, type, merchant_id, provider, payment_id, psp_reference, currency, amount, fee, outcome,
                       business_day
                FROM settlement_events WHERE provider = ?1 AND (?2 IS NULL OR merchant_id = ?2)
                ORDER BY business_day, event_id
                """, [.text(provider), SQLValue(merchant)])
            {
                out.append(
                    RecordedEvent(
                        eventID: r.string(0) ?? "", type: r.string(1) ?? "", merchantID: r.string(2) ?? "",
                        provider: r.string(3) ?? "", paymentID: r.string(4), pspReference: r.string(5),
                        currency: r.string(6) ?? "", amount: r.int(7) ?? 0, fee: r.int(8) ?? 0, outcome: r.string(9),
                        businessDay: r.string(10) ?? ""))
            }
        }
        return out
    }

    /// `YYYY-MM-DD` that is a real calendar day, or an error naming the option.
    public static func checkDate(_ s: String, option: String) throws -> String {
        guard let d = CalendarDay(s) else { throw SettlementError("\(option): '\(s)' is not a date (YYYY-MM-DD)") }
        return d.description
    }
}

/// A calendar date without a time zone, for date arithmetic on business days.
public struct CalendarDay: Sendable, Equatable, Comparable, CustomStringConvertible {
    /// Days since 1970-01-01.
    public let ordinal: Int

    public init?(_ s: String) {
        let u = Array(s.utf8)
        guard u.count == 10, u[4] == 45, u[7] == 45 else { return nil }
        let parts = s.split(separator: "-")
        guard parts.count == 3, parts.allSatisfy({ $0.allSatisfy(\.isNumber) }),
            let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]), (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        let o = CalendarDay.days(y, m, d)
        guard CalendarDay.civil(o) == (y, m, d) else { return nil }
        ordinal = o
    }

    public init(ordinal: Int) { self.ordinal = ordinal }

    public func adding(days n: Int) -> CalendarDay { CalendarDay(ordinal: ordinal + n) }

    public var description: String {
        let (y, m, d) = CalendarDay.civil(ordinal)
        return String(format: "%04d-%02d-%02d", y, m, d)
    }

    public static func < (l: CalendarDay, r: CalendarDay) -> Bool { l.ordinal < r.ordinal }

    static func days(_ y: Int, _ m: Int, _ d: Int) -> Int { Int(RFC3339.daysFromCivil(y, m, d)) }

    static func civil(_ z: Int) -> (Int, Int, Int) { RFC3339.civil(fromDays: Int64(z)) }
}
