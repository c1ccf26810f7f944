import PayfleetAMQP
import PayfleetCore
import PayfleetTelemetry

/// Tracing of a batch (only when `PayfleetTracing.isEnabled`; otherwise no span is created):
/// one consumer span `process <queue>` per delivery, the child of the message's `traceparent`
/// (the relay's publish span), with an `apply` child for the batch transaction and an `effect`
/// child per external effect (`+Effects`).
extension WorkerRuntime {
    func startSpans(_ items: inout [Item]) {
        let queue = configuration.topology.queue(partition: configuration.partition)
        let name = "process \(queue)"
        for i in items.indices {
            var parent: String?
            if case .string(let t)? = items[i].delivery.message.headers[PayfleetHeaders.traceparent] { parent = t }
            let span = PayfleetTracing.start(name, kind: .consumer, parent: parent)
            span.set("messaging.system", "rabbitmq")
            span.set("messaging.destination.name", queue)
            span.set("payfleet.worker", configuration.worker)
            span.set("payfleet.partition", configuration.partition)
            if let e = items[i].event {
                span.set("payfleet.event_id", e.id)
                span.set("payfleet.event_type", e.type.rawValue)
            }
            items[i].span = span
        }
    }

    /// The `apply` children, started before the batch transaction.
    func startApplySpans(_ items: [Item]) -> [TraceSpan?] {
        items.map { item in
            item.span.map { s in
                let c = s.child("apply")
                c.set("payfleet.batch_size", items.count)
                return c
            }
        }
    }

    static func endApplySpans(_ spans: [TraceSpan?], _ items: [Item]) {
        for (span, item) in zip(spans, items) {
            guard let span else { continue }
            if case .failed(let e) = item.outcome { span.end(error: e.errorClass) } else { span.end() }
        }
    }

    /// Ends each delivery's span with its outcome (the error class only, never event data).
    func endSpans(_ items: [Item]) {
        for item in items {
            guard let span = item.span else { continue }
            switch item.outcome {
            case .applied: span.set("payfleet.outcome", "applied")
            case .duplicate: span.set("payfleet.outcome", "duplicate")
            case .effect: span.set("payfleet.outcome", "effect")
            case .failed(let e):
                span.set("payfleet.outcome", "failed")
                span.set("payfleet.error_class", e.errorClass)
            }
            if !item.ack { span.set("payfleet.requeued", 1) }
            if case .failed(let e) = item.outcome { span.end(error: e.errorClass) } else { span.end() }
        }
    }
}
