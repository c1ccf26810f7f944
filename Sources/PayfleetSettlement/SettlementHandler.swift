import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// What one event adds to its day's settlement totals (DESIGN §5a): every figure is a sum, so
/// applying the deltas of a set of events gives the same totals in any order.
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

    /// `opened − won`.
    public var disputes: Int64 { disputesOpened - disputesWon }
    /// `gross − refunds − disputes − fees`.
    public var net: Int64 { gross - refunds - disputes - fees }

    /// The delta of `event` (zero for events settlement does not count, e.g. a lost dispute).
    public static func of(_ event: PaymentEvent) -> SettlementDelta {
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
                d.fees = -fee
            }
        case .payoutPaid:
            d.payouts = a
        case .invoiceIssued, .settlementDayClosed, .refundFailed, .paymentReversed, .payoutFailed, .feeAssessed:
            break  // TODO(#14): reversals and late fees
        }
        return d
    }

    public static func + (l: SettlementDelta, r: SettlementDelta) -> SettlementDelta {
        var s = l
        s.count += r.count
        s.gross += r.gross
        s.failedCount += r.failedCount
        s.refunds += r.refunds
        s.disputesOpened += r.disputesOpened
        s.disputesWon += r.disputesWon
        s.fees += r.fees
        s.payouts += r.payouts
        return s
    }

    var sqlValues: [SQLValue] {
        [.int(count), .int(gross), .int(failedCount), .int(refunds), .int(disputesOpened), .int(disputesWon), .int(fees),
         .int(payouts)]
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
        let queue = try s.string("day_closed_queue", default: "payfleet.\(workerName).day_closed")
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
    @discardableResult
    public func apply(_ event: PaymentEvent, db: SQLiteConnection, now: Date) throws -> Bool {
        do { try event.validate() } catch { throw HandlerError.permanent("InvalidEvent", "\(error)") }
        if event.type == .settlementDayClosed || event.type == .invoiceIssued { return false }
        if try db.queryOne("SELECT 1 FROM settlement_events WHERE event_id = ?", [.text(event.id)]) != nil { return false }
        let day = businessDay(event)
        let currency = event.amount.currency.code
        let delta = SettlementDelta.of(event)
        let arrived = RFC3339.format(now)
        let closed = try db.queryOne(
            "SELECT 1 FROM settlement_days WHERE merchant_id = ? AND day = ?", [.text(event.merchantID), .text(day)]) != nil
        try db.execute(
            """
            INSERT INTO settlement_events (event_id, type, merchant_id, provider, payment_id, psp_reference, currency,
                amount, fee, outcome, occurred_at, arrived_at, business_day, late)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(event.id), .text(event.type.rawValue), .text(event.merchantID), .text(event.source.provider),
             SQLValue(event.payment?.id), SQLValue(event.metadata["psp_reference"]), .text(currency),
             .int(event.amount.value), .int(event.fee?.value ?? 0), SQLValue(event.metadata["outcome"]),
             .text(RFC3339.format(event.occurredAt)), .text(arrived), .text(day), .int(closed ? 1 : 0)])
        if closed {
            try db.execute(
                """
                INSERT INTO settlement_adjustments (event_id, type, merchant_id, currency, day, arrived_at, count, gross,
                    failed_count, refunds, disputes_opened, disputes_won, fees, payouts)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [.text(event.id), .text(event.type.rawValue), .text(event.merchantID), .text(currency), .text(day),
                 .text(arrived)] + delta.sqlValues)
            logger.info(
                "late event for a closed day recorded as an adjustment",
                metadata: ["payfleet.event.id": "\(event.id)", "settlement.day": "\(day)",
                           "payfleet.merchant": "\(event.merchantID)"])
            return true
        }
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
            [.text(event.merchantID), .text(currency), .text(day)] + delta.sqlValues)
        return false
    }
}
