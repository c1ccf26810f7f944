import Foundation

/// A message to publish or one that was received: body plus the basic properties Payfleet uses.
public struct AMQPMessage: Sendable, Equatable {
    public var body: [UInt8]
    public var messageID: String?
    public var contentType: String?
    public var headers: [String: AMQPFieldValue]
    /// Persistent (delivery mode 2) unless told otherwise: every Payfleet event must survive a broker restart.
    public var persistent: Bool
    public var timestamp: UInt64?
    public var type: String?
    public var correlationID: String?
    public var appID: String?

    public init(
        body: [UInt8], messageID: String? = nil, contentType: String? = "application/json",
        headers: [String: AMQPFieldValue] = [:], persistent: Bool = true, timestamp: UInt64? = nil,
        type: String? = nil, correlationID: String? = nil, appID: String? = nil
    ) {
        self.body = body
        self.messageID = messageID
        self.contentType = contentType
        self.headers = headers
        self.persistent = persistent
        self.timestamp = timestamp
        self.type = type
        self.correlationID = correlationID
        self.appID = appID
    }
}

/// Where a message goes: exchange (empty = default exchange) and routing key.
public struct AMQPOutgoing: Sendable {
    public var exchange: String
    public var routingKey: String
    public var message: AMQPMessage
    /// Unroutable messages come back as an error instead of being dropped.
    public var mandatory: Bool

    public init(exchange: String, routingKey: String, message: AMQPMessage, mandatory: Bool = true) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.message = message
        self.mandatory = mandatory
    }
}

/// A message delivered to a consumer. Ack it through the consumer that produced it.
public struct AMQPDelivery: Sendable {
    public let message: AMQPMessage
    public let deliveryTag: UInt64
    public let redelivered: Bool
    public let exchange: String
    public let routingKey: String
    /// Which connection delivered it: acks for an older connection are void (the broker has
    /// already requeued those messages).
    public let generation: Int
    public let queue: String

    /// `x-delivery-count` from a quorum queue (absent on the first delivery).
    public var deliveryCount: Int { Int(message.headers["x-delivery-count"]?.intValue ?? 0) }
}
