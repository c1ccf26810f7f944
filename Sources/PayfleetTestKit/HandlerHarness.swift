import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus

/// Runs a handler through the runtime's real batch step (`BatchApplier`: decode, `processed`
/// dedupe, one transaction per batch, one savepoint per event, effect intent and outcome) on a
/// store, without a broker — so a handler's tests test what production runs.
public final class HandlerHarness<Handler: WorkerHandler>: @unchecked Sendable {
    public typealias Outcome = BatchApplier<Handler>.Outcome

    public let handler: Handler
    public let store: Store
    public let applier: BatchApplier<Handler>
    /// The state file.
    public var path: String { store.path }
    /// The temporary directory this harness made (removed with it); nil for a store passed in.
    public let dir: String?

    /// A new store `name`.sqlite in a temporary directory, migrated as the runtime migrates a
    /// worker's store, and the handler attached to it as at start-up.
    public convenience init(
        handler: Handler, name: String = "worker", durability: SQLiteConnection.Durability = .normal
    ) async throws {
        let dir = TestEnvironment.makeTempDir("\(name)-harness")
        let store = try await Store(
            path: dir + "/\(name).sqlite", migrations: Self.migrations(handler), durability: durability)
        try await self.init(handler: handler, store: store, dir: dir)
    }

    /// An existing store (opened with `HandlerHarness.migrations(handler)`).
    public convenience init(handler: Handler, store: Store) async throws {
        try await self.init(handler: handler, store: store, dir: nil)
    }

    private init(handler: Handler, store: Store, dir: String?) async throws {
        self.handler = handler
        self.store = store
        self.dir = dir
        applier = BatchApplier(handler: handler, store: store)
        try await handler.attach(store: store, registry: PrometheusCollectorRegistry())
    }

    deinit { if let dir { try? FileManager.default.removeItem(atPath: dir) } }

    /// What the runtime migrates a worker's store with: its own tables, then the handler's.
    public static func migrations(_ handler: Handler) -> [Migration] {
        BatchApplier<Handler>.migrations + handler.migrations
    }

    /// Feeds `events` in batches of `batch`, each batch one transaction as the runtime commits a
    /// consumed batch; one outcome per event, in order. Each event goes as the runtime gets it:
    /// encoded to a message body and decoded by `BatchApplier.decode` (so an invalid event is
    /// refused where production refuses it, before any handler). With `performEffects`, each
    /// batch's effects are then performed one at a time and their outcomes recorded (a failed
    /// effect's outcome becomes `.failed`). Throws only what the store threw for a whole batch.
    @discardableResult
    public func run(_ events: [PaymentEvent], batch: Int = 200, performEffects: Bool = false) async throws -> [Outcome] {
        var out: [Outcome] = []
        var i = 0
        while i < events.count {
            let decoded = events[i..<min(i + batch, events.count)].map { BatchApplier<Handler>.decode(Array(EventCodec.encode($0))) }
            let chunk = decoded.map { try? $0.get() }
            var outcomes = try await applier.apply(chunk)
            for (k, d) in decoded.enumerated() { if case .failure(let e) = d { outcomes[k] = .failed(e) } }
            if performEffects {
                for (k, o) in outcomes.enumerated() {
                    guard case .effect(let effect, let attempts, let unknown) = o, let event = chunk[k] else { continue }
                    let err = await applier.perform(effect, event: event, attempts: attempts, outcomeUnknown: unknown)
                    try await applier.record(effect, event: event, error: err)
                    if let err { outcomes[k] = .failed(err) }
                }
            }
            out += outcomes
            i += batch
        }
        return out
    }

    /// `run`, then the first event's failure thrown (the failing event alone undone, the rest of
    /// its batch committed, as in production): for tests that expect a handler to refuse.
    @discardableResult
    public func apply(_ events: [PaymentEvent], batch: Int = 200, performEffects: Bool = false) async throws -> [Outcome] {
        let outcomes = try await run(events, batch: batch, performEffects: performEffects)
        for o in outcomes { if case .failed(let e) = o { throw e } }
        return outcomes
    }
}

extension BatchApplier.Outcome {
    /// True for an event applied now (with or without an effect), not one seen before.
    public var isNew: Bool {
        switch self {
        case .applied: return true
        case .effect(_, let attempts, let unknown): return attempts == 0 && !unknown
        case .duplicate, .failed: return false
        }
    }

    /// The effect to perform, if any.
    public var effect: Handler.Effect? {
        if case .effect(let e, _, _) = self { return e }
        return nil
    }

    /// The failure, if any.
    public var failure: HandlerError? {
        if case .failed(let e) = self { return e }
        return nil
    }
}
