import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// Steps 3 and 4 of a batch: failed events to a retry tier or the dead-letter queue (with
/// confirms), then the acks.
extension WorkerRuntime {
    func republishFailures(_ items: inout [Item]) async {
        let topo = configuration.topology
        var indices: [Int] = []
        var outgoing: [AMQPOutgoing] = []
        var retried = 0
        var dead = 0
        var summaries: [Int: DeadLetterIndex.Summary] = [:]
        for i in items.indices {
            guard case .failed(let err) = items[i].outcome, items[i].ack else { continue }
            let d = items[i].delivery
            var headers = d.message.headers
            let attempts = Int(headers[PayfleetHeaders.attempts]?.intValue ?? 0) + 1
            headers[PayfleetHeaders.attempts] = .int(Int64(attempts))
            headers[PayfleetHeaders.error] = .string(err.description)
            headers[PayfleetHeaders.worker] = .string(configuration.worker)
            if headers[PayfleetHeaders.firstFailedAt] == nil {
                headers[PayfleetHeaders.firstFailedAt] = .string(RFC3339.format(Date()))
            }
            let target: String
            if err.kind == .transient && attempts <= topo.retryDelaysMS.count {
                target = topo.retryQueue(delayMS: topo.retryDelaysMS[attempts - 1], partition: configuration.partition)
                retried += 1
            } else {
                target = topo.dlq
                dead += 1
            }
            var m = d.message
            m.headers = headers
            m.persistent = true
            if target == topo.dlq {
                summaries[outgoing.count] = DeadLetterIndex.Summary(message: m, worker: configuration.worker, queue: target)
            }
            outgoing.append(AMQPOutgoing(exchange: "", routingKey: target, message: m, mandatory: true))
            indices.append(i)
            let eventID = items[i].event?.id ?? d.message.messageID ?? "?"
            logger.warning(
                target == topo.dlq ? "event dead-lettered" : "event scheduled for retry",
                metadata: [
                    LogKey.eventID: "\(eventID)", LogKey.failure: "\(err.description)",
                    LogKey.attempts: "\(attempts)", LogKey.amqpQueue: "\(target)",
                ])
            lastErrorText.withLock { $0 = err.description }
        }
        guard !outgoing.isEmpty else { return }
        // The publisher may still be connecting (the consumer came up first, or the broker
        // connection is being re-made): give it a moment rather than send the batch round again.
        if !publisher.isConnected { _ = await publisher.waitUntilConnected(timeout: .seconds(5)) }
        let results = await publisher.publish(batch: outgoing)
        var indexed: [DeadLetterIndex.Summary] = []
        for (k, r) in results.enumerated() {
            if case .success = r, let s = summaries[k] { indexed.append(s) }
            if case .failure(let e) = r {
                // Not safely republished: leave it on the main queue (requeue), never drop it.
                items[indices[k]].ack = false
                logger.error("republish failed; requeueing", metadata: [LogKey.amqpError: "\(e)"])
                metrics.requeued.increment()
            }
        }
        // The index of what is now confirmed in the DLQ, committed before the acks. The queue
        // stays the source of truth: if this write fails the letters are still dead-lettered
        // (and acked), and the CLI sees the index disagree with the queue depth and reads the queue.
        if !indexed.isEmpty {
            let rows = indexed
            do { try await store.write { db in try DeadLetterIndex.record(rows, db: db) } } catch {
                logger.error("dead-letter index not written", metadata: ["store.error": "\(error)", "payfleet.dead_letters": "\(rows.count)"])
            }
        }
        metrics.retried.increment(by: Int64(retried))
        metrics.deadLettered.increment(by: Int64(dead))
    }

    func ackAll(_ items: [Item]) {
        guard let last = items.last else { return }
        let gen = last.delivery.generation
        if nextExpectedTag.generation != gen { nextExpectedTag = (gen, 1) }
        let contiguous = items.enumerated().allSatisfy { i, item in
            item.delivery.generation == gen && item.delivery.deliveryTag == nextExpectedTag.tag + UInt64(i)
        }
        if contiguous && items.allSatisfy(\.ack) {
            consumer.ack(last.delivery, multiple: true)
        } else {
            for item in items {
                if item.ack { consumer.ack(item.delivery) } else { consumer.nack(item.delivery, requeue: true) }
            }
        }
        if last.delivery.generation == gen { nextExpectedTag = (gen, last.delivery.deliveryTag + 1) }
    }
}
