import PayfleetCore
import PayfleetTelemetry

extension OutboxRelay {
    /// Publishes one batch of rows; with tracing on, each row gets a producer span
    /// `publish payfleet.events` (the child of the `traceparent` stored with the row: ingest's
    /// server span) and the message carries that span's `traceparent`, so each worker's span is
    /// its child. With tracing off: the plain publish, no span objects.
    func publishTraced(_ events: [OutboxEvent]) async -> OutboxPublishing.Published {
        guard PayfleetTracing.isEnabled else { return await OutboxPublishing.publish(events, via: publisher, appID: appID) }
        let spans = events.map { e in
            let span = PayfleetTracing.start("publish \(Topology.eventsExchange)", kind: .producer, parent: e.traceparent)
            span.set("messaging.system", "rabbitmq")
            span.set("messaging.destination.name", Topology.eventsExchange)
            span.set("messaging.message.id", e.id)
            span.set("payfleet.event_id", e.id)
            span.set("payfleet.event_type", e.type)
            return span
        }
        let traced = zip(events, spans).map { e, span in
            OutboxEvent(
                id: e.id, type: e.type, merchant: e.merchant, customer: e.customer, customerKey: e.customerKey,
                traceparent: span.traceparent ?? e.traceparent, body: e.body)
        }
        let published = await OutboxPublishing.publish(traced, via: publisher, appID: appID)
        var errors: [Int: String] = [:]
        for r in published.refused { errors[r.index] = "refused: \(r.error.code)" }
        let sent = Set(published.sent)
        for (i, span) in spans.enumerated() {
            if let e = errors[i] {
                span.end(error: e)
            } else if !sent.contains(i) {
                span.end(error: "not confirmed: connection failed")
            } else {
                span.end()
            }
        }
        return published
    }
}
