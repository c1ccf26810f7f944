import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// What one event adds to its day's settlement totals (DESIGN §5a): every figure is a sum, so
/// applying the deltas of a set of events gives the same totals in any order.
///
/// The worker adds deltas with `adding(_:)` and checks `checkedNet()`, both checked: a total
/// that would not fit Int64 is a permanent `AmountOverflow` error (the event is dead-lettered),
/// so stored totals and their net are always representable. `+`, `net` and `disputes` are for
/// reading stored figures and saturate instead of trapping.
public struct SettlementDelta: Sendable, Equatable {
    public var count: Int64 = 0
    public var gross: Int64 = 0
    public var failedCount: Int64 = 0
    public var refunds: Int64 = 0
    public var disputesOpened: Int64 = 0
    public var disputesWon: Int64 = 0
    public var fees: Int64 = 0
    public var payouts: Int64 = 0

    public init() {}

    /// `opened − won` (saturating).
    public var disputes: Int64 { Saturating.subtract(disputesOpened, disputesWon) }
    /// `gross − refunds − disputes − fees` (saturating; see `checkedNet()`).
    public var net: Int64 {
        Saturating.subtract(Saturating.subtract(Saturating.subtract(gross, refunds), disputes), fees)
    }

    /// `gross − refunds − disputes − fees`, or `AmountOverflow`.
    public func checkedNet() throws(HandlerError) -> Int64 {
        let d = try CheckedMoney.subtract(disputesOpened, disputesWon, "disputes")
        let n = try CheckedMoney.subtract(gross, refunds, "net")
        return try CheckedMoney.subtract(try CheckedMoney.subtract(n, d, "net"), fees, "net")
    }

    /// The delta of `event` (zero for events settlement does not count, e.g. a lost dispute).
    /// Reversals count with the opposite sign of their original: `refund.failed` lowers
    /// `refunds`, `payment.reversed` lowers `gross`, `count` and (by the fee it returns, as the
    /// ledger books it) `fees`, `payout.failed` lowers `payouts`; `fee.assessed` adds to `fees`
    /// (of the payment's business day, which the handler picks).
    public static func of(_ event: PaymentEvent) throws(HandlerError) -> SettlementDelta {
        var d = SettlementDelta()
        let a = event.amount.value
        let fee = event.fee?.value ?? 0
        switch event.type {
        case .paymentSucceeded:
            d.count = 1
            d.gross = a
            d.fees = fee
        case .paymentFailed:
            d.failedCount = 1
        case .paymentRefunded:
            d.refunds = a
        case .paymentDisputed:
            d.disputesOpened = a
            d.fees = fee
        case .disputeClosed:
            // A won dispute reverses the disputed amount; its fee comes back only when the
            // provider's event carries it (ingest puts a returned fee in `fee`), as in the ledger.
            if event.metadata["outcome"] == "won" {
                d.disputesWon = a
                d.fees = try CheckedMoney.negate(fee, "fee")
            }
        case .payoutPaid:
            d.payouts = a
        case .refundFailed:
            d.refunds = try CheckedMoney.negate(a)
        case .paymentReversed:
            d.count = -1
            d.gross = try CheckedMoney.negate(a)
            d.fees = try CheckedMoney.negate(fee, "fee")
        case .payoutFailed:
            d.payouts = try CheckedMoney.negate(a)
        case .feeAssessed:
            d.fees = a
        case .invoiceIssued, .settlementDayClosed:
            break
        }
        return d
    }

    /// Field-by-field checked sum.
    public func adding(_ r: SettlementDelta) throws(HandlerError) -> SettlementDelta {
        var s = self
        s.count = try CheckedMoney.add(count, r.count, "count")
        s.gross = try CheckedMoney.add(gross, r.gross, "gross")
        s.failedCount = try CheckedMoney.add(failedCount, r.failedCount, "failed_count")
        s.refunds = try CheckedMoney.add(refunds, r.refunds, "refunds")
        s.disputesOpened = try CheckedMoney.add(disputesOpened, r.disputesOpened, "disputes_opened")
        s.disputesWon = try CheckedMoney.add(disputesWon, r.disputesWon, "disputes_won")
        s.fees = try CheckedMoney.add(fees, r.fees, "fees")
        s.payouts = try CheckedMoney.add(payouts, r.payouts, "payouts")
        return s
    }

    /// Field-by-field saturating sum (for reports over stored figures; never traps).
    public static func + (l: SettlementDelta, r: SettlementDelta) -> SettlementDelta {
        var s = l
        s.count = Saturating.add(l.count, r.count)
        s.gross = Saturating.add(l.gross, r.gross)
        s.failedCount = Saturating.add(l.failedCount, r.failedCount)
        s.refunds = Saturating.add(l.refunds, r.refunds)
        s.disputesOpened = Saturating.add(l.disputesOpened, r.disputesOpened)
        s.disputesWon = Saturating.add(l.disputesWon, r.disputesWon)
        s.fees = Saturating.add(l.fees, r.fees)
        s.payouts = Saturating.add(l.payouts, r.payouts)
        return s
    }

    var sqlValues: [SQLValue] {
        [.int(count), .int(gross), .int(failedCount), .int(refunds), .int(disputesOpened), .int(disputesWon), .int(fees),
         .int(payouts)]
    }

    static let columns = "count, gross, failed_count, refunds, disputes_opened, disputes_won, fees, payouts"

    static func read(_ r: SQLRow, from i: Int) -> SettlementDelta {
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
}

/// Booking a delta on a merchant's business day: into the running totals while the day is
/// open, as an adjustment (with its arrival time) once it is closed. Every sum is checked in
/// Swift before it is written — never left to SQLite, whose `SUM` raises `integer overflow`
/// and whose `+` turns an overflow into a REAL.
enum SettlementPosting {
    static func isClosed(_ db: SQLiteConnection, merchantID: String, day: String) throws -> Bool {
        try db.queryOne(
            "SELECT 1 FROM settlement_days WHERE merchant_id = ? AND day = ?", [.text(merchantID), .text(day)]) != nil
    }

    /// Returns true when the delta became an adjustment.
    static func book(
        _ db: SQLiteConnection, eventID: String, type: String, merchantID: String, currency: String, day: String,
        delta: SettlementDelta, arrived: String
    ) throws -> Bool {
        let key: [SQLValue] = [.text(merchantID), .text(day), .text(currency)]
        var total = try db.queryOne(
            "SELECT \(SettlementDelta.columns) FROM settlement_totals WHERE merchant_id = ? AND day = ? AND currency = ?",
            key
        ).map { SettlementDelta.read($0, from: 0) } ?? SettlementDelta()
        if try isClosed(db, merchantID: merchantID, day: day) {
            // What the day finally comes to (totals and every adjustment) must stay representable.
            for r in try db.query(
                """
                SELECT \(SettlementDelta.columns) FROM settlement_adjustments
                WHERE merchant_id = ? AND day = ? AND currency = ?
                """, key)
            {
                total = try total.adding(SettlementDelta.read(r, from: 0))
            }
            _ = try total.adding(delta).checkedNet()
            _ = try delta.checkedNet()
            try db.execute(
                """
                INSERT INTO settlement_adjustments (event_id, type, merchant_id, currency, day, arrived_at, count, gross,
                    failed_count, refunds, disputes_opened, disputes_won, fees, payouts)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [.text(eventID), .text(type), .text(merchantID), .text(currency), .text(day), .text(arrived)]
                    + delta.sqlValues)
            return true
        }
        _ = try total.adding(delta).checkedNet()
        try db.execute(
            """
            INSERT INTO settlement_totals (merchant_id, currency, day, count, gross, failed_count, refunds,
                disputes_opened, disputes_won, fees, payouts)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (merchant_id, day, currency) DO UPDATE SET
                count = count + excluded.count, gross = gross + excluded.gross,
                failed_count = failed_count + excluded.failed_count, refunds = refunds + excluded.refunds,
                disputes_opened = disputes_opened + excluded.disputes_opened,
                disputes_won = disputes_won + excluded.disputes_won, fees = fees + excluded.fees,
                payouts = payouts + excluded.payouts
            """,
            [.text(merchantID), .text(currency), .text(day)] + delta.sqlValues)
        return false
    }

    /// Books the fees waiting for payment `paymentID` on the payment's day `day`.
    static func resolveFees(
        _ db: SQLiteConnection, merchantID: String, paymentID: String, day: String, arrived: String
    ) throws {
        let waiting = try db.query(
            """
            SELECT event_id, currency, amount FROM settlement_pending_fees
            WHERE merchant_id = ? AND payment_id = ? AND resolved_at IS NULL ORDER BY event_id
            """, [.text(merchantID), .text(paymentID)])
        for r in waiting {
            guard let id = r.string(0), let currency = r.string(1), let amount = r.int(2) else { continue }
            try bookFee(db, eventID: id, merchantID: merchantID, currency: currency, amount: amount, day: day,
                        arrived: arrived)
        }
    }

    /// Books one waiting fee on `day` and marks it resolved.
    static func bookFee(
        _ db: SQLiteConnection, eventID: String, merchantID: String, currency: String, amount: Int64, day: String,
        arrived: String
    ) throws {
        var delta = SettlementDelta()
        delta.fees = amount
        let late = try book(
            db, eventID: eventID, type: PaymentEvent.EventType.feeAssessed.rawValue, merchantID: merchantID,
            currency: currency, day: day, delta: delta, arrived: arrived)
        try db.execute(
            "UPDATE settlement_pending_fees SET resolved_at = ?, resolved_day = ? WHERE event_id = ?",
            [.text(arrived), .text(day), .text(eventID)])
        try db.execute(
            "UPDATE settlement_events SET business_day = ?, late = ? WHERE event_id = ?",
            [.text(day), .int(late ? 1 : 0), .text(eventID)])
    }
}

/// Settings of `settlement-aggregator` beyond the runtime's keys (section `settlement-aggregator`).
///
/// - `grace_period` (duration, `2h`): how long after a merchant's day ends (its next cut-off)
///   the day is closed. Events arriving later become adjustments.
/// - `close_interval` (duration, `30s`): how often the worker looks for days to close and
///   publishes pending `settlement.day_closed` events.
/// - `day_closed_queue` (string, `payfleet.<name>.day_closed`): a durable queue bound to
///   `payfleet.events` for `settlement.day_closed`, declared by the worker so the published
///   closes are always routable (a mandatory publish with no route is a failure) and kept for
///   finance tooling. Empty: declare nothing (something else must bind the routing key).
public struct SettlementSettings: Sendable, Equatable {
    public var graceMS: Int
    public var closeIntervalMS: Int
    public var dayClosedQueue: String?

    public init(graceMS: Int = 2 * 3_600_000, closeIntervalMS: Int = 30_000, dayClosedQueue: String? = nil) {
        self.graceMS = graceMS
        self.closeIntervalMS = closeIntervalMS
        self.dayClosedQueue = dayClosedQueue
    }

    public static func read(_ s: ConfigSection, workerName: String) throws(ConfigError) -> SettlementSettings {
        let grace = try s.durationMS("grace_period", default: 2 * 3_600_000)
        guard grace >= 0 else { throw ConfigError(key: s.dotted("grace_period"), message: "must not be negative") }
        let interval = try s.durationMS("close_interval", default: 30_000)
        guard interval >= 10 else { throw ConfigError(key: s.dotted("close_interval"), message: "must be at least 10ms") }
        let queue = try s.string("day_closed_queue", default: Topology.dayClosedFeed(worker: workerName))
        return SettlementSettings(graceMS: grace, closeIntervalMS: interval, dayClosedQueue: queue.isEmpty ? nil : queue)
    }
}

/// The `settlement-aggregator` handler: running totals per merchant, currency and business day
/// (the merchant's time zone and cut-off), or an adjustment when the day is already closed.
public struct SettlementHandler: WorkerHandler {
    public typealias Effect = NoEffect

    public let merchants: [String: Merchant]
    public let settings: SettlementSettings
    let logger: Logger

    public init(merchants: [Merchant] = [], settings: SettlementSettings = SettlementSettings(),
                logger: Logger = Logger(label: "payfleet.settlement-aggregator")) {
        var byID: [String: Merchant] = [:]
        for m in merchants { byID[m.id] = m }
        self.merchants = byID
        self.settings = settings
        self.logger = logger
    }

    public init(section: ConfigSection, merchants: [Merchant], logger: Logger) throws(ConfigError) {
        let name = try section.string("name", default: "settlement-aggregator")
        self.init(merchants: merchants, settings: try SettlementSettings.read(section, workerName: name), logger: logger)
    }

    public var migrations: [Migration] { SettlementSchema.migrations }

    /// The configured merchant, or one with UTC days for an unknown id.
    public func merchant(_ id: String) -> Merchant { merchants[id] ?? Merchant(id: id) }

    public func businessDay(_ event: PaymentEvent) -> String { merchant(event.merchantID).businessDay(for: event.occurredAt) }

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> NoEffect? {
        try apply(event, db: db, now: Date())
        return nil
    }

    /// Applies one event as of `now` (its arrival time). Returns true when it became an adjustment.
    ///
    /// Reversals count on their own business day (an adjustment of it when it is closed).
    /// `fee.assessed` counts on the business day of the payment it names; when that payment is
    /// not known yet the fee waits in `settlement_pending_fees` and is booked when the payment
    /// arrives — or, if its own business day comes due for closing first, on its own day (so a
    /// fee is never lost, and never counted twice).
    @discardableResult
    public func apply(_ event: PaymentEvent, db: SQLiteConnection, now: Date) throws -> Bool {
        do {
            return try count(event, db: db, now: now)
        } catch let e as SQLiteError where CheckedMoney.isOverflow(e) {
            throw HandlerError.permanent("AmountOverflow", e.message)
        }
    }

    func count(_ event: PaymentEvent, db: SQLiteConnection, now: Date) throws -> Bool {
        if event.type == .settlementDayClosed || event.type == .invoiceIssued { return false }
        if try db.queryOne("SELECT 1 FROM settlement_events WHERE event_id = ?", [.text(event.id)]) != nil { return false }
        let ownDay = businessDay(event)
        let currency = event.amount.currency.code
        let delta = try SettlementDelta.of(event)
        let arrived = RFC3339.format(now)
        let paymentID = event.payment?.id.flatMap { $0.isEmpty ? nil : $0 }
        var day = ownDay
        var waitForPayment = false
        if event.type == .feeAssessed, let paymentID {
            if let r = try db.queryOne(
                """
                SELECT business_day FROM settlement_events
                WHERE merchant_id = ? AND payment_id = ? AND type = 'payment.succeeded'
                ORDER BY arrived_at, event_id LIMIT 1
                """, [.text(event.merchantID), .text(paymentID)]), let d = r.string(0)
            {
                day = d
            } else {
                waitForPayment = true
            }
        }
        let closed = try SettlementPosting.isClosed(db, merchantID: event.merchantID, day: day)
        try db.execute(
            """
            INSERT INTO settlement_events (event_id, type, merchant_id, provider, payment_id, psp_reference, currency,
                amount, fee, outcome, occurred_at, arrived_at, business_day, late)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.id), .text(event.type.rawValue), .text(event.merchantID), .text(event.source.provider),
             SQLValue(event.payment?.id), SQLValue(event.metadata["psp_reference"] ?? event.metadata["payout_id"]), .text(currency),
             .int(event.amount.value), .int(event.fee?.value ?? 0), SQLValue(event.metadata["outcome"]),
             .text(RFC3339.format(event.occurredAt)), .text(arrived), .text(day),
             .int(closed && !waitForPayment ? 1 : 0)])
        if waitForPayment, let paymentID {
            try db.execute(
                """
                INSERT INTO settlement_pending_fees (event_id, merchant_id, payment_id, currency, amount, own_day, arrived_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
                [.text(event.id), .text(event.merchantID), .text(paymentID), .text(currency), .int(delta.fees),
                 .text(ownDay), .text(arrived)])
            logger.info(
                "fee for a payment not seen yet: waiting for it",
                metadata: [LogKey.eventID: "\(event.id)", LogKey.merchant: "\(event.merchantID)"])
            return false
        }
        let adjustment = try SettlementPosting.book(
            db, eventID: event.id, type: event.type.rawValue, merchantID: event.merchantID, currency: currency,
            day: day, delta: delta, arrived: arrived)
        if adjustment {
            logger.info(
                "late event for a closed day recorded as an adjustment",
                metadata: [LogKey.eventID: "\(event.id)", LogKey.settlementDay: "\(day)",
                           LogKey.merchant: "\(event.merchantID)"])
        }
        if event.type == .paymentSucceeded, let paymentID {
            try SettlementPosting.resolveFees(
                db, merchantID: event.merchantID, paymentID: paymentID, day: day, arrived: arrived)
        }
        return adjustment
    }
}
