import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus
import ServiceLifecycle

/// Closing merchant days: freezing their totals and writing one `settlement.day_closed` event
/// per currency into the outbox, in one transaction (so a close is never half done, and a
/// restart neither loses nor repeats it).
public enum DayClosing {
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

/// `settlement_outbox` as the one `OutboxRelay` reads it: the `settlement.day_closed` events of
/// the closing transactions, oldest first. A refused close (no queue bound yet) keeps no count
/// and no deferral: it stays pending and the next round, a close interval later, publishes it
/// again. A day close has no customer: both partition keys are the merchant.
struct SettlementOutbox: OutboxStorage {
    let store: Store
    let clock: @Sendable () -> Date

    func unsent(limit: Int) async throws -> [OutboxRow<String>] {
        try await store.withConnection { db in
            try db.query(
                """
                SELECT event_id, body, merchant_id FROM settlement_outbox WHERE published_at IS NULL
                ORDER BY created_at, event_id LIMIT ?
                """, [.int(Int64(limit))]
            ).compactMap { r in
                r.string(0).map { id in
                    OutboxRow(
                        key: id,
                        event: OutboxEvent(
                            id: id, type: PaymentEvent.EventType.settlementDayClosed.rawValue, merchant: r.string(2) ?? "",
                            body: r.blob(1) ?? []))
                }
            }
        }
    }

    func markSent(_ keys: [String]) async throws {
        guard !keys.isEmpty else { return }
        let at = RFC3339.format(clock())
        try await store.write { db in
            for id in keys {
                try db.execute("UPDATE settlement_outbox SET published_at = ? WHERE event_id = ?", [.text(at), .text(id)])
            }
        }
    }

    func counts() async throws -> (pending: Int, parked: Int) {
        let n = try await store.withConnection { db in
            try db.queryOne("SELECT COUNT(*) FROM settlement_outbox WHERE published_at IS NULL")?.int(0) ?? 0
        }
        return (Int(n), 0)
    }
}

/// The worker's timer: every `close_interval` it closes due days through the runtime's store
/// (its one write thread, so closes serialize with event batches) and runs a round of the
/// outbox relay on `settlement_outbox` (`OutboxRelay`: confirms, `mandatory`, the one header
/// set), which marks each event published only after the broker confirmed it. After a round
/// the connection failed, the next comes after the relay's backoff (at most 5 s) instead.
public final class DayCloser: Service, @unchecked Sendable {
    let store: Store
    let merchants: [String: Merchant]
    let settings: SettlementSettings
    /// The day closes' relay; its publisher declares the feed queue (`day_closed_queue`) on connect.
    public let relay: OutboxRelay
    let logger: Logger
    let clock: @Sendable () -> Date
    let daysClosed: Counter
    let registry: PrometheusCollectorRegistry
    /// `payfleet_settlement_day_overdue_seconds{merchant}` per merchant seen.
    let overdueGauges = Locked<[String: Gauge]>([:])

    /// `registry` is the worker's (its `/metrics`): `payfleet_settlement_days_closed_total`,
    /// `payfleet_settlement_day_closed_published_total`, `payfleet_settlement_outbox_pending`,
    /// `payfleet_settlement_day_overdue_seconds{merchant}` (how long past cut-off + grace the
    /// merchant's oldest open day is; 0 when every due day is closed).
    public init(
        store: Store, amqp: AMQPConfiguration, merchants: [String: Merchant], settings: SettlementSettings,
        logger: Logger, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        daysClosed = registry.makeCounter(
            name: "payfleet_settlement_days_closed_total", help: "Merchant business days closed (totals frozen)")
        let metrics = OutboxRelayMetrics(
            published: registry.makeCounter(
                name: "payfleet_settlement_day_closed_published_total",
                help: "settlement.day_closed events confirmed by the broker"),
            pending: registry.makeGauge(
                name: "payfleet_settlement_outbox_pending", help: "settlement.day_closed events not yet confirmed"))
        self.registry = registry
        self.store = store
        self.merchants = merchants
        self.settings = settings
        self.logger = logger
        self.clock = clock
        let feed = settings.dayClosedQueue
        relay = OutboxRelay(
            storage: SettlementOutbox(store: store, clock: clock), amqp: amqp, name: "settlement-close",
            appID: "settlement-aggregator", batchSize: 500, metrics: metrics, logger: logger,
            // Every round counts (it runs once a close interval); a round waits for the
            // connection (a close made at start-up goes out in the first round).
            countInterval: .zero, connectWait: .seconds(5),
            declare: { d in
                guard let feed else { return }
                try d.queue(QueueSpec(name: feed, arguments: ["x-queue-type": .string("quorum")]))
                try d.bind(
                    BindingSpec(
                        source: Topology.eventsExchange, destination: feed, destinationType: .queue,
                        routingKey: PaymentEvent.EventType.settlementDayClosed.rawValue))
            })
        for id in merchants.keys.sorted() { _ = overdueGauge(id) }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                let round = await tick()
                let wait = round.retryAfter.map { min($0, .milliseconds(settings.closeIntervalMS)) }
                do { try await Task.sleep(for: wait ?? .milliseconds(settings.closeIntervalMS)) } catch { break }
            }
        }
        relay.publisher.close()
    }

    /// One round: close what is due, then publish what is pending. Returns the closed days, the
    /// events published, and, when the connection failed, the relay's backoff.
    @discardableResult
    public func tick() async -> (closed: Int, published: Int, retryAfter: Duration?) {
        var closedCount = 0
        do {
            let merchants = self.merchants
            let grace = settings.graceMS
            let now = clock()
            let logger = self.logger
            let closed = try await store.write { db in
                try DayClosing.closeDue(db, merchants: merchants, graceMS: grace, now: now) { problem in
                    logger.error("settlement close problem", metadata: [LogKey.error: "\(problem)"])
                }
            }
            closedCount = closed.count
            if closedCount > 0 { daysClosed.increment(by: Int64(closedCount)) }
            for c in closed {
                logger.info(
                    "settlement day closed",
                    metadata: [LogKey.merchant: "\(c.merchantID)", LogKey.settlementDay: "\(c.day)",
                               LogKey.settlementEvents: "\(c.events.count)"])
            }
        } catch {
            logger.warning("closing settlement days failed", metadata: [LogKey.error: "\(error)"])
        }
        await updateOverdue()
        let round = await relay.round()
        return (closedCount, round.sent, round.connectionFailed ? round.next : nil)
    }

    func overdueGauge(_ merchant: String) -> Gauge {
        overdueGauges.withLock { g in
            if let x = g[merchant] { return x }
            let x = registry.makeGauge(
                name: "payfleet_settlement_day_overdue_seconds", labels: [("merchant", merchant)],
                help: "Seconds past cut-off + grace of the merchant's oldest business day still open (0: none)")
            g[merchant] = x
            return x
        }
    }

    /// Sets the overdue gauges from the store (after this round's closes).
    func updateOverdue() async {
        let merchants = self.merchants
        let grace = settings.graceMS
        let now = clock()
        do {
            let late = try await store.withConnection { db in
                try DayClosing.overdue(db, merchants: merchants, graceMS: grace, now: now)
            }
            for m in Set(late.keys).union(overdueGauges.current.keys) { overdueGauge(m).set(late[m] ?? 0) }
        } catch {
            logger.warning("reading open settlement days failed", metadata: [LogKey.error: "\(error)"])
        }
    }
}
