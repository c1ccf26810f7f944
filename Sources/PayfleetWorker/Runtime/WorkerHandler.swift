import Foundation
import Hummingbird
import Logging
import PayfleetCore
import PayfleetStore
import Prometheus

/// What a worker is, beyond the shared runtime: its tables, how an event changes them, and
/// (optionally) an external effect performed after the state change is committed.
///
/// The runtime calls `apply` inside the batch transaction for each new event (never for a
/// duplicate). If `apply` returns an effect, the runtime journals it (intent) in the same
/// transaction, performs it after the commit, and journals the outcome — so a crash between
/// the call and the outcome is visible on redelivery as `outcomeUnknown`, not blindly repeated.
/// An effect that writes its own effect-journal bytes (with `JSONObjectWriter`, on the store
/// thread once per event): JSON that `JSONDecoder` decodes back to an equal value, as a
/// redelivery or `payfleet trace` reads it. Other effects are written by `JSONEncoder`.
public protocol JournalEncodable {
    var journalJSON: [UInt8] { get }
}

public protocol WorkerHandler: Sendable {
    associatedtype Effect: Codable & Sendable = NoEffect

    /// The worker's own schema (namespaced ids such as `ledger.1`).
    var migrations: [Migration] { get }

    /// Changes local state for one event. Runs on the store thread inside a savepoint of the
    /// batch transaction: throwing undoes this event only.
    ///
    /// `event` is valid: the runtime decodes every delivery with `EventCodec.decode`, which
    /// validates it (DESIGN §2) and dead-letters one that is not. That is the event's one check
    /// on the workers' side of the broker, as ingest's mapping is on the providers' side; a
    /// handler does not check it again.
    func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> Effect?

    /// Performs the effect outside any transaction (HTTP call, SMTP). `outcomeUnknown` is true
    /// when an earlier attempt started and never recorded an outcome (a crash mid-call).
    func perform(_ effect: Effect, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws

    /// Records a performed effect's outcome in local state (optional).
    func completed(_ effect: Effect, event: PaymentEvent, db: SQLiteConnection) throws

    /// Called once by the runtime after the worker's store is open and before consuming (optional):
    /// a handler that journals finer-grained steps of its effect (one row per email / SMS) uses
    /// the same store from `perform`, and registers its own metrics on the worker's registry.
    func attach(store: Store, registry: PrometheusCollectorRegistry) async throws

    /// How many effects to perform at once when `effect_concurrency` is not configured: nil (8)
    /// for effects that call another system; a handler whose configured transports only write
    /// local files (sandbox connectors) answers more, so a batch's outcomes share a commit.
    var localEffectConcurrency: Int? { get }

    /// Adds the worker's own routes (read APIs) to its admin listener, beside `/healthz`,
    /// `/readyz` and `/metrics`; `store` is the worker's database (optional).
    func adminRoutes(_ router: Router<BasicRequestContext>, store: Store)
}

extension WorkerHandler {
    public var migrations: [Migration] { [] }
    public func completed(_ effect: Effect, event: PaymentEvent, db: SQLiteConnection) throws {}
    public func attach(store: Store, registry: PrometheusCollectorRegistry) async throws {}
    public var localEffectConcurrency: Int? { nil }
    public func adminRoutes(_ router: Router<BasicRequestContext>, store: Store) {}
}

extension WorkerHandler where Effect == NoEffect {
    public func perform(_ effect: NoEffect, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws {}
}

/// The effect type of workers whose whole effect is their SQLite state.
public struct NoEffect: Codable, Sendable {}

/// A classified handler failure. Transient failures back off through the retry tiers;
/// permanent ones go to the dead-letter queue at once.
public struct HandlerError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case transient
        case permanent
    }
    public let kind: Kind
    /// Short class for grouping in `payfleet dlq list` (`InvalidEvent`, `HTTP503`, `SMTP550`).
    public let errorClass: String
    public let message: String

    public init(_ kind: Kind, _ errorClass: String, _ message: String) {
        self.kind = kind
        self.errorClass = errorClass
        self.message = message
    }

    public static func transient(_ errorClass: String, _ message: String) -> HandlerError {
        HandlerError(.transient, errorClass, message)
    }
    public static func permanent(_ errorClass: String, _ message: String) -> HandlerError {
        HandlerError(.permanent, errorClass, message)
    }

    public var description: String { "\(errorClass): \(message)" }

    /// Any error as a HandlerError: SQLite busy/locked and unknown errors are transient,
    /// constraint violations and decoding problems permanent.
    public static func classify(_ error: Error) -> HandlerError {
        switch error {
        case let e as HandlerError: return e
        case let e as SQLiteError:
            return e.isConstraint
                ? .permanent("ConstraintViolation", e.message)
                : .transient("SQLite\(e.resultCode.primary.rawValue)", e.message)
        case let e as EventDecodingError: return .permanent("InvalidEvent", e.message)
        case let e as EventValidationError: return .permanent("InvalidEvent", e.description)
        case let e as DecodingError: return .permanent("InvalidEvent", "\(e)")
        default: return .transient(String(describing: type(of: error)), "\(error)")
        }
    }
}
