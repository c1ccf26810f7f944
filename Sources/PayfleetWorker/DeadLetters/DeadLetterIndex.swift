import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// The dead-letter index (`dead_letters`, migration `runtime.3`): one row per event id in the
/// worker's dead-letter queue, written by the runtime in the worker's own state file, so that
/// `payfleet dlq list` / `--group-by error` / `payfleet trace` answer without reading the queue.
///
/// The queue stays the source of truth. The runtime writes a row after the broker confirmed the
/// dead letter and before the original is acked (a row committed before the confirm would name
/// a letter that may never reach the DLQ). The CLI removes rows when it replays, edits or purges
/// letters, and rewrites the index from a complete read of the queue whenever it reads one
/// (`replay`, `list --from-queue`). They can diverge: a crash between the confirm and the index
/// commit, letters the broker dead-letters by itself (`delivery_limit`), a purge through the
/// management UI. The CLI compares the index with the queue depth on every command and reads
/// the queue instead when they differ (see docs/operations.md).
///
/// What a row holds is a summary: ids, type, merchant, customer, error class and message (run
/// through `Redaction` once more), queue, times, attempts — never the event body.
public enum DeadLetterIndex {
    public static let migrations: [Migration] = [
        Migration(
            "runtime.3",
            """
            CREATE TABLE dead_letters (
                event_id TEXT NOT NULL UNIQUE,
                type TEXT,
                merchant_id TEXT,
                customer_id TEXT,
                error TEXT NOT NULL,
                error_class TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                fingerprint_text TEXT NOT NULL,
                worker TEXT NOT NULL,
                queue TEXT NOT NULL,
                first_failed_at TEXT,
                first_failed_at_ms INTEGER,
                dead_lettered_at_ms INTEGER NOT NULL,
                attempts INTEGER,
                copies INTEGER NOT NULL DEFAULT 1
            );
            CREATE INDEX dead_letters_fingerprint_idx ON dead_letters(fingerprint);
            CREATE INDEX dead_letters_merchant_idx ON dead_letters(merchant_id);
            CREATE INDEX dead_letters_customer_idx ON dead_letters(customer_id);
            CREATE INDEX dead_letters_type_idx ON dead_letters(type);
            CREATE INDEX dead_letters_first_failed_idx ON dead_letters(first_failed_at_ms);
            """)
    ]

    /// One dead letter's summary.
    public struct Summary: Sendable, Equatable {
        public var eventID: String
        public var type: String?
        public var merchant: String?
        public var customer: String?
        public var error: String
        public var worker: String
        public var queue: String
        public var firstFailedAt: String?
        public var deadLetteredAtMS: Int64
        public var attempts: Int?
        public var copies: Int

        public init(
            eventID: String, type: String?, merchant: String?, customer: String?, error: String, worker: String,
            queue: String, firstFailedAt: String?, deadLetteredAtMS: Int64, attempts: Int?, copies: Int = 1
        ) {
            self.eventID = eventID
            self.type = type
            self.merchant = merchant
            self.customer = customer
            self.error = Redaction.redact(error)
            self.worker = worker
            self.queue = queue
            self.firstFailedAt = firstFailedAt
            self.deadLetteredAtMS = deadLetteredAtMS
            self.attempts = attempts
            self.copies = copies
        }

        /// The summary of a message as the runtime dead-letters it (its headers already carry
        /// the error, attempts and first failure). Id, type, merchant and customer come from the
        /// JSON body when it has them (a dead letter is often a body that does not decode).
        public init(message m: AMQPMessage, worker: String, queue: String, now: Date = Date()) {
            let object = (try? JSONSerialization.jsonObject(with: Data(m.body))) as? [String: Any]
            let id = m.messageID.flatMap { $0.isEmpty ? nil : $0 } ?? (object?["id"] as? String)
                ?? ("sha256:" + ErrorFingerprint.digest(m.body))
            self.init(
                eventID: id, type: object?["type"] as? String, merchant: object?["merchant_id"] as? String,
                customer: (object?["customer"] as? [String: Any])?["id"] as? String,
                error: m.headers[PayfleetHeaders.error]?.stringValue ?? "Unknown: no error header", worker: worker, queue: queue,
                firstFailedAt: m.headers[PayfleetHeaders.firstFailedAt]?.stringValue,
                deadLetteredAtMS: Int64((now.timeIntervalSince1970 * 1000).rounded()),
                attempts: m.headers[PayfleetHeaders.attempts]?.intValue.map { Int($0) })
        }

        public var fingerprint: ErrorFingerprint { ErrorFingerprint(error) }
    }

    static func args(_ s: Summary) -> [SQLValue] {
        let fp = s.fingerprint
        let firstMS = s.firstFailedAt.flatMap(RFC3339.parse).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
        func t(_ v: String?) -> SQLValue { v.map { .text($0) } ?? .null }
        return [
            .text(s.eventID), t(s.type), t(s.merchant), t(s.customer), .text(s.error), .text(fp.errorClass), .text(fp.id),
            .text(fp.text), .text(s.worker), .text(s.queue), t(s.firstFailedAt), firstMS.map { .int($0) } ?? .null,
            .int(s.deadLetteredAtMS), s.attempts.map { .int(Int64($0)) } ?? .null, .int(Int64(s.copies)),
        ]
    }

    static let columns = """
        event_id, type, merchant_id, customer_id, error, error_class, fingerprint, fingerprint_text, worker, queue,
        first_failed_at, first_failed_at_ms, dead_lettered_at_ms, attempts, copies
        """

    /// Records letters the broker just confirmed in the DLQ. A second copy of an id (dead-lettered
    /// again before a replay removed the first) counts as one more copy; its summary is the latest.
    /// The same letter again (same first failure and attempts: the CLI indexed it from the queue
    /// before this write) is not a second copy.
    public static func record(_ rows: [Summary], db: SQLiteConnection) throws {
        for s in rows {
            try db.execute(
                """
                INSERT INTO dead_letters (\(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(event_id) DO UPDATE SET
                    type = excluded.type, merchant_id = excluded.merchant_id, customer_id = excluded.customer_id,
                    error = excluded.error, error_class = excluded.error_class, fingerprint = excluded.fingerprint,
                    fingerprint_text = excluded.fingerprint_text, queue = excluded.queue,
                    first_failed_at = COALESCE(dead_letters.first_failed_at, excluded.first_failed_at),
                    first_failed_at_ms = COALESCE(dead_letters.first_failed_at_ms, excluded.first_failed_at_ms),
                    dead_lettered_at_ms = excluded.dead_lettered_at_ms, attempts = excluded.attempts,
                    copies = dead_letters.copies + CASE
                        WHEN dead_letters.first_failed_at IS excluded.first_failed_at AND dead_letters.attempts IS excluded.attempts
                        THEN 0 ELSE excluded.copies END
                """, args(s))
        }
    }

    /// Writes rows as they are (copies included), replacing any row of the same id: a rebuild
    /// from a complete read of the queue.
    public static func put(_ rows: [Summary], db: SQLiteConnection) throws {
        for s in rows {
            try db.execute("INSERT OR REPLACE INTO dead_letters (\(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", args(s))
        }
    }

    /// Removes letters that left the DLQ (replayed, edited, purged). Returns how many rows went.
    @discardableResult
    public static func remove(_ ids: [String], db: SQLiteConnection) throws -> Int {
        var n = 0
        for id in ids { n += try db.execute("DELETE FROM dead_letters WHERE event_id = ?", [.text(id)]) }
        return n
    }
}
