import Foundation
import PayfleetStore

/// The effect journal (`effect_journal`): one row per event whose `apply` returned an effect,
/// written as an intent in the batch transaction and updated with the outcome after the call.
public enum EffectJournal {
    public static let migrations: [Migration] = [
        Migration(
            "runtime.2",
            """
            CREATE TABLE effect_journal (
                event_id TEXT PRIMARY KEY,
                effect BLOB NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('intent', 'failed', 'dead', 'done')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE INDEX effect_journal_state_idx ON effect_journal(state, updated_at);
            """)
    ]

    /// An effect not done yet: its encoded value, attempts so far, and whether the last attempt
    /// started without recording an outcome.
    static func pending(_ eventID: String, db: SQLiteConnection) throws
        -> (effect: [UInt8], attempts: Int, outcomeUnknown: Bool)?
    {
        guard let row = try db.queryOne(
            "SELECT effect, state, attempts FROM effect_journal WHERE event_id = ?", [.text(eventID)]),
            let state = row.string(1), state != "done"
        else { return nil }
        return (row.blob(0) ?? [], Int(row.int(2) ?? 0), state == "intent")
    }

    static func intent(_ eventID: String, effect: [UInt8], now: Int64, db: SQLiteConnection) throws {
        try db.execute(
            "INSERT INTO effect_journal (event_id, effect, state, attempts, created_at, updated_at) VALUES (?, ?, 'intent', 0, ?, ?)",
            [.text(eventID), .blob(effect), .int(now), .int(now)])
    }

    static func failed(_ eventID: String, error err: HandlerError, now: Int64, db: SQLiteConnection) throws {
        try db.execute(
            "UPDATE effect_journal SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ? WHERE event_id = ?",
            [.text(err.kind == .permanent ? "dead" : "failed"), .text(err.description), .int(now), .text(eventID)])
    }

    static func done(_ eventID: String, now: Int64, db: SQLiteConnection) throws {
        try db.execute(
            "UPDATE effect_journal SET state = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ? WHERE event_id = ?",
            [.int(now), .text(eventID)])
    }

    /// Deletes done rows older than `retention`; returns how many went.
    public static func prune(olderThan retention: TimeInterval, store: Store, now: Date = Date()) async throws -> Int {
        try await store.write { db in
            try db.execute(
                "DELETE FROM effect_journal WHERE state = 'done' AND updated_at < ?",
                [.int(Int64(now.timeIntervalSince1970 - retention))])
        }
    }
}
