import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus
import ServiceLifecycle

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
                try BusinessDays.closeDue(db, merchants: merchants, graceMS: grace, now: now) { problem in
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
                try BusinessDays.overdue(db, merchants: merchants, graceMS: grace, now: now)
            }
            for m in Set(late.keys).union(overdueGauges.current.keys) { overdueGauge(m).set(late[m] ?? 0) }
        } catch {
            logger.warning("reading open settlement days failed", metadata: [LogKey.error: "\(error)"])
        }
    }
}
