import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import ServiceLifecycle

/// A balance transaction whose fee the books need: named by a succeeded charge or a refund that
/// ingest accepted (real webhooks carry `balance_transaction` as an id, not the fee).
public struct StripeFeeRequest: Sendable, Equatable {
    public var balanceTransaction: String
    /// `charge` or `refund`.
    public var kind: String
    public var merchantID: String
    /// The payment the fee belongs to (`payment.id` of the canonical payment or refund).
    public var paymentID: String
    public var account: String?
    /// The webhook carried the balance transaction expanded and its fee is already on the
    /// canonical payment: nothing to fetch, and a later report of the same id must not post it again.
    public var carried: Bool
}

extension StripeMapper {
    /// The fee requests of an accepted Stripe event. `duplicate`: the canonical event was already
    /// known (its fee, if carried, was booked by the first report).
    public func feeRequests(_ event: [String: Any], mapped: MappedEvent, duplicate: Bool) -> [StripeFeeRequest] {
        guard let e = mapped.event, e.type == .paymentSucceeded || e.type == .paymentRefunded,
            let paymentID = e.payment?.id,
            let object = (event["data"] as? [String: Any])?["object"] as? [String: Any]
        else { return [] }
        let type = event["type"] as? String ?? ""
        // Where the balance transaction of this fact is: the charge's, the intent's charge's, the refund's.
        var holder: [String: Any]?
        switch type {
        case "charge.succeeded": holder = object
        case "payment_intent.succeeded": holder = chargeOf(pi: object)
        case "charge.refunded": holder = latestRefund(object)
        case "refund.created", "refund.updated", "charge.refund.updated": holder = object
        default: holder = nil
        }
        guard let holder else { return [] }
        let kind = e.type == .paymentSucceeded ? "charge" : "refund"
        let account = event["account"] as? String
        if let expanded = holder["balance_transaction"] as? [String: Any], let id = str(expanded["id"]) {
            // Expanded: the payment event carried the fee when it was the first report of it.
            guard e.type == .paymentSucceeded, e.fee != nil else {
                return [StripeFeeRequest(balanceTransaction: id, kind: kind, merchantID: e.merchantID, paymentID: paymentID,
                                         account: account, carried: false)]
            }
            return duplicate ? [] : [StripeFeeRequest(balanceTransaction: id, kind: kind, merchantID: e.merchantID,
                                                      paymentID: paymentID, account: account, carried: true)]
        }
        guard let id = str(holder["balance_transaction"]), id.hasPrefix("txn_") else { return [] }
        return [StripeFeeRequest(balanceTransaction: id, kind: kind, merchantID: e.merchantID, paymentID: paymentID,
                                 account: account, carried: false)]
    }
}

/// The durable queue of balance transactions to fetch (`ingest.stripe.fee_state_file`), one row
/// per balance transaction id, so every fee is fetched and posted once whatever reports it.
/// Rows: `pending` (due at `next_attempt_ms`), `done` (posted as `event_id`, or nothing to
/// post), `carried` (the fee came with the payment), `failed` (a permanent refusal; kept for the
/// operator). Only ids and the error class are stored, never the key or an answer's body.
public final class StripeFeeQueue: Sendable {
    public let store: Store

    static let migrations: [Migration] = [
        Migration(
            "stripe_fees.1",
            """
            CREATE TABLE stripe_fee_queue (
                balance_transaction TEXT PRIMARY KEY,
                kind TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
                merchant_id TEXT NOT NULL,
                payment_id TEXT NOT NULL,
                account TEXT,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'carried', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms INTEGER NOT NULL,
                last_error TEXT,
                event_id TEXT,
                created_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX stripe_fee_due ON stripe_fee_queue(next_attempt_ms) WHERE state = 'pending';
            """)
    ]

    public init(path: String, logger: Logger) async throws {
        store = try await Store(path: path, migrations: Self.migrations, durability: .full, logger: logger)
    }

    public static func nowMS() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Records requests (a known balance transaction is left as it is); returns once durable.
    public func enqueue(_ requests: [StripeFeeRequest]) async throws {
        guard !requests.isEmpty else { return }
        let now = Self.nowMS()
        try await store.write { db in
            do {
                for r in requests {
                    try db.execute(
                        """
                        INSERT OR IGNORE INTO stripe_fee_queue
                            (balance_transaction, kind, merchant_id, payment_id, account, state, next_attempt_ms, created_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [.text(r.balanceTransaction), .text(r.kind), .text(r.merchantID), .text(r.paymentID),
                         SQLValue(r.account), .text(r.carried ? "carried" : "pending"), .int(now), .int(now / 1000)])
                }
            }
        }
    }

    /// Pending rows that are due, oldest first.
    public func due(limit: Int, nowMS: Int64 = StripeFeeQueue.nowMS()) async throws -> [(request: StripeFeeRequest, attempts: Int)] {
        try await store.withConnection { db in
            try db.query(
                """
                SELECT balance_transaction, kind, merchant_id, payment_id, account, attempts FROM stripe_fee_queue
                WHERE state = 'pending' AND next_attempt_ms <= ? ORDER BY next_attempt_ms LIMIT ?
                """, [.int(nowMS), .int(Int64(limit))]
            ).map {
                (StripeFeeRequest(
                    balanceTransaction: $0.string(0) ?? "", kind: $0.string(1) ?? "charge", merchantID: $0.string(2) ?? "",
                    paymentID: $0.string(3) ?? "", account: $0.string(4), carried: false), Int($0.int(5) ?? 0))
            }
        }
    }

    func finish(_ bt: String, state: String, eventID: String?, error: String? = nil) async throws {
        _ = try await store.write { db in
            try db.execute(
                "UPDATE stripe_fee_queue SET state = ?, event_id = ?, last_error = ?, attempts = attempts + 1 WHERE balance_transaction = ?",
                [.text(state), SQLValue(eventID), SQLValue(error), .text(bt)])
        }
    }

    func retry(_ bt: String, atMS: Int64, error: String) async throws {
        _ = try await store.write { db in
            try db.execute(
                "UPDATE stripe_fee_queue SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? WHERE balance_transaction = ?",
                [.int(atMS), .text(error), .text(bt)])
        }
    }

    /// Rows per state.
    public func counts() async throws -> [String: Int] {
        try await store.withConnection { db in
            var out: [String: Int] = [:]
            for r in try db.query("SELECT state, COUNT(*) FROM stripe_fee_queue GROUP BY state") {
                out[r.string(0) ?? ""] = Int(r.int(1) ?? 0)
            }
            return out
        }
    }

    /// One row's state and attempts (tests, operators).
    public func row(_ bt: String) async throws -> (state: String, attempts: Int, eventID: String?, lastError: String?)? {
        try await store.withConnection { db in
            try db.queryOne(
                "SELECT state, attempts, event_id, last_error FROM stripe_fee_queue WHERE balance_transaction = ?", [.text(bt)]
            ).map { ($0.string(0) ?? "", Int($0.int(1) ?? 0), $0.string(2), $0.string(3)) }
        }
    }
}

/// Off the request path: fetches each queued balance transaction
/// (`GET /v1/balance_transactions/{id}`) and accepts its fee as the canonical `fee.assessed`
/// naming the payment through `Outbox.accept`, the durable path every webhook takes. The event
/// id is derived from the balance transaction id, so a fee fetched twice (a crash between the
/// accept and marking the row done) is a duplicate in the outbox, never a second posting.
/// 429, 5xx and connection failures back off (doubling from `fee_backoff`, Retry-After wins);
/// other refusals (401, 404) mark the row `failed` with the status only.
public final class StripeFeeFetcher: Service, Sendable {
    let queue: StripeFeeQueue
    let api: StripeAPI
    let outbox: Outbox
    let logger: Logger
    let metrics: IngestMetrics?

    public init(queue: StripeFeeQueue, api: StripeAPI, outbox: Outbox, metrics: IngestMetrics? = nil, logger: Logger) {
        self.queue = queue
        self.api = api
        self.outbox = outbox
        self.metrics = metrics
        self.logger = logger
    }

    /// `payfleet_ingest_stripe_fees{state}`: queue rows per state (`failed` > 0 needs an operator).
    public func reportQueue() async {
        guard let metrics, let counts = try? await queue.counts() else { return }
        for state in ["pending", "done", "carried", "failed"] {
            metrics.registry.makeGauge(
                name: "payfleet_ingest_stripe_fees", labels: [("state", state)],
                help: "Stripe balance transactions queued for their fee, by state"
            ).set(Double(counts[state] ?? 0))
        }
    }

    /// The canonical id of the fee of balance transaction `bt`.
    public static func feeEventID(balanceTransaction bt: String) -> String {
        PaymentEvent.canonicalID(provider: "stripe", eventID: "\(bt):fee")
    }

    /// The canonical `fee.assessed` of a fetched balance transaction, or nil when it carries no
    /// fee to book (zero, or a fee returned on a refund: negative).
    public static func feeEvent(_ bt: [String: Any], request r: StripeFeeRequest, receivedAt: Date = Date()) throws
        -> PaymentEvent?
    {
        guard let fee = JSONValue.int64(bt["fee"]),
            let currency = Currency(code: (JSONValue.string(bt["currency"]) ?? "").uppercased())
        else {
            throw StripeAPIError(status: 200, transient: false, message: "balance transaction \(r.balanceTransaction): no integer fee or currency")
        }
        guard fee > 0 else { return nil }
        var metadata: [String: String] = ["balance_transaction": r.balanceTransaction, "fee_of": r.kind]
        if let net = JSONValue.int64(bt["net"]) { metadata["net"] = String(net) }
        if let amount = JSONValue.int64(bt["amount"]) { metadata["gross"] = String(amount) }
        // Informational only (never used for money): Stripe sends the rate as a JSON number.
        if let rate = JSONValue.string(bt["exchange_rate"]) { metadata["exchange_rate"] = rate }
        if let source = JSONValue.string(bt["source"]) { metadata["source"] = source }
        let created = JSONValue.int64(bt["created"]).map { Date(timeIntervalSince1970: TimeInterval($0)) } ?? receivedAt
        let e = PaymentEvent(
            id: feeEventID(balanceTransaction: r.balanceTransaction), type: .feeAssessed, occurredAt: min(created, receivedAt),
            receivedAt: receivedAt, source: .init(provider: "stripe", eventID: r.balanceTransaction, account: r.account),
            merchantID: r.merchantID, payment: .init(id: r.paymentID), amount: Money(value: fee, currency: currency),
            metadata: metadata)
        do { try e.validate() } catch {
            throw StripeAPIError(status: 200, transient: false, message: "fee event invalid: \(error.field): \(error.message)")
        }
        return e
    }

    /// Works through the due rows once; returns how many were handled.
    @discardableResult
    public func drain(limit: Int = 50) async throws -> Int {
        let rows = try await queue.due(limit: limit)
        for (r, attempts) in rows {
            if Task.isCancelled { break }
            let bt = r.balanceTransaction
            do {
                let object = try await api.get("/v1/balance_transactions/\(StripeAPI.encode(bt))")
                guard let e = try Self.feeEvent(object, request: r) else {
                    try await queue.finish(bt, state: "done", eventID: nil)
                    continue
                }
                _ = try await outbox.accept([.event(e)], traceparent: Self.traceparent())
                try await queue.finish(bt, state: "done", eventID: e.id)
                logger.info(
                    "stripe fee accepted",
                    metadata: [LogKey.eventID: "\(e.id)", LogKey.stripeBalanceTransaction: "\(bt)"])
            } catch let e as StripeAPIError where e.transient {
                // Integer milliseconds: doubling per attempt up to the cap, or Stripe's Retry-After.
                let base = Int64(api.configuration.backoffMS) << Int64(min(attempts, 20))
                let delayMS = e.retryAfter.map { Int64(($0 * 1000).rounded(.up)) } ?? min(base, Int64(api.configuration.backoffMaxMS))
                try await queue.retry(bt, atMS: StripeFeeQueue.nowMS() + delayMS, error: e.message)
                logger.info(
                    "stripe fee fetch will be retried",
                    metadata: [LogKey.stripeBalanceTransaction: "\(bt)", LogKey.error: "\(e.message)", LogKey.retryInMS: "\(delayMS)"])
            } catch let e as StripeAPIError {
                try await queue.finish(bt, state: "failed", eventID: nil, error: e.message)
                logger.error("stripe fee fetch failed", metadata: [LogKey.stripeBalanceTransaction: "\(bt)", LogKey.error: "\(e.message)"])
            }
        }
        return rows.count
    }

    static func traceparent() -> String {
        func hex(_ n: Int) -> String { (0..<n).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined() }
        return "00-\(hex(16))-\(hex(8))-01"
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var handled = 0
            do { handled = try await drain() } catch {
                // The queue or the outbox could not be written: the row stays due.
                logger.error("stripe fee queue failed", metadata: [LogKey.error: "\(error)"])
            }
            await reportQueue()
            if handled == 0 { try? await Task.sleep(for: .milliseconds(api.configuration.pollIntervalMS)) }
        }
    }
}
