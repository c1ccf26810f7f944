import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// The durable outbox in `ingest.sqlite`: accepted events, records of unpublished provider
/// events, and API idempotency keys. Concurrent requests share one transaction and one fsync
/// (group commit); a request's answer waits for that commit.
public final class Outbox: Sendable {
    public struct Row: Sendable {
        public let seq: Int64
        public let id: String
        public let type: String
        public let merchant: String
        public let customer: String?
        /// `PaymentEvent.customerKey`: the customer, else the payment, else the merchant.
        public let customerKey: String
        public let traceparent: String?
        public let body: [UInt8]
        /// Failed publishes of this row so far.
        public let attempts: Int

        /// The row as the relay publishes it.
        public var event: OutboxEvent {
            OutboxEvent(
                id: id, type: type, merchant: merchant, customer: customer, customerKey: customerKey,
                traceparent: traceparent, body: body)
        }
    }

    /// A row that waits for a later retry, and why (the broker's refusal, never event data).
    public struct Parked: Sendable, Equatable {
        public let seq: Int64
        public let id: String
        public let type: String
        public let attempts: Int
        public let lastError: String
    }

    public struct Idempotency: Sendable {
        public let keyHash: String
        /// `sha256:<hex>` of the client's Idempotency-Key: the key itself is never stored.
        public let key: String
        public let bodySHA: String
    }

    public enum Outcome: Sendable, Equatable {
        /// One entry per mapped item: canonical id and whether it was already known.
        case accepted([(id: String, duplicate: Bool)])
        /// Same API key + Idempotency-Key with a different body.
        case conflict(originalID: String)

        public static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case (.accepted(let x), .accepted(let y)): return x.map(\.id) == y.map(\.id) && x.map(\.duplicate) == y.map(\.duplicate)
            case (.conflict(let x), .conflict(let y)): return x == y
            default: return false
            }
        }
    }

    static let migrations: [Migration] = [
        Migration(
            "ingest.1",
            """
            CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                merchant TEXT NOT NULL,
                customer TEXT,
                traceparent TEXT,
                body BLOB NOT NULL,
                created_at INTEGER NOT NULL,
                sent_at INTEGER
            );
            CREATE INDEX outbox_pending_idx ON outbox(seq) WHERE sent_at IS NULL;
            CREATE TABLE recorded (
                id TEXT PRIMARY KEY,
                provider TEXT NOT NULL,
                event_id TEXT NOT NULL,
                type TEXT NOT NULL,
                reason TEXT NOT NULL,
                received_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE idempotency (
                key_hash TEXT NOT NULL,
                idem_key TEXT NOT NULL,
                body_sha TEXT NOT NULL,
                event_id TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (key_hash, idem_key)
            ) WITHOUT ROWID;
            """),
        // The partition key of customer-partitioned workers (crm-sync, receipt-sender).
        Migration("ingest.2", "ALTER TABLE outbox ADD COLUMN customer_key TEXT"),
        // One Stripe refund reported by `charge.refunded` (charge + cumulative amount) and by
        // `refund.*` (refund id): the row links both reports to the canonical event published.
        Migration(
            "ingest.3",
            """
            CREATE TABLE refund_links (
                charge TEXT NOT NULL,
                refund_id TEXT UNIQUE,
                amount INTEGER NOT NULL,
                cumulative_after INTEGER,
                event_id TEXT NOT NULL,
                UNIQUE (charge, cumulative_after)
            );
            CREATE INDEX refund_links_charge_idx ON refund_links(charge, amount);
            """),
        // A row the broker refuses (unroutable, refused, or one whose publish breaks the
        // connection) waits with its own backoff instead of holding back the rows behind it;
        // sent rows, records and idempotency keys are pruned after the retention.
        Migration(
            "ingest.4",
            """
            ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE outbox ADD COLUMN next_attempt_ms INTEGER;
            ALTER TABLE outbox ADD COLUMN last_error TEXT;
            CREATE INDEX outbox_sent_idx ON outbox(sent_at) WHERE sent_at IS NOT NULL;
            CREATE INDEX recorded_received_idx ON recorded(received_at);
            CREATE INDEX idempotency_created_idx ON idempotency(created_at);
            """),
        // The `metadata.refund_id` each linked refund was published with (a charge.refunded
        // without a refund id publishes `<charge>:refunded:<cumulative>`): a later failure of
        // the refund is published naming it the same way.
        Migration(
            "ingest.5",
            """
            ALTER TABLE refund_links ADD COLUMN published_refund_id TEXT;
            UPDATE refund_links SET published_refund_id = refund_id WHERE cumulative_after IS NULL;
            """),
        // Issue 18 (`payfleet trace ID`): what an operator asks about — a payment, an invoice, the
        // provider's event id — found by index, not by reading every body; and which fields had a
        // card number masked (the field paths only, never a value). Rows accepted before this
        // migration get their references from their bodies once.
        Migration(
            "ingest.6",
            """
            ALTER TABLE outbox ADD COLUMN payment_id TEXT;
            ALTER TABLE outbox ADD COLUMN invoice_id TEXT;
            ALTER TABLE outbox ADD COLUMN provider_event_id TEXT;
            UPDATE outbox SET
                payment_id = json_extract(CAST(body AS TEXT), '$.payment.id'),
                invoice_id = json_extract(CAST(body AS TEXT), '$.invoice_id'),
                provider_event_id = json_extract(CAST(body AS TEXT), '$.source.event_id')
            WHERE json_valid(CAST(body AS TEXT));
            CREATE INDEX outbox_payment_idx ON outbox(payment_id) WHERE payment_id IS NOT NULL;
            CREATE INDEX outbox_invoice_idx ON outbox(invoice_id) WHERE invoice_id IS NOT NULL;
            CREATE INDEX outbox_provider_event_idx ON outbox(provider_event_id) WHERE provider_event_id IS NOT NULL;
            CREATE INDEX recorded_event_idx ON recorded(event_id);
            CREATE TABLE redactions (
                event_id TEXT NOT NULL,
                field TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (event_id, field)
            ) WITHOUT ROWID;
            CREATE INDEX redactions_created_idx ON redactions(created_at);
            """),
        // An operator's pause of the relay (`payfleet partitions resize`): while the row exists
        // the relay publishes nothing; it fills in `acknowledged_ms` once it has stopped between
        // two rounds (everything it published before is confirmed and marked sent).
        Migration(
            "ingest.7",
            """
            CREATE TABLE relay_pause (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                holder TEXT NOT NULL,
                reason TEXT NOT NULL,
                paused_ms INTEGER NOT NULL,
                acknowledged_ms INTEGER
            );
            """),
        // A refund's failure that arrived before any report of the refund names it by its re_
        // id; a `charge.refunded` (no refund id) reporting that refund later takes the same name
        // (else the CRM, which pairs a failure with its refund by name, never undoes it).
        Migration(
            "ingest.8",
            """
            CREATE TABLE refund_failures (
                refund_id TEXT PRIMARY KEY,
                charge TEXT NOT NULL,
                amount INTEGER NOT NULL,
                claimed INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX refund_failures_charge_idx ON refund_failures(charge, amount) WHERE claimed = 0;
            """),
    ]

    /// Failed attempts after which a row counts as parked (metric, alert, `/readyz`).
    public static let parkAfterAttempts = 5

    public let store: Store

    public init(path: String, logger: Logger) async throws {
        store = try await Store(path: path, migrations: Self.migrations, durability: .full, logger: logger)
    }

    /// Commits `items` atomically (all or none) and returns once they are on disk.
    ///
    /// `redactions`: canonical id → the fields whose card number ingest masked (paths only);
    /// kept beside the event for `payfleet trace`, written only for an event inserted now.
    public func accept(
        _ items: [MappedEvent], traceparent: String, idempotency: Idempotency? = nil, redactions: [String: [String]] = [:]
    ) async throws -> Outcome {
        let now = Int64(Date().timeIntervalSince1970)
        // Encode here, on the caller's task: the store thread is serial and does only SQL.
        let bodies: [String: [UInt8]] = items.reduce(into: [:]) { acc, item in
            if let e = item.event { acc[e.id] = EventCodec.encodeBytes(e) }
        }
        return try await store.groupWrite { db in
            if let idem = idempotency,
                let row = try db.queryOne(
                    "SELECT body_sha, event_id FROM idempotency WHERE key_hash = ? AND idem_key = ?",
                    [.text(idem.keyHash), .text(idem.key)])
            {
                let original = row.string(1) ?? ""
                if row.string(0) != idem.bodySHA { return .conflict(originalID: original) }
                return .accepted([(original, true)])
            }
            var out: [(id: String, duplicate: Bool)] = []
            for item in items {
                switch item {
                case .event(var e), .refund(var e, _):
                    var body = bodies[e.id]
                    if case .refund(_, let link) = item {
                        if link.failure {
                            if let published = try Self.publishedRefundID(of: link, db: db) {
                                if published != e.metadata["refund_id"] {
                                    e.metadata["stripe_refund_id"] = e.metadata["refund_id"]
                                    e.metadata["refund_id"] = published
                                    body = EventCodec.encodeBytes(e)
                                }
                            } else if let rid = link.refundID {
                                try Self.noteEarlyFailure(link, refundID: rid, db: db)
                            }
                        } else if let original = try Self.linkRefund(link, eventID: e.id, publishedRefundID: e.metadata["refund_id"], db: db) {
                            out.append((original, true))
                            continue
                        } else if let name = try Self.nameOfFailedRefund(link, db: db), name != e.metadata["refund_id"] {
                            e.metadata["refund_id"] = name
                            body = EventCodec.encodeBytes(e)
                        }
                    }
                    let n = try db.execute(
                        """
                        INSERT OR IGNORE INTO outbox (id, type, merchant, customer, customer_key, traceparent, body, created_at,
                            payment_id, invoice_id, provider_event_id)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [.text(e.id), .text(e.type.rawValue), .text(e.merchantID), SQLValue(e.customer?.id),
                         .text(e.customerKey), .text(traceparent), .blob(body ?? EventCodec.encodeBytes(e)), .int(now),
                         SQLValue(e.payment?.id), SQLValue(e.invoiceID), .text(e.source.eventID)])
                    out.append((e.id, n == 0))
                    if n == 1, let fields = redactions[e.id] {
                        for f in Set(fields) {
                            try db.execute(
                                "INSERT OR IGNORE INTO redactions (event_id, field, created_at) VALUES (?, ?, ?)",
                                [.text(e.id), .text(String(f.prefix(1000))), .int(now)])
                        }
                    }
                case .recordOnly(let provider, let eventID, let type, let reason):
                    let id = item.canonicalID
                    let n = try db.execute(
                        "INSERT OR IGNORE INTO recorded (id, provider, event_id, type, reason, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                        [.text(id), .text(provider), .text(eventID), .text(type), .text(reason), .int(now)])
                    out.append((id, n == 0))
                }
            }
            if let idem = idempotency, let first = out.first {
                try db.execute(
                    "INSERT INTO idempotency (key_hash, idem_key, body_sha, event_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    [.text(idem.keyHash), .text(idem.key), .text(idem.bodySHA), .text(first.id), .int(now)])
            }
            return .accepted(out)
        }
    }

    /// The canonical id already published for the refund `link` describes, or nil after
    /// recording `eventID` as that refund's. A report with a refund id matches that id, else the
    /// oldest report of the same charge and amount that carried no id; a `charge.refunded`
    /// matches its cumulative amount, else the oldest refund of that charge and amount it has
    /// not been matched with. Two refunds of one charge with equal amounts may pair either way:
    /// the money booked is the same.
    static func linkRefund(_ link: RefundLink, eventID: String, publishedRefundID: String? = nil, db: SQLiteConnection) throws -> String? {
        if let rid = link.refundID {
            if let row = try db.queryOne("SELECT event_id FROM refund_links WHERE refund_id = ?", [.text(rid)]) {
                return row.string(0)
            }
        }
        if let cum = link.cumulativeAfter {
            if let row = try db.queryOne(
                "SELECT event_id FROM refund_links WHERE charge = ? AND cumulative_after = ?", [.text(link.charge), .int(cum)])
            {
                return row.string(0)
            }
        }
        // The other kind of report of the same refund, not linked yet.
        let other: String? =
            if link.refundID != nil, link.cumulativeAfter == nil {
                "refund_id IS NULL"
            } else if link.refundID == nil, link.cumulativeAfter != nil {
                "cumulative_after IS NULL"
            } else {
                nil
            }
        if let other,
            let row = try db.queryOne(
                "SELECT rowid, event_id FROM refund_links WHERE charge = ? AND amount = ? AND \(other) ORDER BY rowid LIMIT 1",
                [.text(link.charge), .int(link.amount)])
        {
            if let rid = link.refundID {
                try db.execute("UPDATE refund_links SET refund_id = ? WHERE rowid = ?", [.text(rid), .int(row.int(0) ?? 0)])
            } else if let cum = link.cumulativeAfter {
                try db.execute("UPDATE refund_links SET cumulative_after = ? WHERE rowid = ?", [.int(cum), .int(row.int(0) ?? 0)])
            }
            return row.string(1)
        }
        try db.execute(
            "INSERT INTO refund_links (charge, refund_id, amount, cumulative_after, event_id, published_refund_id) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(link.charge), SQLValue(link.refundID), .int(link.amount), SQLValue(link.cumulativeAfter),
             .text(eventID), SQLValue(publishedRefundID)])
        return nil
    }

    /// Records a failure of refund `refundID` that no report of the refund preceded.
    static func noteEarlyFailure(_ link: RefundLink, refundID: String, db: SQLiteConnection) throws {
        try db.execute(
            "INSERT OR IGNORE INTO refund_failures (refund_id, charge, amount) VALUES (?, ?, ?)",
            [.text(refundID), .text(link.charge), .int(link.amount)])
    }

    /// For a refund just recorded as new (`linkRefund` returned nil): the name an earlier
    /// failure of it was published with, or nil. A report with a refund id claims that id's
    /// failure (and keeps its own name, which is the same); a `charge.refunded`, which has no
    /// refund id, claims the oldest unclaimed failure of the same charge and amount and is
    /// linked to its id, so a later `refund.*` of that id is the refund already booked.
    static func nameOfFailedRefund(_ link: RefundLink, db: SQLiteConnection) throws -> String? {
        if let rid = link.refundID {
            try db.execute("UPDATE refund_failures SET claimed = 1 WHERE refund_id = ?", [.text(rid)])
            return nil
        }
        guard let cum = link.cumulativeAfter,
            let row = try db.queryOne(
                "SELECT refund_id FROM refund_failures WHERE charge = ? AND amount = ? AND claimed = 0 ORDER BY rowid LIMIT 1",
                [.text(link.charge), .int(link.amount)]),
            let rid = row.string(0)
        else { return nil }
        try db.execute("UPDATE refund_failures SET claimed = 1 WHERE refund_id = ?", [.text(rid)])
        try db.execute(
            "UPDATE refund_links SET refund_id = ?, published_refund_id = ? WHERE charge = ? AND cumulative_after = ?",
            [.text(rid), .text(rid), .text(link.charge), .int(cum)])
        return rid
    }

    /// The `metadata.refund_id` the refund a failure names was published with: the refund
    /// linked to its id, else the oldest refund of the same charge and amount reported without
    /// an id (`charge.refunded`), which is then linked to the id. Nil when no report of the
    /// refund was seen: the failure names the refund by its own id.
    static func publishedRefundID(of link: RefundLink, db: SQLiteConnection) throws -> String? {
        guard let rid = link.refundID else { return nil }
        if let row = try db.queryOne("SELECT published_refund_id FROM refund_links WHERE refund_id = ?", [.text(rid)]) {
            return row.string(0)
        }
        if let row = try db.queryOne(
            """
            SELECT rowid, published_refund_id FROM refund_links
            WHERE charge = ? AND amount = ? AND refund_id IS NULL ORDER BY rowid LIMIT 1
            """, [.text(link.charge), .int(link.amount)])
        {
            try db.execute("UPDATE refund_links SET refund_id = ? WHERE rowid = ?", [.text(rid), .int(row.int(0) ?? 0)])
            return row.string(1)
        }
        return nil
    }

    /// The oldest unsent rows that are due, in order of acceptance: a row waiting for its
    /// retry (`deferRow`) is skipped until its time, so it never holds back the rows behind it.
    public func pending(limit: Int, nowMS: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) async throws -> [Row] {
        try await store.withConnection { db in
            try db.query(
                """
                SELECT seq, id, type, merchant, customer, traceparent, body, customer_key, attempts FROM outbox
                WHERE sent_at IS NULL AND (next_attempt_ms IS NULL OR next_attempt_ms <= ?) ORDER BY seq LIMIT ?
                """,
                [.int(nowMS), .int(Int64(limit))]
            ).map { r in
                Row(seq: r.int(0) ?? 0, id: r.string(1) ?? "", type: r.string(2) ?? "", merchant: r.string(3) ?? "",
                    customer: r.string(4), customerKey: r.string(7) ?? r.string(4) ?? r.string(3) ?? "", traceparent: r.string(5),
                    body: r.blob(6) ?? [], attempts: Int(r.int(8) ?? 0))
            }
        }
    }

    /// Counts a failed publish of one row and schedules its next attempt: 1 s, doubling per
    /// attempt, at most 10 minutes. `reason` is the broker's refusal (exchange, routing key,
    /// reply code), which carries no event data.
    public func deferRow(_ seq: Int64, reason: String, nowMS: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) async throws {
        try await store.write { db in
            let attempts = try db.queryOne("SELECT attempts FROM outbox WHERE seq = ?", [.int(seq)])?.int(0) ?? 0
            let delay = min(600_000, 1000 * (Int64(1) << min(attempts, 20)))
            try db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? WHERE seq = ? AND sent_at IS NULL",
                [.int(nowMS + delay), .text(String(reason.prefix(500))), .int(seq)])
        }
    }

    /// Unsent rows that failed at least `parkAfterAttempts` times, oldest first.
    public func parked(limit: Int = 1000) async throws -> [Parked] {
        try await store.withConnection { db in
            try db.query(
                """
                SELECT seq, id, type, attempts, last_error FROM outbox
                WHERE sent_at IS NULL AND attempts >= ? ORDER BY seq LIMIT ?
                """, [.int(Int64(Self.parkAfterAttempts)), .int(Int64(limit))]
            ).map { r in
                Parked(seq: r.int(0) ?? 0, id: r.string(1) ?? "", type: r.string(2) ?? "", attempts: Int(r.int(3) ?? 0),
                       lastError: r.string(4) ?? "")
            }
        }
    }

    public func parkedCount() async throws -> Int {
        try await store.withConnection { db in
            Int(try db.queryOne("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts >= ?",
                                [.int(Int64(Self.parkAfterAttempts))])?.int(0) ?? 0)
        }
    }

    /// Makes parked rows due now (after the operator fixed what refused them); nil = all.
    @discardableResult
    public func release(ids: [String]? = nil) async throws -> Int {
        try await store.write { db in
            if let ids {
                var n = 0
                for id in ids {
                    n += try db.execute(
                        "UPDATE outbox SET next_attempt_ms = NULL WHERE id = ? AND sent_at IS NULL AND attempts > 0", [.text(id)])
                }
                return n
            }
            return try db.execute("UPDATE outbox SET next_attempt_ms = NULL WHERE sent_at IS NULL AND attempts > 0")
        }
    }

    public struct Pruned: Sendable, Equatable {
        public var outbox = 0, recorded = 0, idempotency = 0, redactions = 0
        public var total: Int { outbox + recorded + idempotency + redactions }
        public init(outbox: Int = 0, recorded: Int = 0, idempotency: Int = 0, redactions: Int = 0) {
            self.outbox = outbox
            self.recorded = recorded
            self.idempotency = idempotency
            self.redactions = redactions
        }
    }

    /// Deletes sent outbox rows, records and idempotency keys older than `retention`, at most
    /// `chunk` rows per table per transaction, so the accept path never waits long for the
    /// store. Unsent rows are never pruned. Returns what one call removed; call it until it
    /// returns zero.
    public func prune(retentionSeconds: Int64, chunk: Int = 1000, now: Date = Date()) async throws -> Pruned {
        let cutoff = Int64(now.timeIntervalSince1970) - retentionSeconds
        return try await store.write { db in
            var p = Pruned()
            p.outbox = try db.execute(
                """
                DELETE FROM outbox WHERE seq IN
                (SELECT seq FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ? ORDER BY sent_at LIMIT ?)
                """, [.int(cutoff), .int(Int64(chunk))])
            p.recorded = try db.execute(
                "DELETE FROM recorded WHERE id IN (SELECT id FROM recorded WHERE received_at < ? LIMIT ?)",
                [.int(cutoff), .int(Int64(chunk))])
            p.idempotency = try db.execute(
                """
                DELETE FROM idempotency WHERE (key_hash, idem_key) IN
                (SELECT key_hash, idem_key FROM idempotency WHERE created_at < ? LIMIT ?)
                """, [.int(cutoff), .int(Int64(chunk))])
            p.redactions = try db.execute(
                """
                DELETE FROM redactions WHERE (event_id, field) IN
                (SELECT event_id, field FROM redactions WHERE created_at < ? LIMIT ?)
                """, [.int(cutoff), .int(Int64(chunk))])
            return p
        }
    }

    public func markSent(_ seqs: [Int64]) async throws {
        guard !seqs.isEmpty else { return }
        let now = Int64(Date().timeIntervalSince1970)
        try await store.write { db in
            for chunk in stride(from: 0, to: seqs.count, by: 500) {
                let part = Array(seqs[chunk..<min(chunk + 500, seqs.count)])
                let marks = part.map { _ in "?" }.joined(separator: ",")
                try db.execute(
                    "UPDATE outbox SET sent_at = ? WHERE seq IN (\(marks))", [.int(now)] + part.map { SQLValue.int($0) })
            }
        }
    }

    /// The operator's pause of the relay (`relay_pause`), if one is set.
    public typealias RelayPause = OutboxPause

    public func relayPause() async throws -> RelayPause? {
        try await store.withConnection { db in
            try db.queryOne("SELECT holder, reason, paused_ms, acknowledged_ms FROM relay_pause WHERE id = 1").map {
                RelayPause(holder: $0.string(0) ?? "", reason: $0.string(1) ?? "", pausedMS: $0.int(2) ?? 0, acknowledgedMS: $0.int(3))
            }
        }
    }

    /// Sets the pause for `holder`; the pause already set when another holder has one (nothing changed).
    public func pauseRelay(holder: String, reason: String, nowMS: Int64 = Int64(Date().timeIntervalSince1970 * 1000))
        async throws -> RelayPause?
    {
        try await store.write { db in
            if let r = try db.queryOne("SELECT holder, reason, paused_ms, acknowledged_ms FROM relay_pause WHERE id = 1"),
                r.string(0) != holder
            {
                return RelayPause(holder: r.string(0) ?? "", reason: r.string(1) ?? "", pausedMS: r.int(2) ?? 0, acknowledgedMS: r.int(3))
            }
            try db.execute(
                "INSERT OR IGNORE INTO relay_pause (id, holder, reason, paused_ms) VALUES (1, ?, ?, ?)",
                [.text(holder), .text(reason), .int(nowMS)])
            return nil
        }
    }

    /// The relay's acknowledgement: it publishes nothing until the pause is lifted.
    func acknowledgeRelayPause(nowMS: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) async throws {
        _ = try await store.write { db in
            try db.execute("UPDATE relay_pause SET acknowledged_ms = ? WHERE id = 1 AND acknowledged_ms IS NULL", [.int(nowMS)])
        }
    }

    /// Lifts the pause of `holder` (nil: whoever holds it); true when one was lifted.
    @discardableResult
    public func resumeRelay(holder: String?) async throws -> Bool {
        try await store.write { db in
            if let holder {
                return try db.execute("DELETE FROM relay_pause WHERE id = 1 AND holder = ?", [.text(holder)]) > 0
            }
            return try db.execute("DELETE FROM relay_pause WHERE id = 1") > 0
        }
    }

    public func pendingCount() async throws -> Int {
        try await store.withConnection { db in
            Int(try db.queryOne("SELECT count(*) FROM outbox WHERE sent_at IS NULL")?.int(0) ?? 0)
        }
    }
}
