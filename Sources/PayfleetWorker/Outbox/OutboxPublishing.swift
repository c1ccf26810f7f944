import Foundation
import PayfleetAMQP
import PayfleetCore

/// One event row of an outbox (ingest's `outbox`, settlement's `settlement_outbox`), as a relay
/// publishes it to `payfleet.events`.
public struct OutboxEvent: Sendable {
    public let id: String
    public let type: String
    public let merchant: String
    public let customer: String?
    /// The customer-partitioned workers' key (`PaymentEvent.customerKey`); the merchant for an
    /// event without a customer (a day close).
    public let customerKey: String
    public let traceparent: String?
    public let body: [UInt8]

    public init(
        id: String, type: String, merchant: String, customer: String? = nil, customerKey: String? = nil,
        traceparent: String? = nil, body: [UInt8]
    ) {
        self.id = id
        self.type = type
        self.merchant = merchant
        self.customer = customer
        self.customerKey = customerKey ?? customer ?? merchant
        self.traceparent = traceparent
        self.body = body
    }
}

/// How every outbox is published: one header set, persistent, with confirms and `mandatory`
/// (an unroutable event is a failure, never dropped), and the results split into what the
/// broker confirmed, what it refused (the row's own fault: it waits for its own retry), and a
/// connection failure (every unconfirmed row stays pending).
public enum OutboxPublishing {
    /// The result of publishing a batch of rows, by index into that batch.
    public struct Published: Sendable {
        public var sent: [Int] = []
        public var refused: [(index: Int, error: AMQPError)] = []
        public var connectionError: AMQPError?
    }

    /// The message of one outbox row: schema, merchant, customer, both partition keys, trace.
    public static func outgoing(_ e: OutboxEvent, appID: String, now: Date = Date()) -> AMQPOutgoing {
        var headers: [String: AMQPFieldValue] = [
            PayfleetHeaders.schema: .string(PaymentEvent.schemaV1),
            PayfleetHeaders.merchant: .string(e.merchant),
        ]
        if let c = e.customer { headers[PayfleetHeaders.customer] = .string(c) }
        for (k, v) in Topology.partitionHeaders(customerKey: e.customerKey, merchantID: e.merchant) {
            headers[k] = .string(v)
        }
        if let t = e.traceparent { headers[PayfleetHeaders.traceparent] = .string(t) }
        return AMQPOutgoing(
            exchange: Topology.eventsExchange, routingKey: e.type,
            message: AMQPMessage(
                body: e.body, messageID: e.id, headers: headers, persistent: true,
                timestamp: UInt64(now.timeIntervalSince1970), type: e.type, appID: appID),
            mandatory: true)
    }

    /// A failure that belongs to the message, not to the connection.
    public static func refusesRow(_ e: AMQPError) -> Bool { e.code == .unroutable || e.code == .nacked }

    /// Publishes `rows` in one confirmed batch.
    public static func publish(_ rows: [OutboxEvent], via publisher: AMQPPublisher, appID: String) async -> Published {
        let results = await publisher.publish(batch: rows.map { outgoing($0, appID: appID) })
        var out = Published()
        for (i, result) in results.enumerated() {
            switch result {
            case .success: out.sent.append(i)
            case .failure(let e) where refusesRow(e): out.refused.append((i, e))
            case .failure(let e): if out.connectionError == nil { out.connectionError = e }
            }
        }
        return out
    }
}
