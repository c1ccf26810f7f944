import Foundation
import Logging
import PayfleetCore

/// A versioned schema change. `id` is namespaced by its owner (`runtime.1`, `ledger.2`) so the
/// runtime's and a worker's migrations live in one `schema_migrations` table.
public struct Migration: Sendable {
    public let id: String
    public let sql: String
    public init(_ id: String, _ sql: String) {
        self.id = id
        self.sql = sql
    }
}

/// A worker's SQLite state: one file, one connection on its own thread, WAL mode.
///
/// Durability: `synchronous=FULL` by default, because every worker acknowledges a delivery
/// right after its commit — with NORMAL a power cut could lose a committed-and-acked effect.
/// NORMAL is only for rebuildable state (reports, caches) where the caller asks for it.
public final class Store: Sendable {
    public let path: String
    let thread: BlockingThread
    nonisolated(unsafe) let connection: SQLiteConnection
    let logger: Logger
    /// The store's group commit (see `GroupCommit`), on the store's thread.
    public let groupCommit: GroupCommit

    /// Migrations every store gets: the `processed` idempotency table.
    public static let runtimeMigrations: [Migration] = [
        Migration(
            "runtime.1",
            """
            CREATE TABLE processed (
                event_id TEXT PRIMARY KEY,
                processed_at INTEGER NOT NULL  -- unix seconds
            ) WITHOUT ROWID;
            CREATE INDEX processed_at_idx ON processed(processed_at);
            """),
        // Milliseconds of the apply (inside the batch transaction, just before its commit): what
        // the end-to-end benchmark measures latency to.
        Migration("store.processed_ms", "ALTER TABLE processed ADD COLUMN processed_ms INTEGER"),
    ]

    public init(
        path: String, migrations: [Migration] = [], durability: SQLiteConnection.Durability = .full,
        logger: Logger = Logger(label: "payfleet.store")
    ) async throws {
        self.path = path
        self.logger = logger
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let thread = BlockingThread(name: "sqlite:\((path as NSString).lastPathComponent)")
        self.thread = thread
        let box = try await thread.run { try SQLiteConnectionBox(SQLiteConnection(path: path, durability: durability)) }
        self.connection = box.value
        self.groupCommit = GroupCommit(thread: thread, connection: box)
        let all = Store.runtimeMigrations + migrations
        let applied = try await self.withConnection { db in try Store.migrate(db, all) }
        if !applied.isEmpty {
            logger.info("applied migrations", metadata: [LogKey.storePath: "\(path)", LogKey.storeMigrations: "\(applied)"])
        }
    }

    deinit { thread.shutdown() }

    static func migrate(_ db: SQLiteConnection, _ migrations: [Migration]) throws -> [String] {
        try db.executeScript(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
        let done = Set(try db.query("SELECT id FROM schema_migrations").compactMap { $0.string(0) })
        var applied: [String] = []
        for m in migrations where !done.contains(m.id) {
            // Checked again under the write lock: a standby instance opening the same file may
            // have applied it between the read above and this transaction.
            let ran = try db.transaction { () throws -> Bool in
                guard try db.queryOne("SELECT 1 FROM schema_migrations WHERE id = ?", [.text(m.id)]) == nil else {
                    return false
                }
                try db.executeScript(m.sql)
                try db.execute(
                    "INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)",
                    [.text(m.id), .int(Int64(Date().timeIntervalSince1970))])
                return true
            }
            if ran { applied.append(m.id) }
        }
        return applied
    }

    /// Runs `body` on the store's thread, outside any transaction.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        let conn = SQLiteConnectionBox(connection)
        return try await thread.run { try body(conn.value) }
    }

    /// Copies the write-ahead log into the database file and truncates it to zero bytes
    /// (`wal_checkpoint(TRUNCATE)`). After a write failed for want of space the log may be what
    /// fills the disk: it only shrinks at a checkpoint, and the automatic one runs after a commit
    /// that the full disk refuses. Returns whether the checkpoint completed.
    @discardableResult
    public func reclaimJournalSpace() async -> Bool {
        (try? await withConnection { db in
            guard let row = try db.queryOne("PRAGMA wal_checkpoint(TRUNCATE)") else { return false }
            return row.int(0) == 0
        }) ?? false
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the store's thread.
    public func write<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        try await withConnection { db in try db.transaction { try body(db) } }
    }

    /// Runs `body` in its own savepoint of the next group transaction (`GroupCommit`): it
    /// shares the commit, and its fsync, with whatever else is submitted meanwhile.
    public func groupWrite<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        try await groupCommit.submit(body)
    }

    /// Deletes processed ids older than `retention`, in chunks so a big prune never holds the
    /// write lock for long. Returns how many rows went.
    public func pruneProcessed(olderThan retention: TimeInterval, now: Date = Date()) async throws -> Int {
        let cutoff = Int64(now.timeIntervalSince1970 - retention)
        var total = 0
        while true {
            let n = try await write { db in
                try db.execute(
                    "DELETE FROM processed WHERE event_id IN (SELECT event_id FROM processed WHERE processed_at < ? LIMIT 5000)",
                    [.int(cutoff)])
            }
            total += n
            if n < 5000 { return total }
        }
    }
}

/// Carries the connection into the store thread's closures. Safe because the connection is
/// only ever touched on that one thread.
struct SQLiteConnectionBox: @unchecked Sendable {
    let value: SQLiteConnection
    init(_ value: SQLiteConnection) { self.value = value }
}

extension SQLiteConnection {
    /// True when the event id was already recorded.
    public func isProcessed(_ eventID: String) throws -> Bool {
        try queryOne("SELECT 1 FROM processed WHERE event_id = ?", [.text(eventID)]) != nil
    }

    /// Records an event id; false when it was already there.
    @discardableResult
    public func markProcessed(_ eventID: String, at date: Date = Date()) throws -> Bool {
        try execute(
            "INSERT OR IGNORE INTO processed (event_id, processed_at, processed_ms) VALUES (?, ?, ?)",
            [.text(eventID), .int(Int64(date.timeIntervalSince1970)), .int(Int64(date.timeIntervalSince1970 * 1000))]) == 1
    }
}
