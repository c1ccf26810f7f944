import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTelemetry

/// One effect of a batch (by its position in the batch's effects): its call returned, or its
/// outcome was recorded (true) or could not be (false).
enum EffectStep: Sendable {
    case performed(Int, HandlerError?)
    case recorded(Int, HandlerError?, Bool)
}

/// Step 2 of a batch: the external effects, after the commit, with bounded concurrency; each
/// outcome recorded through the `BatchApplier` as soon as its effect returns.
extension WorkerRuntime {
    func performEffects(_ items: inout [Item]) async {
        let work: [(Int, Handler.Effect, PaymentEvent, Int, Bool)] = items.indices.compactMap { i in
            if case .effect(let e, let attempts, let unknown) = items[i].outcome, let ev = items[i].event {
                return (i, e, ev, attempts, unknown)
            }
            return nil
        }
        guard !work.isEmpty else { return }
        let applier = self.applier
        let limit = configuration.effectConcurrency ?? handler.localEffectConcurrency ?? 8
        // With tracing on: each effect's span is a child of its delivery's `process` span.
        let parents: [TraceSpan?]? = PayfleetTracing.isEnabled ? work.map { items[$0.0].span } : nil
        for w in work where w.4 { metrics.effectsOutcomeUnknown.increment() }
        // Each outcome is recorded as soon as its effect returns, not at the end of the batch: a
        // crash mid-batch then leaves only the calls actually in flight with an unknown outcome
        // (an SMTP batch of 200 takes seconds; all of it would otherwise be "unknown").
        // `limit` bounds the calls in flight, not the outcomes waiting for their commit: a slot
        // frees when the call returns, so the outcomes of fast effects pile up behind the
        // running commit and share the next one (one fsync for many, not one per `limit`).
        // By position in `work`.
        var results: [Int: (err: HandlerError?, recorded: Bool)] = [:]
        await withTaskGroup(of: EffectStep.self) { group in
            var next = 0
            func perform() {
                let j = next
                let (_, effect, event, attempts, unknown) = work[j]
                next += 1
                let span = parents?[j]?.child("effect")
                span?.set("payfleet.attempt", attempts + 1)
                group.addTask {
                    let err = await applier.perform(effect, event: event, attempts: attempts, outcomeUnknown: unknown)
                    span?.end(error: err?.errorClass)
                    return .performed(j, err)
                }
            }
            while next < min(limit, work.count) { perform() }
            for await step in group {
                switch step {
                case .performed(let j, let err):
                    let (_, effect, event, _, _) = work[j]
                    group.addTask { [self] in .recorded(j, err, await recordOutcome(effect, event: event, error: err)) }
                    if next < work.count { perform() }
                case .recorded(let j, let err, let ok):
                    results[j] = (err, ok)
                }
            }
        }
        for (j, (i, _, _, _, _)) in work.enumerated() {
            guard let r = results[j], r.recorded else {
                // The outcome could not be recorded: the journal stays at 'intent' and the delivery
                // is requeued, so redelivery sees an unknown outcome rather than repeating blindly.
                items[i].ack = false
                continue
            }
            if let err = r.err {
                metrics.effectsFailed.increment()
                items[i].outcome = .failed(err)
            } else {
                metrics.effectsPerformed.increment()
            }
        }
    }

    /// Writes one effect's outcome to the journal (and the handler's `completed`); false when the
    /// store refused.
    func recordOutcome(_ effect: Handler.Effect, event: PaymentEvent, error err: HandlerError?) async -> Bool {
        var storeAttempts = 0
        while true {
        do {
            try await applier.record(effect, event: event, error: err)
            if storeAttempts > 0 {
                storeFailure.withLock { $0 = nil }
                metrics.storeWritable.set(Double(1))
            }
            return true
        } catch let e as SQLiteError where e.isStorageFailure && !stopped.current {
            // The effect happened; its outcome waits for a writable store rather than being
            // requeued (a redelivery would count towards the delivery limit).
            storeAttempts += 1
            storeFailure.withLock { $0 = e.description }
            metrics.storeWritable.set(Double(0))
            if storeAttempts == 1 {
                logger.critical("state file refuses writes; holding an effect's outcome", metadata: [
                    LogKey.storeError: "\(e)", LogKey.eventID: "\(event.id)",
                ])
            }
            batchStartedAt.withLock { $0 = .now }
            try? await Task.sleep(for: .milliseconds(min(10_000, 500 << min(storeAttempts, 5))))
        } catch {
            logger.error("recording an effect outcome failed", metadata: [LogKey.storeError: "\(error)", LogKey.eventID: "\(event.id)"])
            return false
        }
        }
    }
}
