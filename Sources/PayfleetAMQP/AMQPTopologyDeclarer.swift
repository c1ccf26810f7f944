import PayfleetCore

/// Declares exchanges, queues and bindings on a connection's thread; handed to the `onConnect`
/// callbacks of publishers and consumers so every (re)connect re-declares the topology.
public struct AMQPDeclarer {
    let connection: AMQPConnection

    public func exchange(_ spec: ExchangeSpec) throws(AMQPError) {
        try connection.declareExchange(spec.name, type: spec.type, arguments: spec.arguments.mapValues(AMQPFieldValue.init))
    }

    public func exchange(_ name: String, type: String) throws(AMQPError) {
        try connection.declareExchange(name, type: type)
    }

    @discardableResult
    public func queue(_ spec: QueueSpec) throws(AMQPError) -> (messages: Int, consumers: Int) {
        try connection.declareQueue(spec.name, arguments: spec.arguments.mapValues(AMQPFieldValue.init))
    }

    /// Passive declare: counts of an existing queue; throws when it does not exist.
    public func inspect(queue: String) throws(AMQPError) -> (messages: Int, consumers: Int) {
        try connection.declareQueue(queue, passive: true)
    }

    /// Declares a queue owned by this connection alone (exclusive, auto-deleted when the
    /// connection closes or dies). A second connection declaring the same name is refused with
    /// reply code 405 (RESOURCE_LOCKED), which makes it a lock that a `kill -9` cannot leak.
    public func exclusiveQueue(_ name: String) throws(AMQPError) {
        try connection.declareQueue(name, exclusive: true)
    }

    public func bind(_ spec: BindingSpec) throws(AMQPError) {
        switch spec.destinationType {
        case .queue: try connection.bindQueue(spec.destination, exchange: spec.source, routingKey: spec.routingKey)
        case .exchange:
            try connection.bindExchange(destination: spec.destination, source: spec.source, routingKey: spec.routingKey)
        }
    }

    /// `payfleet.events`: declared, or with `declareEventsExchange` off only checked (passive;
    /// a missing exchange is an error naming `payfleet topology declare`).
    public func eventsExchange() throws(AMQPError) {
        if connection.config.declareEventsExchange {
            try exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic"))
            return
        }
        do {
            try connection.declareExchange(Topology.eventsExchange, type: "topic", passive: true)
        } catch {
            throw AMQPError(error.code, "\(error.message) (the operator declares it: payfleet topology declare)", replyCode: error.replyCode)
        }
    }

    /// The events exchange plus a worker's whole topology.
    public func declare(worker: WorkerTopology) throws(AMQPError) {
        try eventsExchange()
        let d = worker.declarations
        for e in d.exchanges { try exchange(e) }
        for q in d.queues { try queue(q) }
        for b in d.bindings { try bind(b) }
    }

    public func purge(queue: String) throws(AMQPError) -> Int { try connection.purgeQueue(queue) }
    public func delete(queue: String) throws(AMQPError) { try connection.deleteQueue(queue) }
    public func delete(exchange: String) throws(AMQPError) { try connection.deleteExchange(exchange) }
}
