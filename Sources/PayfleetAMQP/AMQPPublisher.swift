import Foundation
import Logging
import PayfleetCore

/// Publishes persistent messages with publisher confirms on its own connection and thread.
///
/// `publish` returns only once the broker has confirmed the message (basic.ack). A nack, a
/// basic.return (unroutable with `mandatory`), a lost connection or a confirm timeout is an
/// error the caller sees; the message may or may not have reached a queue then, so callers
/// republish and consumers dedupe. Requests that arrive together are sent as one batch and
/// their confirms awaited together, which is what makes confirms fast.
///
/// The connection reconnects by itself with exponential backoff and jitter; `onConnect` runs on
/// every (re)connect to re-declare the topology.
public final class AMQPPublisher: @unchecked Sendable {
    public typealias OnConnect = @Sendable (AMQPDeclarer) throws -> Void

    struct Request {
        let outgoing: AMQPOutgoing
        let done: @Sendable (Result<Void, AMQPError>) -> Void
    }

    struct State {
        var pending: [Request] = []
        var closed = false
        var connected = false
        var lastError: String?
        var generation = 0
    }

    private let config: AMQPConfiguration
    private let logger: Logger
    private let onConnect: OnConnect?
    private let condition = NSCondition()
    private var state = State()
    private let confirmTimeoutMS: Int
    private let maxBatch: Int
    private var thread: Thread?
    private let finished = NSCondition()
    private var threadDone = false

    public init(
        configuration: AMQPConfiguration, name: String = "publisher", confirmTimeoutMS: Int = 30_000,
        maxBatch: Int = 1_000, logger: Logger, onConnect: OnConnect? = nil
    ) {
        self.config = configuration
        self.logger = logger
        self.onConnect = onConnect
        self.confirmTimeoutMS = confirmTimeoutMS
        self.maxBatch = maxBatch
        let t = Thread { [self] in self.loop() }
        t.name = "amqp-\(name)"
        thread = t
        t.start()
    }

    /// True while connected to the broker.
    public var isConnected: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.connected
    }

    public var lastError: String? {
        condition.lock()
        defer { condition.unlock() }
        return state.lastError
    }

    /// Waits until connected or the timeout passes; returns whether connected.
    public func waitUntilConnected(timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isConnected { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return isConnected
    }

    /// Publishes one message and returns once the broker confirmed it.
    public func publish(_ outgoing: AMQPOutgoing) async throws(AMQPError) {
        let result: Result<Void, AMQPError> = await withCheckedContinuation { cont in
            enqueue([Request(outgoing: outgoing, done: { cont.resume(returning: $0) })])
        }
        try result.get()
    }

    /// Publishes several messages in one confirm round; one result per message, in order.
    public func publish(batch: [AMQPOutgoing]) async -> [Result<Void, AMQPError>] {
        guard !batch.isEmpty else { return [] }
        let results = Locked([Result<Void, AMQPError>?](repeating: nil, count: batch.count))
        let remaining = Locked(batch.count)
        return await withCheckedContinuation { cont in
            let requests = batch.enumerated().map { i, o in
                Request(outgoing: o, done: { r in
                    results.withLock { $0[i] = r }
                    let left = remaining.withLock { n -> Int in n -= 1; return n }
                    if left == 0 { cont.resume(returning: results.current.map { $0! }) }
                })
            }
            enqueue(requests)
        }
    }

    private func enqueue(_ requests: [Request]) {
        condition.lock()
        if state.closed {
            condition.unlock()
            for r in requests { r.done(.failure(AMQPError(.closed, "publisher is closed"))) }
            return
        }
        if !state.connected {
            let err = state.lastError ?? "connecting"
            condition.unlock()
            for r in requests {
                r.done(.failure(AMQPError(.notConnected, "not connected to \(config.host):\(config.port): \(err)")))
            }
            return
        }
        state.pending.append(contentsOf: requests)
        condition.signal()
        condition.unlock()
    }

    /// Stops the thread after the batch in flight; queued requests fail with `.closed`.
    public func close() {
        condition.lock()
        state.closed = true
        let pending = state.pending
        state.pending.removeAll()
        condition.signal()
        condition.unlock()
        for r in pending { r.done(.failure(AMQPError(.closed, "publisher is closed"))) }
        guard Thread.current != thread else { return }
        finished.lock()
        while !threadDone { _ = finished.wait(until: Date().addingTimeInterval(1)) }
        finished.unlock()
    }

    // MARK: The publisher thread

    private func loop() {
        defer {
            finished.lock()
            threadDone = true
            finished.broadcast()
            finished.unlock()
        }
        let backoff = AMQPBackoff(initialMS: config.reconnectInitialMS, maxMS: config.reconnectMaxMS)
        var attempt = 0
        while true {
            if isClosed { return }
            let conn: AMQPConnection
            do {
                conn = try AMQPConnection.open(config)
                try conn.confirmSelect()
                try onConnect?(AMQPDeclarer(connection: conn))
            } catch {
                let e = error as? AMQPError ?? AMQPError(.connectionFailed, "\(error)")
                setDisconnected(e.description)
                let delay = backoff.delayMS(attempt: attempt)
                attempt += 1
                logger.warning("publisher cannot connect; retrying", metadata: [
                    LogKey.amqpHost: "\(config.host):\(config.port)", LogKey.amqpError: "\(e)", LogKey.amqpRetryInMS: "\(delay)",
                ])
                sleepUnlessClosed(ms: delay)
                continue
            }
            attempt = 0
            condition.lock()
            state.connected = true
            state.lastError = nil
            state.generation += 1
            condition.unlock()
            logger.info("publisher connected", metadata: [LogKey.amqpHost: "\(conn.config.host):\(conn.config.port)"])
            do {
                try serve(conn)
                conn.close()
                return
            } catch {
                conn.abandon()
                setDisconnected(error.description)
                logger.warning("publisher lost its connection", metadata: [LogKey.amqpError: "\(error)"])
                sleepUnlessClosed(ms: backoff.delayMS(attempt: 0))
            }
        }
    }

    private var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.closed
    }

    private func setDisconnected(_ why: String) {
        condition.lock()
        state.connected = false
        state.lastError = why
        let pending = state.pending
        state.pending.removeAll()
        condition.unlock()
        for r in pending {
            r.done(.failure(AMQPError(.notConnected, "not connected to \(config.host):\(config.port): \(why)")))
        }
    }

    private func sleepUnlessClosed(ms: Int) {
        condition.lock()
        let until = Date().addingTimeInterval(Double(ms) / 1000)
        while !state.closed && Date() < until { _ = condition.wait(until: until) }
        condition.unlock()
    }

    /// Publishes batches until closed; throws when the connection breaks.
    private func serve(_ conn: AMQPConnection) throws(AMQPError) {
        var nextTag: UInt64 = 1
        let idleWaitMS = max(200, config.heartbeatSeconds * 1000 / 4)
        while true {
            condition.lock()
            if state.pending.isEmpty && !state.closed {
                _ = condition.wait(until: Date().addingTimeInterval(Double(idleWaitMS) / 1000))
            }
            if state.closed && state.pending.isEmpty {
                condition.unlock()
                return
            }
            let take = min(maxBatch, state.pending.count)
            let batch = Array(state.pending.prefix(take))
            state.pending.removeFirst(take)
            condition.unlock()

            if batch.isEmpty {
                // Idle: let rabbitmq-c send and check heartbeats, and notice a closed connection.
                while !(try conn.waitFrame(timeoutMS: 0).isTimeout) {}
                continue
            }
            var outstanding: [UInt64: Request] = [:]
            var returned: Set<UInt64> = []
            let firstTag = nextTag
            do throws(AMQPError) {
                for r in batch {
                    try conn.publish(r.outgoing)
                    outstanding[nextTag] = r
                    nextTag += 1
                }
                let deadline = Date().addingTimeInterval(Double(confirmTimeoutMS) / 1000)
                while !outstanding.isEmpty {
                    if Date() > deadline {
                        throw AMQPError(.timeout, "no publisher confirm within \(confirmTimeoutMS) ms")
                    }
                    switch try conn.waitFrame(timeoutMS: 1000) {
                    case .ack(let tag, let multiple):
                        for t in Self.tags(tag, multiple, in: outstanding) {
                            let r = outstanding.removeValue(forKey: t)!
                            if returned.contains(t) {
                                r.done(.failure(AMQPError(.unroutable,
                                    "message to exchange '\(r.outgoing.exchange)' with key '\(r.outgoing.routingKey)' matched no queue",
                                    replyCode: 312)))
                            } else {
                                r.done(.success(()))
                            }
                        }
                    case .nack(let tag, let multiple):
                        for t in Self.tags(tag, multiple, in: outstanding) {
                            let r = outstanding.removeValue(forKey: t)!
                            r.done(.failure(AMQPError(.nacked,
                                "broker refused the message for '\(r.outgoing.exchange)' '\(r.outgoing.routingKey)'")))
                        }
                    case .returned(let msg, _, _, let ex, let rk):
                        // A return precedes its message's ack; find the earliest unconfirmed
                        // publish it can be (same exchange, key and id).
                        if let t = outstanding.keys.sorted().first(where: { t in
                            let o = outstanding[t]!.outgoing
                            return !returned.contains(t) && o.exchange == ex && o.routingKey == rk
                                && o.message.messageID == msg.messageID
                        }) {
                            returned.insert(t)
                        }
                    default:
                        break
                    }
                }
            } catch {
                for (_, r) in outstanding.sorted(by: { $0.key < $1.key }) {
                    r.done(.failure(AMQPError(error.code == .timeout ? .timeout : .connectionLost,
                        "publish not confirmed: \(error.message)")))
                }
                // Requests of this batch not yet sent also fail.
                let unsent = batch.count - Int(nextTag - firstTag)
                if unsent > 0 {
                    for r in batch.suffix(unsent) {
                        r.done(.failure(AMQPError(.connectionLost, "publish not sent: \(error.message)")))
                    }
                }
                throw error
            }
        }
    }

    static func tags(_ tag: UInt64, _ multiple: Bool, in outstanding: [UInt64: Request]) -> [UInt64] {
        multiple ? outstanding.keys.filter { $0 <= tag }.sorted() : (outstanding[tag] != nil ? [tag] : [])
    }
}

extension AMQPConnection.Frame {
    var isTimeout: Bool { if case .timeout = self { return true } else { return false } }
}
