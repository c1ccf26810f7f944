import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import Prometheus
import ServiceLifecycle

/// One unsent row of an outbox, as its storage hands it to the relay.
public struct OutboxRow<Key: Sendable>: Sendable {
    /// How the storage names the row when it is marked sent or deferred (ingest: `seq`;
    /// settlement: the event id).
    public let key: Key
    public let event: OutboxEvent
    /// Failed publishes of this row so far (always 0 for an outbox that keeps no count).
    public let attempts: Int

    public init(key: Key, event: OutboxEvent, attempts: Int = 0) {
        self.key = key
        self.event = event
        self.attempts = attempts
    }
}

/// The operator's pause of a relay (`payfleet partitions resize`), as its outbox stores it.
public struct OutboxPause: Sendable, Equatable {
    public let holder: String
    public let reason: String
    public let pausedMS: Int64
    /// When the relay confirmed it stopped publishing (nil: not yet).
    public let acknowledgedMS: Int64?

    public init(holder: String, reason: String, pausedMS: Int64, acknowledgedMS: Int64?) {
        self.holder = holder
        self.reason = reason
        self.pausedMS = pausedMS
        self.acknowledgedMS = acknowledgedMS
    }
}

/// An outbox table as `OutboxRelay` reads it. The table stays in its own store (ingest's
/// `outbox` in `ingest.sqlite`, settlement's `settlement_outbox`); the relay only fetches
/// unsent rows and marks them sent, and, where the outbox keeps them, defers refused rows and
/// honours the operator's pause.
public protocol OutboxStorage: Sendable {
    associatedtype Key: Sendable
    /// The oldest unsent rows that are due, in the order they must be published; at most `limit`.
    func unsent(limit: Int) async throws -> [OutboxRow<Key>]
    /// Marks rows sent, after the broker confirmed them.
    func markSent(_ keys: [Key]) async throws
    /// A row the broker refused (`reason`: the refusal, never event data) waits for its own
    /// retry. Default: nothing, the next round publishes it again.
    func deferRow(_ key: Key, reason: String) async throws
    /// Unsent rows, and of them the parked ones (refused `parkAfterAttempts` times or more).
    func counts() async throws -> (pending: Int, parked: Int)
    /// Failed attempts after which a row counts as parked; nil: the outbox parks nothing.
    var parkAfterAttempts: Int? { get }
    /// The operator's pause, if one is set. Default: never paused.
    func pause() async throws -> OutboxPause?
    /// The relay stopped between two rounds for the pause: nothing it published is unconfirmed.
    func acknowledgePause() async throws
}

extension OutboxStorage {
    public func deferRow(_ key: Key, reason: String) async throws {}
    public var parkAfterAttempts: Int? { nil }
    public func pause() async throws -> OutboxPause? { nil }
    public func acknowledgePause() async throws {}
}

/// What a relay counts: rows confirmed, publishes not confirmed, unsent and parked rows.
public struct OutboxRelayMetrics: Sendable {
    public var published: Counter
    public var publishFailures: Counter?
    public var pending: Gauge
    public var parked: Gauge?

    public init(published: Counter, publishFailures: Counter? = nil, pending: Gauge, parked: Gauge? = nil) {
        self.published = published
        self.publishFailures = publishFailures
        self.pending = pending
        self.parked = parked
    }
}

/// The one outbox relay (ingest's outbox, settlement's day closes): publishes unsent rows in
/// order to `payfleet.events` with confirms, `mandatory` and the one header set
/// (`OutboxPublishing`), and marks a row sent only after its confirm. Nothing is ever dropped:
/// - the broker unreachable or the connection lost: every row stays pending and the relay
///   retries with backoff (`AMQPBackoff`), then publishes the oldest due row alone (a probe)
///   until one is confirmed;
/// - a row the broker refuses (unroutable, nacked), or a probe whose publish alone breaks a
///   connection that was up: that row waits for its own retry (`OutboxStorage.deferRow`) and
///   the rows behind it go on;
/// - while the outbox holds the operator's pause, nothing is published; the relay acknowledges
///   it between two rounds.
///
/// As a `Service` it runs rounds back to back (ingest). A caller with its own timer calls
/// `round()` instead (the settlement day close); rounds never run concurrently.
public final class OutboxRelay: Service, Sendable {
    let storage: any OutboxStorage
    /// The relay's own publisher: confirms; declares `payfleet.events` (and `declare`) on connect.
    public let publisher: AMQPPublisher
    let appID: String
    let batchSize: Int
    let metrics: OutboxRelayMetrics
    let countInterval: Duration
    let connectWait: Duration
    let logger: Logger
    /// Waits after a publish the connection failed: 100 ms doubling to 5 s, with jitter.
    let backoff = AMQPBackoff(initialMS: 100, maxMS: 5_000)

    struct State {
        var failures = 0
        var probing = false
        var paused = false
        var lastCount = ContinuousClock.now - .seconds(3600)
        var lastPauseCheck = ContinuousClock.now - .seconds(3600)
        var counts = (pending: 0, parked: 0)
    }
    let state = Locked(State())

    /// - `name`: the publisher thread's name; `appID`: the messages' `app-id`.
    /// - `countInterval`: how often the pending/parked gauges are refreshed (counts share the
    ///   store's thread with commits).
    /// - `connectWait`: with rows to publish and the publisher not connected, how long a round
    ///   first waits for it.
    /// - `declare`: more topology declared on every (re)connect, after the events exchange.
    public init<Storage: OutboxStorage>(
        storage: Storage, amqp: AMQPConfiguration, name: String, appID: String, batchSize: Int,
        metrics: OutboxRelayMetrics, logger: Logger, countInterval: Duration = .seconds(1),
        connectWait: Duration = .zero, declare: AMQPPublisher.OnConnect? = nil
    ) {
        self.storage = storage
        self.appID = appID
        self.batchSize = max(1, batchSize)
        self.metrics = metrics
        self.countInterval = countInterval
        self.connectWait = connectWait
        self.logger = logger
        publisher = AMQPPublisher(
            configuration: amqp, name: name, maxBatch: max(1, batchSize), logger: logger,
            onConnect: { d in
                try d.eventsExchange()
                try declare?(d)
            })
    }

    public var brokerConnected: Bool { publisher.isConnected }

    /// True while the operator's pause holds the relay (`payfleet partitions resize`).
    public var isPaused: Bool { state.current.paused }

    /// The outbox's unsent and parked rows, as last counted (at most `countInterval` old).
    public var lastCounts: (pending: Int, parked: Int) { state.current.counts }

    public func run() async throws {
        defer { publisher.close() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let r = await round()
            if r.next > .zero { try? await Task.sleep(for: r.next) }
        }
    }

    /// What one round did, and how long to wait before the next one.
    public struct Round: Sendable {
        /// Rows confirmed and marked sent.
        public var sent = 0
        /// Rows the broker refused (each waits for its own retry).
        public var refused = 0
        /// The connection failed: every unconfirmed row stays pending.
        public var connectionFailed = false
        public var paused = false
        /// 0 after a batch went out, 20 ms with nothing due, 50 ms paused, 1 s after a failed
        /// read, the backoff after a connection failure.
        public var next: Duration = .zero
    }

    /// One round: honour the pause, refresh the counts, publish the oldest due rows (one alone
    /// while probing), mark the confirmed ones sent, defer the refused ones.
    @discardableResult
    public func round() async -> Round {
        await round(storage)
    }

    func round<Storage: OutboxStorage>(_ storage: Storage) async -> Round {
        var out = Round()
        if await checkPause(storage) {
            out.paused = true
            out.next = .milliseconds(50)
            return out
        }
        if ContinuousClock.now - state.current.lastCount >= countInterval {
            if let c = try? await storage.counts() {
                state.withLock { $0.counts = c }
                metrics.pending.set(Double(c.pending))
                metrics.parked?.set(Double(c.parked))
            }
            state.withLock { $0.lastCount = ContinuousClock.now }
        }
        let probing = state.current.probing
        let rows: [OutboxRow<Storage.Key>]
        do { rows = try await storage.unsent(limit: probing ? 1 : batchSize) } catch {
            logger.error("relay cannot read the outbox", metadata: [LogKey.error: "\(error)"])
            out.next = .seconds(1)
            return out
        }
        if rows.isEmpty {
            state.withLock { $0.probing = false }
            out.next = .milliseconds(20)
            return out
        }
        if connectWait > .zero, !publisher.isConnected { _ = await publisher.waitUntilConnected(timeout: connectWait) }
        let wasConnected = publisher.isConnected
        let published = await publishTraced(rows.map(\.event))
        let sent = published.sent.map { rows[$0].key }
        var refused = published.refused.map { (rows[$0.index], $0.error) }
        var connectionError = published.connectionError
        do { try await storage.markSent(sent) } catch {
            // Published but not marked: they will be published again; consumers dedupe by id.
            logger.error("relay cannot mark rows sent", metadata: [LogKey.error: "\(error)"])
        }
        metrics.published.increment(by: Int64(sent.count))
        // A probe that broke a live connection on its own: the row is the cause.
        if probing, rows.count == 1, wasConnected, let e = connectionError,
            e.code == .connectionLost || e.code == .serverClosed
        {
            refused.append((rows[0], e))
            connectionError = nil
        }
        for (row, e) in refused {
            metrics.publishFailures?.increment()
            do { try await storage.deferRow(row.key, reason: e.description) } catch {
                logger.error("relay cannot defer a refused row", metadata: [LogKey.error: "\(error)"])
            }
            let parks = storage.parkAfterAttempts.map { row.attempts + 1 == $0 } ?? false
            if row.attempts == 0 || parks {
                logger.warning(
                    row.attempts == 0 ? "broker refused an event; it waits for its own retry" : "event parked: the broker keeps refusing it",
                    metadata: [
                        LogKey.eventID: "\(row.event.id)", LogKey.eventType: "\(row.event.type)", LogKey.amqpError: "\(e)",
                        LogKey.outboxAttempts: "\(row.attempts + 1)",
                    ])
            }
        }
        out.sent = sent.count
        out.refused = refused.count
        if let e = connectionError {
            let failures = state.withLock { s -> Int in
                s.failures += 1
                s.probing = true
                return s.failures
            }
            out.connectionFailed = true
            metrics.publishFailures?.increment(by: Int64(rows.count - sent.count - refused.count))
            let delay = backoff.delayMS(attempt: failures)
            if failures == 1 || failures % 50 == 0 {
                logger.warning("relay publish failed; retrying", metadata: [
                    LogKey.amqpError: "\(e)", LogKey.outboxUnsent: "\(rows.count - sent.count)", LogKey.retryInMS: "\(delay)",
                ])
            }
            out.next = .milliseconds(delay)
        } else {
            state.withLock { s in
                s.failures = 0
                if !sent.isEmpty { s.probing = false }
            }
        }
        return out
    }

    /// The operator's pause, read at most every 100 ms and only between rounds: when the relay
    /// acknowledges it, nothing it published is still waiting for a confirm. A failed read
    /// keeps the state it had (never publishes through a pause it cannot see).
    func checkPause<Storage: OutboxStorage>(_ storage: Storage) async -> Bool {
        let s = state.current
        guard ContinuousClock.now - s.lastPauseCheck > .milliseconds(100) else { return s.paused }
        state.withLock { $0.lastPauseCheck = ContinuousClock.now }
        guard let read = try? await storage.pause() as OutboxPause?? else { return s.paused }
        var paused = s.paused
        if let pause = read {
            if !paused || pause.acknowledgedMS == nil {
                try? await storage.acknowledgePause()
                if !paused {
                    logger.notice("relay paused by the operator; accepted events wait in the outbox", metadata: [
                        LogKey.pauseHolder: "\(pause.holder)", LogKey.pauseReason: "\(pause.reason)",
                    ])
                }
            }
            paused = true
        } else if paused {
            paused = false
            logger.notice("relay resumed")
        }
        state.withLock { $0.paused = paused }
        return paused
    }
}
