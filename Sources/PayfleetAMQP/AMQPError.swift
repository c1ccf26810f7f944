/// A failure talking to RabbitMQ. `code` is stable for `switch`; the context names what failed
/// (host, queue, the broker's reply code and text).
public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public var description: String { raw }
        /// TCP/TLS connect or login failed.
        public static let connectionFailed = Code(raw: "connection_failed")
        /// The connection dropped or a heartbeat timed out.
        public static let connectionLost = Code(raw: "connection_lost")
        /// Not connected right now (reconnecting); the publish was not sent.
        public static let notConnected = Code(raw: "not_connected")
        /// The broker closed the channel or connection with a reply code.
        public static let serverClosed = Code(raw: "server_closed")
        /// The broker refused a published message (basic.nack).
        public static let nacked = Code(raw: "nacked")
        /// The published message matched no queue (basic.return with mandatory).
        public static let unroutable = Code(raw: "unroutable")
        /// No confirm within the deadline.
        public static let timeout = Code(raw: "timeout")
        /// A bad URL or option.
        public static let invalidConfiguration = Code(raw: "invalid_configuration")
        /// A declaration (queue, exchange, binding) failed.
        public static let declarationFailed = Code(raw: "declaration_failed")
        /// The client was closed.
        public static let closed = Code(raw: "closed")
    }

    public let code: Code
    public let message: String
    /// The broker's reply code (e.g. 406 PRECONDITION_FAILED), when it sent one.
    public let replyCode: Int?

    public init(_ code: Code, _ message: String, replyCode: Int? = nil) {
        self.code = code
        self.message = message
        self.replyCode = replyCode
    }

    public var description: String {
        "AMQP \(code): \(message)" + (replyCode.map { " (reply code \($0))" } ?? "")
    }
}
