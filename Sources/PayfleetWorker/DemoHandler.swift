import Foundation
import PayfleetCore
import PayfleetStore

/// The runtime's demonstration worker (`payfleet-demo-worker`): records every event it applies
/// in `applied` with its amount, so tests and the local fleet can count effects exactly.
///
/// For fault-injection tests it obeys `metadata.demo_fault` on an event:
/// - `transient:N` — fail transiently the first N times this process sees the event;
/// - `permanent` — fail permanently;
/// - `crash` — terminate the process (the broker's delivery limit must dead-letter it).
public struct DemoHandler: WorkerHandler {
    private let failures = Locked<[String: Int]>([:])

    public init() {}

    public var migrations: [Migration] {
        [
            Migration(
                "demo.1",
                """
                -- No uniqueness on event_id on purpose: a double application must be countable.
                CREATE TABLE applied (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    merchant_id TEXT NOT NULL,
                    currency TEXT NOT NULL,
                    amount INTEGER NOT NULL,
                    applied_at INTEGER NOT NULL
                );
                """)
        ]
    }

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> NoEffect? {
        if let fault = event.metadata["demo_fault"] {
            if fault == "crash" {
                FileHandleLite.writeStderr("demo worker: crashing on \(event.id) as instructed\n")
                exit(3)
            }
            if fault == "permanent" {
                throw HandlerError.permanent("DemoPermanent", "event \(event.id) asked for a permanent failure")
            }
            if fault.hasPrefix("transient:"), let n = Int(fault.dropFirst("transient:".count)) {
                let seen = failures.withLock { m -> Int in
                    m[event.id, default: 0] += 1
                    return m[event.id]!
                }
                if seen <= n {
                    throw HandlerError.transient("DemoTransient", "attempt \(seen) of \(n) failing for \(event.id)")
                }
            }
        }
        try db.execute(
            "INSERT INTO applied (event_id, type, merchant_id, currency, amount, applied_at) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(event.id), .text(event.type.rawValue), .text(event.merchantID), .text(event.amount.currency.code),
             .int(event.amount.value), .int(Int64(Date().timeIntervalSince1970 * 1000))])
        return nil
    }
}

enum FileHandleLite {
    static func writeStderr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
}
