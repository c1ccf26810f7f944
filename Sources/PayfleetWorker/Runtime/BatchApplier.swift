import Foundation
import PayfleetCore
import PayfleetStore

/// The runtime's batch step on a `Store`, without a broker (DESIGN §5): decode → skip ids
/// already `processed` → apply each new event in its own savepoint of one transaction → journal
/// the effect's intent beside it → after the effect, record its outcome.
///
/// `WorkerRuntime` calls it for every batch it consumes; `PayfleetTestKit.HandlerHarness` calls
/// it on a temporary store, so a handler's tests run exactly the step production runs.
public struct BatchApplier<Handler: WorkerHandler>: Sendable {
    /// What happened to one event of a batch.
    public enum Outcome: Sendable {
        /// Applied now; no effect.
        case applied
        /// Already processed (earlier, or earlier in the same batch) and nothing left to do.
        case duplicate
        /// An effect to perform: journaled now (`attempts` 0), or left from an earlier delivery
        /// whose effect failed (`outcomeUnknown` false) or never recorded an outcome (true).
        case effect(Handler.Effect, attempts: Int, outcomeUnknown: Bool)
        /// Undecodable, or `apply` threw: nothing of this event was kept.
        case failed(HandlerError)
    }

    public let handler: Handler
    public let store: Store

    /// The runtime's tables beside `processed` (the effect journal); every store a handler's
    /// events are applied to needs them, before the handler's own.
    public static var migrations: [Migration] { EffectJournal.migrations + DeadLetterIndex.migrations }

    public init(handler: Handler, store: Store) {
        self.handler = handler
        self.store = store
    }

    /// Decodes one delivery's body; a body that is no event is a permanent failure.
    public static func decode(_ body: [UInt8]) -> Result<PaymentEvent, HandlerError> {
        do { return .success(try EventCodec.decode(bytes: body)) } catch { return .failure(HandlerError.classify(error)) }
    }

    /// One transaction for the batch, each event in its own savepoint; one outcome per event, in
    /// order (a nil event, one that failed to decode, gets `.applied` as a placeholder: the caller
    /// keeps its decode failure). Throws only when the transaction as a whole failed and nothing
    /// was applied — a storage failure (`SQLiteError.isStorageFailure`) is thrown, never blamed on
    /// an event.
    public func apply(_ events: [PaymentEvent?]) async throws -> [Outcome] {
        let handler = self.handler
        return try await store.write { db -> [Outcome] in
            let now = Int64(Date().timeIntervalSince1970)
            // The same event twice in one batch (a duplicate publish): the second copy is a
            // duplicate, not an effect whose outcome is unknown.
            var inBatch = Set<String>()
            return try events.map { event -> Outcome in
                guard let event else { return .applied }
                guard inBatch.insert(event.id).inserted else { return .duplicate }
                if try db.isProcessed(event.id) {
                    if let pending = try EffectJournal.pending(event.id, db: db) {
                        // A journaled effect this build cannot read fails its event alone (retry
                        // tiers, then the DLQ): it must not fail the whole batch.
                        let effect: Handler.Effect
                        do { effect = try JSONDecoder().decode(Handler.Effect.self, from: Data(pending.effect)) } catch {
                            return .failed(.permanent("UnreadableEffectJournal", "the journaled effect cannot be decoded by this build (\(type(of: error)))"))
                        }
                        return .effect(effect, attempts: pending.attempts, outcomeUnknown: pending.outcomeUnknown)
                    }
                    return .duplicate
                }
                do {
                    return try db.savepoint { () throws -> Outcome in
                        let effect = try handler.apply(event, db: db)
                        try db.markProcessed(event.id)
                        guard let effect else { return .applied }
                        let bytes = try (effect as? any JournalEncodable)?.journalJSON ?? Array(JSONEncoder().encode(effect))
                        try EffectJournal.intent(event.id, effect: bytes, now: now, db: db)
                        return .effect(effect, attempts: 0, outcomeUnknown: false)
                    }
                } catch let e as SQLiteError where e.isStorageFailure {
                    throw e  // the whole transaction waits, no event is failed for it
                } catch {
                    return .failed(HandlerError.classify(error))
                }
            }
        }
    }

    /// Performs one effect outside any transaction; the classified failure, or nil.
    public func perform(_ effect: Handler.Effect, event: PaymentEvent, attempts: Int, outcomeUnknown: Bool) async
        -> HandlerError?
    {
        do {
            try await handler.perform(effect, event: event, attempt: attempts + 1, outcomeUnknown: outcomeUnknown)
            return nil
        } catch {
            return HandlerError.classify(error)
        }
    }

    /// Records one performed effect's outcome in the journal (and, on success, the handler's
    /// `completed`), in the store's group commit: outcomes that complete while one commits
    /// share the next transaction and its fsync. Returns once it is on disk; throws what the
    /// store threw, and the caller decides whether to wait for the store or requeue.
    public func record(_ effect: Handler.Effect, event: PaymentEvent, error err: HandlerError?) async throws {
        let handler = self.handler
        try await store.groupWrite { db in
            let now = Int64(Date().timeIntervalSince1970)
            if let err {
                try EffectJournal.failed(event.id, error: err, now: now, db: db)
            } else {
                try handler.completed(effect, event: event, db: db)
                try EffectJournal.done(event.id, now: now, db: db)
            }
        }
    }
}
