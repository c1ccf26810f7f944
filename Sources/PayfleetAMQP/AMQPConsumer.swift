import CRabbitMQ
import Foundation
import Logging
import PayfleetCore

/// Consumes one queue with manual acks and a `basic.qos` prefetch, on its own connection and
/// thread. Deliveries arrive on `events` (an AsyncStream); acks are queued back to the thread,
/// which wakes from `poll(2)` through a pipe, so acking never waits on a timer.
///
/// On a lost connection the consumer emits `.disconnected`, reconnects with backoff and jitter,
/// runs `onConnect` (re-declares the topology) and resumes consuming (`.connected`). Deliveries
/// of an older connection cannot be acked any more: the broker has requeued them, and acks
/// carrying an old `generation` are dropped.
public final class AMQPConsumer: @unchecked Sendable {
    public typealias OnConnect = @Sendable (AMQPDeclarer) throws -> Void

    public enum Event: Sendable {
        case connected(generation: Int)
        /// Deliveries that arrived together, in order (at most the prefetch count).
        case deliveries([AMQPDelivery])
        case disconnected(AMQPError)
        /// The broker confirmed `stopConsuming()` (or it was requested while disconnected):
        /// no more deliveries will come.
        case stopped
    }

    enum Command {
        case ack(UInt64, multiple: Bool, generation: Int)
        case nack(UInt64, requeue: Bool, generation: Int)
        case stopConsuming
        case demand
    }

    public let queue: String
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let config: AMQPConfiguration
    private let prefetch: Int
    private let logger: Logger
    private let onConnect: OnConnect?
    private let consumerTag: String

    private let lock = NSLock()
    private var commands: [Command] = []
    private var closed = false
    private var stopRequested = false
    /// In on-demand mode deliveries are held until the reader asks, then handed over all at
    /// once: while a batch is being committed the next one grows, which is what makes group
    /// commit pay off.
    private let onDemand: Bool
    private var pending: [AMQPDelivery] = []
    private var demanded = false
    private let maxBatch: Int
    private var connected = false
    private var lastErrorText: String?
    private var pipeFDs: [Int32] = [-1, -1]
    private let done = DispatchSemaphore(value: 0)

    public init(
        configuration: AMQPConfiguration, queue: String, prefetch: Int = 200, name: String = "consumer",
        logger: Logger, onDemand: Bool = false, maxBatch: Int? = nil, onConnect: OnConnect? = nil
    ) {
        self.onDemand = onDemand
        self.maxBatch = maxBatch ?? prefetch
        self.config = configuration
        self.queue = queue
        self.prefetch = prefetch
        self.logger = logger
        self.onConnect = onConnect
        self.consumerTag = "\(name)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
        var fds: [Int32] = [-1, -1]
        _ = fds.withUnsafeMutableBufferPointer { pipe($0.baseAddress!) }
        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
        pipeFDs = fds
        let t = Thread { [self] in
            self.loop()
            self.done.signal()
        }
        t.name = "amqp-\(name)"
        t.start()
    }

    deinit {
        close(pipeFDs[0])
        close(pipeFDs[1])
    }

    public var isConnected: Bool { lock.withLock { connected } }
    public var lastError: String? { lock.withLock { lastErrorText } }

    /// Acknowledges a delivery (and, with `multiple`, every earlier one on the same connection).
    public func ack(_ d: AMQPDelivery, multiple: Bool = false) {
        send(.ack(d.deliveryTag, multiple: multiple, generation: d.generation))
    }

    /// Rejects a delivery; `requeue: false` dead-letters it through the queue's DLX.
    public func nack(_ d: AMQPDelivery, requeue: Bool) {
        send(.nack(d.deliveryTag, requeue: requeue, generation: d.generation))
    }

    /// On-demand mode: hand over everything received so far (or the next delivery) as one batch.
    public func requestDeliveries() { send(.demand) }

    /// Sends basic.cancel: no new deliveries; acks still work. Used for graceful shutdown.
    public func stopConsuming() {
        let isConnected = lock.withLock { () -> Bool in
            stopRequested = true
            commands.append(.stopConsuming)
            return connected
        }
        wake()
        if !isConnected { continuation.yield(.stopped) }
    }

    /// Closes the connection (unacked deliveries return to the queue) and ends `events`.
    public func shutdown() {
        lock.withLock { closed = true }
        wake()
        done.wait()
        done.signal()
    }

    private func send(_ c: Command) {
        lock.withLock { commands.append(c) }
        wake()
    }

    private func wake() {
        var b: UInt8 = 1
        _ = write(pipeFDs[1], &b, 1)
    }

    private func drainPipe() {
        var buf = [UInt8](repeating: 0, count: 256)
        while read(pipeFDs[0], &buf, 256) > 0 {}
    }

    // MARK: The consumer thread

    private func loop() {
        let backoff = AMQPBackoff(initialMS: config.reconnectInitialMS, maxMS: config.reconnectMaxMS)
        var attempt = 0
        var generation = 0
        defer { continuation.finish() }
        while !lock.withLock({ closed }) {
            let conn: AMQPConnection
            do {
                conn = try AMQPConnection.open(config)
                try onConnect?(AMQPDeclarer(connection: conn))
                try conn.qos(prefetch: prefetch)
                if lock.withLock({ stopRequested }) {
                    continuation.yield(.stopped)
                } else {
                    try conn.consume(queue: queue, tag: consumerTag)
                }
            } catch {
                let e = error as? AMQPError ?? AMQPError(.connectionFailed, "\(error)")
                let stopping = lock.withLock { () -> Bool in
                    connected = false
                    lastErrorText = e.description
                    return stopRequested
                }
                if stopping { continuation.yield(.stopped) }
                let delay = backoff.delayMS(attempt: attempt)
                attempt += 1
                logger.warning("consumer cannot connect; retrying", metadata: [
                    LogKey.amqpQueue: "\(queue)", LogKey.amqpError: "\(e)", LogKey.amqpRetryInMS: "\(delay)",
                ])
                sleep(ms: delay)
                continue
            }
            attempt = 0
            generation += 1
            lock.withLock {
                connected = true
                lastErrorText = nil
                // Acks for the old connection are void now.
                commands.removeAll {
                    switch $0 {
                    case .stopConsuming, .demand: return false
                    default: return true
                    }
                }
                pending.removeAll()
            }
            continuation.yield(.connected(generation: generation))
            logger.info("consuming", metadata: [LogKey.amqpQueue: "\(queue)", LogKey.amqpPrefetch: "\(prefetch)"])
            do {
                try serve(conn, generation: generation)
                conn.close()
                return
            } catch {
                conn.abandon()
                lock.withLock {
                    connected = false
                    lastErrorText = error.description
                }
                logger.warning("consumer lost its connection", metadata: [LogKey.amqpQueue: "\(queue)", LogKey.amqpError: "\(error)"])
                continuation.yield(.disconnected(error))
                sleep(ms: backoff.delayMS(attempt: 0))
            }
        }
    }

    static func readable(_ fd: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) > 0
    }

    private func sleep(ms: Int) {
        let until = Date().addingTimeInterval(Double(ms) / 1000)
        while Date() < until && !lock.withLock({ closed }) {
            var pfd = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, min(200, Int(until.timeIntervalSinceNow * 1000)))))
            drainPipe()
        }
    }

    private func serve(_ conn: AMQPConnection, generation: Int) throws(AMQPError) {
        let heartbeatSliceMS = Int32(max(100, min(1000, config.heartbeatSeconds * 250)))
        var cancelled = lock.withLock { stopRequested }
        while true {
            let (cmds, isClosed) = lock.withLock { () -> ([Command], Bool) in
                let c = commands
                commands.removeAll(keepingCapacity: true)
                return (c, closed)
            }
            for c in cmds {
                switch c {
                case .ack(let tag, let multiple, let gen) where gen == generation:
                    try conn.ack(tag, multiple: multiple)
                case .nack(let tag, let requeue, let gen) where gen == generation:
                    try conn.nack(tag, requeue: requeue)
                case .demand:
                    demanded = true
                case .stopConsuming:
                    if !cancelled {
                        logger.info("stopping consumption", metadata: [LogKey.amqpQueue: "\(queue)"])
                        try conn.cancel(tag: consumerTag)
                        cancelled = true
                    }
                default:
                    break  // an ack for an older connection: the broker already requeued it
                }
            }
            if isClosed { return }
            // Deliveries already read and now demanded go at once: with the prefetch window
            // full the broker sends nothing until an ack, and the poll below would hold them
            // for its whole slice.
            if demanded && !pending.isEmpty { hand([]) }

            if !conn.hasBufferedData {
                var fds = [
                    pollfd(fd: conn.socketFD, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0),
                ]
                _ = poll(&fds, 2, heartbeatSliceMS)
                if fds[1].revents != 0 { drainPipe() }
                // Even with nothing to read, the read below lets rabbitmq-c send a due heartbeat.
            }
            // Read everything that is already here, and hand it over as one batch. Every
            // result is handled: a delivery read here is never dropped.
            var batch: [AMQPDelivery] = []
            reading: while batch.count < prefetch {
                switch try conn.consumeNext(timeoutMS: 0) {
                case .delivery(let msg, let tag, let redelivered, let ex, let rk):
                    batch.append(AMQPDelivery(
                        message: msg, deliveryTag: tag, redelivered: redelivered, exchange: ex, routingKey: rk,
                        generation: generation, queue: queue))
                case .frame(.cancelled):
                    hand(batch)
                    throw AMQPError(.serverClosed, "the broker cancelled the consumer on \(queue) (queue deleted?)")
                case .frame(.cancelOK):
                    hand(batch)
                    batch = []
                    continuation.yield(.stopped)
                case .frame, .timeout:
                    if !conn.hasBufferedData && !Self.readable(conn.socketFD) { break reading }
                }
            }
            hand(batch)
        }
    }

    /// Yields deliveries at once, or (on-demand mode) when the reader has asked for them.
    private func hand(_ batch: [AMQPDelivery]) {
        guard onDemand else {
            if !batch.isEmpty { continuation.yield(.deliveries(batch)) }
            return
        }
        pending.append(contentsOf: batch)
        if demanded && !pending.isEmpty {
            let n = min(pending.count, maxBatch)
            continuation.yield(.deliveries(Array(pending.prefix(n))))
            pending.removeFirst(n)
            demanded = false
        }
    }
}
