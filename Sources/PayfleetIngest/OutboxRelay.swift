import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker
import ServiceLifecycle

/// Publishes outbox rows in order of acceptance to `payfleet.events` with confirms and
/// `mandatory`, and marks a row sent only after its confirm. A failed publish (broker down,
/// nack, unroutable) leaves the row pending and is retried with backoff — never dropped.
public final class OutboxRelay: Service, Sendable {
    let outbox: Outbox
    let publisher: AMQPPublisher
    let batchSize: Int
    let logger: Logger
    let metrics: IngestMetrics

    public init(outbox: Outbox, amqp: AMQPConfiguration, batchSize: Int, metrics: IngestMetrics, logger: Logger) {
        self.outbox = outbox
        self.batchSize = batchSize
        self.logger = logger
        self.metrics = metrics
        publisher = AMQPPublisher(
            configuration: amqp, name: "ingest-relay", maxBatch: batchSize, logger: logger,
            onConnect: { d in try d.exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic")) })
    }

    public var brokerConnected: Bool { publisher.isConnected }

    public func run() async throws {
        var failures = 0
        var lastCount = ContinuousClock.now - .seconds(10)
        defer { publisher.close() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let rows: [Outbox.Row]
            do { rows = try await outbox.pending(limit: batchSize) } catch {
                logger.error("relay cannot read the outbox", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            // The gauge is refreshed at most once a second: count(*) shares the store's thread with commits.
            if ContinuousClock.now - lastCount > .seconds(1), let count = try? await outbox.pendingCount() {
                metrics.outboxPending.set(Double(count))
                lastCount = ContinuousClock.now
            }
            if rows.isEmpty {
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            let batch = rows.map { r in
                var headers: [String: AMQPFieldValue] = [
                    PayfleetHeaders.schema: .string(PaymentEvent.schemaV1),
                    PayfleetHeaders.merchant: .string(r.merchant),
                ]
                if let c = r.customer { headers[PayfleetHeaders.customer] = .string(c) }
                for (k, v) in Topology.partitionHeaders(customerKey: r.customerKey, merchantID: r.merchant) {
                    headers[k] = .string(v)
                }
                if let t = r.traceparent { headers[PayfleetHeaders.traceparent] = .string(t) }
                return AMQPOutgoing(
                    exchange: Topology.eventsExchange, routingKey: r.type,
                    message: AMQPMessage(
                        body: r.body, messageID: r.id, headers: headers, persistent: true,
                        timestamp: UInt64(Date().timeIntervalSince1970), type: r.type, appID: "ingest"),
                    mandatory: true)
            }
            let results = await publisher.publish(batch: batch)
            var sent: [Int64] = []
            var firstError: AMQPError?
            for (row, result) in zip(rows, results) {
                switch result {
                case .success: sent.append(row.seq)
                case .failure(let e): if firstError == nil { firstError = e }
                }
            }
            do { try await outbox.markSent(sent) } catch {
                // Published but not marked: they will be published again; consumers dedupe by id.
                logger.error("relay cannot mark rows sent", metadata: ["error": "\(error)"])
            }
            metrics.published.increment(by: Int64(sent.count))
            if let e = firstError {
                failures += 1
                metrics.publishFailures.increment(by: Int64(rows.count - sent.count))
                let delay = min(5_000, 100 * (1 << min(failures, 6)))
                if failures == 1 || failures % 50 == 0 {
                    logger.warning("relay publish failed; retrying", metadata: [
                        "amqp.error": "\(e)", "ingest.unsent": "\(rows.count - sent.count)", "retry_in_ms": "\(delay)",
                    ])
                }
                try? await Task.sleep(for: .milliseconds(delay))
            } else {
                failures = 0
            }
        }
    }
}
