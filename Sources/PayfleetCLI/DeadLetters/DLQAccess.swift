import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker

/// Exclusive, crash-safe access to one worker's dead-letter queue for one operator command.
///
/// Messages are read *without* ack (a consumer, see `next()`) and held on this connection: nothing leaves
/// the queue until it was republished with a confirm (replay, edit) or archived and fsync'd
/// (purge). Messages not acted on are requeued at the end, one by one in the order they were
/// read. A quorum queue (RabbitMQ 3.10, measured) appends a returned message at its *tail*: so
/// every command reads the whole queue (as it was when the lock was taken) before returning
/// anything — a full turn leaves the order as it was, where returning a prefix would rotate
/// the queue for good. The one exception is a replay told when it has done enough (`--max N`,
/// or every `--id` found): it stops reading there, and the letters it read and left (passed
/// over by the filters, or already on their way to it) go to the tail — nothing lost, the
/// rest of the queue not read at all. If the process dies, the broker returns everything held
/// (in an order of its choosing: nothing lost, perhaps reordered).
///
/// Two commands interleaving their basic.gets on one queue would each see part of it and
/// return their parts interleaved (a lasting reorder). So each command first declares an
/// exclusive queue `payfleet.W.dlq.lock` on the same connection: a second command is refused
/// (405 RESOURCE_LOCKED) and waits; the lock disappears with the connection, even after
/// `kill -9`. Reads go on until the queue answers empty: the depth seen when the lock was taken
/// can undercount (messages another client held are still being returned), and messages the
/// worker dead-letters meanwhile are read and kept in order too. A replay marks what it sends
/// with its run id (`x-payfleet-replay-run`, kept by the runtime when it dead-letters again):
/// a message back from this very run is held, not replayed again, so `--all` while the worker
/// fails them again cannot loop; a cap of twice the initial depth (at least 10,000 more)
/// bounds a queue that fills faster than it is read.
public final class DLQAccess {
    public let worker: RuntimeConfiguration
    public let dlq: String
    let session: AMQPSession
    let amqp: AMQPConfiguration
    /// Messages in the DLQ when the lock was taken.
    public let snapshot: Int
    public private(set) var read = 0
    /// Marks this command's replays (`x-payfleet-replay-run`).
    public let runID = UUID().uuidString
    /// Fetched and not acted on, in fetch order: requeued by `release()`.
    private var held: [AMQPFetched] = []

    public static func lockName(_ worker: RuntimeConfiguration) -> String { worker.topology.dlq + ".lock" }

    /// Connects, takes the lock (waiting up to `wait` seconds for another command to finish).
    public static func open(_ amqp: AMQPConfiguration, worker: RuntimeConfiguration, wait: Double) async throws -> DLQAccess {
        let lock = lockName(worker)
        let dlq = worker.topology.dlq
        let deadline = Date().addingTimeInterval(wait)
        while true {
            let session: AMQPSession
            do { session = try await AMQPSession.connect(amqp) } catch {
                throw CLIFailure("cannot connect to the broker at \(amqp): \(error)")
            }
            do {
                try await session.declare { try $0.exclusiveQueue(lock) }
            } catch let e as AMQPError where e.replyCode == 405 {
                await session.close()
                guard Date() < deadline else {
                    throw CLIFailure(
                        "another payfleet command is working on \(dlq) (it holds \(lock)); try again later or pass --wait SECONDS")
                }
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            let depth: Int
            do { depth = try await session.inspect(queue: dlq).messages } catch let e as AMQPError where e.replyCode == 404 {
                await session.close()
                throw CLIFailure("queue \(dlq) does not exist: is '\(worker.worker)' deployed? (payfleet topology declare)")
            }
            return DLQAccess(worker: worker, dlq: dlq, session: session, amqp: amqp, snapshot: depth)
        }
    }

    private init(worker: RuntimeConfiguration, dlq: String, session: AMQPSession, amqp: AMQPConfiguration, snapshot: Int) {
        self.worker = worker
        self.dlq = dlq
        self.session = session
        self.amqp = amqp
        self.snapshot = snapshot
    }

    private var consuming = false
    private var drained = false
    private var stalled = false
    /// The consumer's prefetch (tests lower it to exercise the consumer hand-over).
    public var prefetch = 65_535
    static let consumerTag = "payfleet-cli"
    /// Consumers started so far: each gets its own tag (`payfleet-cli`, `payfleet-cli-2`, …).
    private var consumers = 0
    private var tag: String { consumers <= 1 ? DLQAccess.consumerTag : "\(DLQAccess.consumerTag)-\(consumers)" }
    /// Deliveries of the current consumer not acked yet (what its prefetch counts).
    private var outstanding = 0
    /// Delivery tags above this one belong to the current consumer.
    private var lastTagBefore: UInt64 = 0
    private var highestTag: UInt64 = 0
    /// Deliveries already on their way to a cancelled consumer, not yet answered by `next()`.
    private var pending: [AMQPFetched] = []
    private var pendingAt = 0

    /// The next message (held until acked or released), or nil once the queue is empty.
    ///
    /// A consumer rather than basic.get: on a quorum queue each basic.get is a Raft round trip
    /// (~4 ms here, 230 msg/s), while deliveries to a consumer stream (5,000 in ~3 s). Every
    /// delivery stays unacked exactly as a basic.get would. A quorum queue stops delivering to a
    /// consumer at its prefetch (65,535, the most AMQP allows; "unlimited" means 2,000 there),
    /// so a consumer that holds that many is cancelled and a new one started on the same
    /// channel: a cancelled consumer's unacked deliveries stay checked out to this channel
    /// (ack and requeue work as before), and the new consumer carries on from the queue's head
    /// with a window of its own. When deliveries pause below the window, the consumer is
    /// stopped and basic.get asks the queue: empty ends the read; a message (the broker was
    /// busy, or messages another client held came back) starts a consumer again.
    public func next() async throws -> AMQPFetched? {
        guard !drained, read < snapshot + max(snapshot, 10_000) else { return nil }
        if let f = takePending() { return f }
        if !stalled {
            if !consuming {
                try await startConsumer()
            } else if prefetch > 0, outstanding >= prefetch {
                // At its window: hand over to a fresh consumer (what was on its way comes first).
                try await stopConsumer()
                try await startConsumer()
                if let f = takePending() { return f }
            }
            if let f = try await session.nextDelivery(timeoutMS: read >= snapshot ? 300 : 1_000) {
                return delivered(f, counted: true)
            }
            // Quiet: stop the consumer first — a delivery arriving in the middle of a basic.get's
            // answer breaks the channel's protocol state — and take what was still on its way.
            try await stopConsumer()
            if let f = takePending() { return f }
            stalled = true
        }
        if let f = try await session.get(queue: dlq) {
            // More is there after all (the broker paused, or held messages came back): stream again.
            stalled = false
            return delivered(f, counted: false)
        }
        drained = true
        return nil
    }

    private func stopConsumer() async throws {
        guard consuming else { return }
        pending += try await session.cancelConsumer(tag: tag)
        consuming = false
        for f in pending { highestTag = max(highestTag, f.deliveryTag) }
    }

    private func startConsumer() async throws {
        consumers += 1
        lastTagBefore = highestTag
        outstanding = 0
        try await session.consume(queue: dlq, prefetch: prefetch, tag: tag)
        consuming = true
    }

    private func takePending() -> AMQPFetched? {
        guard pendingAt < pending.count else { return nil }
        let f = pending[pendingAt]
        pendingAt += 1
        if pendingAt == pending.count { pending.removeAll(); pendingAt = 0 }
        read += 1
        return f
    }

    private func delivered(_ f: AMQPFetched, counted: Bool) -> AMQPFetched {
        read += 1
        highestTag = max(highestTag, f.deliveryTag)
        if counted { outstanding += 1 }
        return f
    }

    /// Keeps a fetched message aside, to be requeued in order by `release()`.
    public func hold(_ f: AMQPFetched) { held.append(f) }

    /// Drops held messages that were acked since (they must not be requeued).
    public func forget(_ fetched: [AMQPFetched]) {
        let tags = Set(fetched.map(\.deliveryTag))
        held.removeAll { tags.contains($0.deliveryTag) }
    }

    /// Removes a message from the DLQ: only after it is safe elsewhere (confirmed or archived).
    public func ack(_ f: AMQPFetched) async throws {
        try await session.ack(f.deliveryTag)
        if consuming, f.deliveryTag > lastTagBefore, outstanding > 0 { outstanding -= 1 }
    }

    /// Reads the whole queue, holds it, and answers the first `limit` messages (all by
    /// default). The rest is read too: returning only a prefix would rotate the queue.
    public func readAll(limit: Int? = nil) async throws -> [DeadLetter] {
        var out: [DeadLetter] = []
        while let f = try await next() {
            hold(f)
            if limit.map({ out.count < $0 }) ?? true { out.append(DeadLetter(f.message)) }
        }
        return out
    }

    /// Requeues every held message in the order read, then closes (releasing the lock).
    private var released = false

    public func release() async {
        guard !released else { return }
        released = true
        // Read from a cancelled consumer and not answered yet: after what was answered, before
        // what the running consumer (started after them) has on its way.
        held += pending[pendingAt...]
        pending.removeAll()
        pendingAt = 0
        if consuming {
            // Stop deliveries first: a requeued message would come straight back to us.
            // Deliveries already on their way are held too (after the others, as they came).
            if let late = try? await session.cancelConsumer(tag: tag) { held += late }
            consuming = false
        }
        for f in held { try? await session.requeue(f.deliveryTag) }
        // The broker applies requeues asynchronously: wait (briefly) until they are back, so
        // that when the command returns the queue is as it was for the next reader.
        let requeued = held.count
        held.removeAll()
        // (About 5,000 requeues a second here: a 99,000-letter read takes ~20 s to return.)
        let deadline = ContinuousClock.now + .seconds(3) + .milliseconds(requeued / 2)
        while requeued > 0, ContinuousClock.now < deadline {
            guard let n = try? await session.inspect(queue: dlq).messages, n < requeued else { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        await session.close()
    }

    // MARK: Replay

    /// Headers that describe the failed attempts; a replay starts a fresh retry budget.
    static let failureHeaders: Set<String> = [
        PayfleetHeaders.error, PayfleetHeaders.attempts, PayfleetHeaders.firstFailedAt, PayfleetHeaders.worker,
        "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
        "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
    ]
    public static let replaysHeader = "x-payfleet-replays"
    public static let replayedAtHeader = "x-payfleet-replayed-at"
    public static let previousErrorHeader = "x-payfleet-previous-error"
    public static let replayRunHeader = "x-payfleet-replay-run"

    /// Where a dead letter goes back to: the worker's queue, or the partition queue it came from
    /// (per `x-death`), else the partition exchange with the partition key header.
    public func outgoing(for letter: DeadLetter, body: [UInt8]? = nil, now: Date = Date()) -> AMQPOutgoing {
        DLQAccess.outgoing(for: letter, topology: worker.topology, runID: runID, body: body, now: now)
    }

    public static func outgoing(
        for letter: DeadLetter, topology topo: WorkerTopology, runID: String, body: [UInt8]? = nil, now: Date = Date()
    ) -> AMQPOutgoing {
        var m = letter.message
        if let body { m.body = body }
        var headers = m.headers.filter { !DLQAccess.failureHeaders.contains($0.key) }
        headers[DLQAccess.replaysHeader] = .int((m.headers[DLQAccess.replaysHeader]?.intValue ?? 0) + 1)
        headers[DLQAccess.replayedAtHeader] = .string(RFC3339.format(now))
        headers[DLQAccess.previousErrorHeader] = .string(letter.error)
        headers[DLQAccess.replayRunHeader] = .string(runID)
        m.headers = headers
        m.persistent = true
        if let p = letter.sourcePartition(topo) {
            return AMQPOutgoing(exchange: "", routingKey: topo.queue(partition: p), message: m, mandatory: true)
        }
        let header = topo.partitionKey.header
        if m.headers[header] == nil {
            m.headers[header] = .string(DLQAccess.partitionKey(m.body, topo.partitionKey))
        }
        return AMQPOutgoing(exchange: topo.partitionExchange, routingKey: "", message: m, mandatory: true)
    }

    /// The partition key of an event body: merchant id, or customer id (then payment id, then
    /// merchant id) as `PaymentEvent.customerKey` does.
    static func partitionKey(_ body: [UInt8], _ kind: WorkerTopology.PartitionKey) -> String {
        let o = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        let merchant = o["merchant_id"] as? String ?? ""
        switch kind {
        case .merchant: return merchant
        case .customer:
            return ((o["customer"] as? [String: Any])?["id"] as? String)
                ?? ((o["payment"] as? [String: Any])?["id"] as? String) ?? merchant
        }
    }

    public struct ReplayResult: Sendable {
        public var selected: [String] = []
        public var replayed: [String] = []
        public var failed: [(id: String, error: String)] = []
        public var read = 0
        /// Every letter read and left in the DLQ (not selected, dry run, not confirmed, or back
        /// from this very run): with `replayed`, the whole queue as read, for the index.
        public var remaining: [DeadLetter] = []
        /// False when the replay stopped because it had done enough (`enough`): the letters
        /// after the last one read were not looked at.
        public var readWholeQueue = true
    }

    /// Republishes every selected message with confirm, then acks its DLQ copy — per batch,
    /// recording each batch in the audit log between the confirm and the acks. A crash at any
    /// point leaves each message in the DLQ, in the worker's queue, or (between confirm and
    /// ack) in both; never in neither. Once `enough()` answers true (asked after each letter is
    /// selected or passed over), the batch in hand is finished and nothing more is read.
    public func replay(
        where select: (DeadLetter) -> Bool, dryRun: Bool, batchSize: Int, rate: Double?, audit: AuditLog?,
        enough: () -> Bool = { false }, progress: (ReplayResult) -> Void = { _ in }
    ) async throws -> ReplayResult {
        var result = ReplayResult()
        var publisher: AMQPPublisher?
        defer { publisher?.close() }
        if !dryRun {
            let p = AMQPPublisher(configuration: amqp, name: "dlq-replay", logger: Logger(label: "payfleet.cli"))
            publisher = p
            guard await p.waitUntilConnected(timeout: .seconds(15)) else {
                throw CLIFailure("cannot open a publishing connection to \(amqp): \(p.lastError ?? "timeout")")
            }
        }
        let started = ContinuousClock.now
        var done = false
        while !done {
            var batch: [(AMQPFetched, DeadLetter)] = []
            while batch.count < batchSize {
                guard let f = try await next() else { done = true; break }
                result.read += 1
                let letter = DeadLetter(f.message)
                if letter.message.headers[DLQAccess.replayRunHeader]?.stringValue == runID {
                    hold(f)  // replayed by this run and failed again: not in a loop
                    result.remaining.append(letter)
                } else if select(letter) {
                    result.selected.append(letter.id)
                    if dryRun { hold(f); result.remaining.append(letter) } else { batch.append((f, letter)) }
                } else {
                    hold(f)
                    result.remaining.append(letter)
                }
                if enough() {
                    done = true
                    result.readWholeQueue = false
                    break
                }
            }
            guard let publisher, !batch.isEmpty else { continue }
            let outcomes = await publisher.publish(batch: batch.map { outgoing(for: $0.1) })
            var confirmed: [(AMQPFetched, DeadLetter)] = []
            for (k, r) in outcomes.enumerated() {
                switch r {
                case .success: confirmed.append(batch[k])
                case .failure(let e):
                    // Not confirmed: it stays in the DLQ (requeued at the end), and may also
                    // have reached the queue — the worker dedupes.
                    hold(batch[k].0)
                    result.remaining.append(batch[k].1)
                    result.failed.append((batch[k].1.id, e.description))
                }
            }
            if !confirmed.isEmpty {
                try audit?.record(action: "dlq.replay", worker: worker.worker, outcome: "republished",
                                  ids: confirmed.map { $0.1.id })
                for (f, letter) in confirmed {
                    try await ack(f)
                    result.replayed.append(letter.id)
                }
            }
            progress(result)
            if let rate, rate > 0 {
                // Pace the replay so a recovering downstream is not flooded.
                let due = started + .milliseconds(Int(Double(result.replayed.count) / rate * 1000))
                if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
            }
        }
        return result
    }
}
