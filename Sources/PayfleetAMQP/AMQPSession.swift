import Foundation
import PayfleetCore

/// A short-lived connection for operator commands and tests: inspect queues, fetch messages
/// with basic.get, ack or requeue them, publish with confirms. Every call runs on the session's
/// own thread; one session is one connection and one channel.
public final class AMQPSession: @unchecked Sendable {
    private let thread: BlockingThread
    private let connection: AMQPConnection
    private var nextTag: UInt64 = 1
    private var confirming = false

    public static func connect(_ config: AMQPConfiguration) async throws -> AMQPSession {
        let thread = BlockingThread(name: "amqp-session")
        let box: ConnectionBox
        do {
            box = try await thread.run { () throws -> ConnectionBox in ConnectionBox(try AMQPConnection.open(config)) }
        } catch {
            thread.shutdown()
            throw error
        }
        return AMQPSession(thread: thread, connection: box.value)
    }

    private init(thread: BlockingThread, connection: AMQPConnection) {
        self.thread = thread
        self.connection = connection
    }

    deinit {
        let c = ConnectionBox(connection)
        thread.submit { c.value.close() }
        thread.shutdown()
    }

    /// Runs declarations (or anything else a declarer can do) on the session's thread.
    public func declare<T: Sendable>(_ body: @escaping @Sendable (AMQPDeclarer) throws -> T) async throws -> T {
        let c = ConnectionBox(connection)
        return try await thread.run { try body(AMQPDeclarer(connection: c.value)) }
    }

    /// Message count and consumer count of an existing queue.
    public func inspect(queue: String) async throws -> (messages: Int, consumers: Int) {
        try await declare { try $0.inspect(queue: queue) }
    }

    /// basic.get without auto-ack: the message stays unacked on this session until `ack`,
    /// `requeue` or the session closes (then it returns to the queue, in its place).
    public func get(queue: String) async throws -> AMQPFetched? {
        let c = ConnectionBox(connection)
        return try await thread.run {
            guard let (m, tag, redelivered, remaining) = try c.value.get(queue: queue) else { return nil }
            return AMQPFetched(message: m, deliveryTag: tag, redelivered: redelivered, remaining: remaining)
        }
    }

    /// Starts a consumer on `queue` (manual ack; `prefetch` 0 = unlimited). Deliveries are read
    /// with `nextDelivery`; unacked ones behave as with `get`. One consumer per session.
    public func consume(queue: String, prefetch: Int, tag: String) async throws {
        let c = ConnectionBox(connection)
        try await thread.run {
            try c.value.qos(prefetch: prefetch)
            try c.value.consume(queue: queue, tag: tag)
        }
    }

    /// The next delivery of the session's consumer within `timeoutMS`, or nil.
    public func nextDelivery(timeoutMS: Int) async throws -> AMQPFetched? {
        let c = ConnectionBox(connection)
        return try await thread.run { () throws -> AMQPFetched? in
            let deadline = Date().addingTimeInterval(Double(timeoutMS) / 1000)
            while true {
                let left = max(0, Int(deadline.timeIntervalSinceNow * 1000))
                switch try c.value.consumeNext(timeoutMS: left) {
                case .delivery(let m, let tag, let redelivered, _, _):
                    return AMQPFetched(message: m, deliveryTag: tag, redelivered: redelivered, remaining: -1)
                case .timeout:
                    return nil
                case .frame(.cancelled):
                    throw AMQPError(.serverClosed, "the broker cancelled the consumer (queue deleted?)")
                case .frame:
                    if left == 0 { return nil }
                }
            }
        }
    }

    /// Cancels the consumer and answers the deliveries that were already on their way (they
    /// are unacked like the others), in order, once the broker confirmed the cancel.
    public func cancelConsumer(tag: String, timeoutMS: Int = 10_000) async throws -> [AMQPFetched] {
        let c = ConnectionBox(connection)
        return try await thread.run { () throws -> [AMQPFetched] in
            try c.value.cancel(tag: tag)
            var late: [AMQPFetched] = []
            let deadline = Date().addingTimeInterval(Double(timeoutMS) / 1000)
            while Date() < deadline {
                switch try c.value.consumeNext(timeoutMS: 200) {
                case .delivery(let m, let tag, let redelivered, _, _):
                    late.append(AMQPFetched(message: m, deliveryTag: tag, redelivered: redelivered, remaining: -1))
                case .frame(.cancelOK):
                    return late
                default:
                    continue
                }
            }
            throw AMQPError(.timeout, "no basic.cancel-ok within \(timeoutMS) ms")
        }
    }

    public func ack(_ tag: UInt64, multiple: Bool = false) async throws {
        let c = ConnectionBox(connection)
        try await thread.run { try c.value.ack(tag, multiple: multiple) }
    }

    public func requeue(_ tag: UInt64) async throws {
        let c = ConnectionBox(connection)
        try await thread.run { try c.value.nack(tag, requeue: true) }
    }

    /// Publishes with confirm; returns once the broker acked, throws on nack/return/loss.
    public func publish(_ outgoing: AMQPOutgoing, timeoutMS: Int = 30_000) async throws {
        let c = ConnectionBox(connection)
        try await thread.run { [self] in
            if !confirming {
                try c.value.confirmSelect()
                confirming = true
            }
            try c.value.publish(outgoing)
            let tag = nextTag
            nextTag += 1
            var returned = false
            let deadline = Date().addingTimeInterval(Double(timeoutMS) / 1000)
            while Date() < deadline {
                switch try c.value.waitFrame(timeoutMS: 500) {
                case .ack(let t, _) where t >= tag:
                    if returned {
                        throw AMQPError(.unroutable, "message to '\(outgoing.exchange)' '\(outgoing.routingKey)' matched no queue", replyCode: 312)
                    }
                    return
                case .nack(let t, _) where t >= tag:
                    throw AMQPError(.nacked, "broker refused the message for '\(outgoing.routingKey)'")
                case .returned:
                    returned = true
                default:
                    continue
                }
            }
            throw AMQPError(.timeout, "no publisher confirm within \(timeoutMS) ms")
        }
    }

    public func close() async {
        let c = ConnectionBox(connection)
        _ = try? await thread.run { c.value.close() }
    }
}

/// A message fetched with basic.get.
public struct AMQPFetched: Sendable {
    public let message: AMQPMessage
    public let deliveryTag: UInt64
    public let redelivered: Bool
    /// Messages left in the queue after this one.
    public let remaining: Int
}

struct ConnectionBox: @unchecked Sendable {
    let value: AMQPConnection
    init(_ value: AMQPConnection) { self.value = value }
}
