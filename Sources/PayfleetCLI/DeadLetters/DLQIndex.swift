import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetWorker

/// One dead letter as `dlq list` shows it, from the queue (`DeadLetter`) or from the index.
public struct LetterSummary: Sendable {
    public var id: String
    public var type: String?
    public var merchant: String?
    public var customer: String?
    public var attempts: Int?
    public var firstFailedAt: String?
    public var error: String
    public var fingerprint: ErrorFingerprint

    public var listJSON: [String: Any] {
        [
            "id": id, "type": orNull(type), "merchant_id": orNull(merchant),
            "attempts": orNull(attempts), "error": error, "first_failed_at": orNull(firstFailedAt),
            "fingerprint": fingerprint.id, "error_class": fingerprint.errorClass,
        ]
    }
}

extension DeadLetter {
    public var summary: LetterSummary {
        LetterSummary(
            id: id, type: type, merchant: merchant, customer: customer, attempts: attempts, firstFailedAt: firstFailedAt,
            error: error, fingerprint: fingerprint)
    }
}

/// The CLI's side of the dead-letter index (`DeadLetterIndex`, migration `runtime.3`): the
/// `dead_letters` table of each of the worker's state files (one per partition), read by
/// index for `dlq list` and `trace`, and kept in step with the queue by the commands that
/// change the queue. SQLite runs on a `BlockingThread`, never on the cooperative pool.
final class DLQIndex: @unchecked Sendable {
    let worker: RuntimeConfiguration
    /// The state file of each partition.
    let paths: [String]
    let thread = BlockingThread(name: "dlq-index")

    init(worker: RuntimeConfiguration) {
        self.worker = worker
        paths = DLQIndex.paths(worker)
    }

    deinit { thread.shutdown() }

    static func paths(_ rc: RuntimeConfiguration) -> [String] { rc.partitionStatePaths }

    static func hasTable(_ db: SQLiteConnection) throws -> Bool {
        try db.queryOne("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'") != nil
    }

    /// The files that have an index (read-only connections). Empty: no worker wrote one yet.
    private func readable() throws -> [SQLiteConnection] {
        var out: [SQLiteConnection] = []
        for p in paths where FileManager.default.fileExists(atPath: p) {
            let db = try SQLiteConnection(path: p, busyTimeoutMS: 5_000, readOnly: true)
            if try DLQIndex.hasTable(db) { out.append(db) }
        }
        return out
    }

    /// Letters the index holds (copies counted), or nil when no state file has an index.
    func count() async throws -> Int? {
        try await thread.run { [self] in
            let dbs = try readable()
            guard !dbs.isEmpty else { return nil }
            return try dbs.reduce(0) { n, db in n + Int(try db.queryOne("SELECT COALESCE(SUM(copies), 0) FROM dead_letters")?.int(0) ?? 0) }
        }
    }

    /// The letters that match, oldest dead letter first, each copy once (as the queue shows them).
    func letters(
        merchant: String?, type: String?, customer: String?, sinceMS: Int64?, fingerprint: String? = nil, limit: Int? = nil
    ) async throws -> [LetterSummary] {
        try await thread.run { [self] in
            var clauses: [String] = []
            var args: [SQLValue] = []
            if let merchant { clauses.append("merchant_id = ?"); args.append(.text(merchant)) }
            if let type { clauses.append("type = ?"); args.append(.text(type)) }
            if let customer { clauses.append("customer_id = ?"); args.append(.text(customer)) }
            if let sinceMS { clauses.append("first_failed_at_ms >= ?"); args.append(.int(sinceMS)) }
            if let fingerprint { clauses.append("fingerprint = ?"); args.append(.text(fingerprint)) }
            let sql = """
                SELECT event_id, type, merchant_id, customer_id, attempts, first_failed_at, error, error_class, fingerprint,
                       fingerprint_text, copies, dead_lettered_at_ms
                FROM dead_letters \(clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND "))
                ORDER BY dead_lettered_at_ms, rowid \(limit.map { "LIMIT \($0)" } ?? "")
                """
            var rows: [(Int64, LetterSummary)] = []
            for db in try readable() {
                for r in try db.query(sql, args) {
                    let cls = r.string(7) ?? "Error"
                    let text = r.string(9) ?? cls
                    let normalized = text == cls ? "" : String(text.dropFirst(cls.count + 2))
                    let l = LetterSummary(
                        id: r.string(0) ?? "?", type: r.string(1), merchant: r.string(2), customer: r.string(3),
                        attempts: r.int(4).map { Int($0) }, firstFailedAt: r.string(5), error: r.string(6) ?? "",
                        fingerprint: ErrorFingerprint(errorClass: cls, normalized: normalized, id: r.string(8) ?? ""))
                    for _ in 0..<max(1, Int(r.int(10) ?? 1)) { rows.append((r.int(11) ?? 0, l)) }
                }
            }
            if paths.count > 1 { rows.sort { $0.0 < $1.0 } }
            let out = rows.map(\.1)
            return limit.map { Array(out.prefix($0)) } ?? out
        }
    }

    /// Removes letters that left the queue (replayed, edited, purged) from every partition's index.
    func remove(_ ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await thread.run { [self] in
            for p in paths where FileManager.default.fileExists(atPath: p) {
                let db = try SQLiteConnection(path: p, busyTimeoutMS: 10_000)
                guard try DLQIndex.hasTable(db) else { continue }
                try db.transaction { _ = try DeadLetterIndex.remove(ids, db: db) }
            }
        }
    }

    /// Makes the index what a complete read of the queue found (`letters`, read under the lock
    /// from `readStartedMS` on): rows indexed before the read whose letter was not in the queue
    /// go; letters the index lacked (the broker dead-lettered them, or an index write was lost)
    /// are added to their partition's file. Rows the worker wrote since the read began are kept.
    /// Returns (removed, added).
    @discardableResult
    func reconcile(with letters: [DeadLetter], readStartedMS: Int64) async throws -> (removed: Int, added: Int) {
        let topo = worker.topology
        var byID: [String: (DeadLetter, Int)] = [:]
        var order: [String] = []
        for l in letters {
            if let e = byID[l.id] { byID[l.id] = (e.0, e.1 + 1) } else { byID[l.id] = (l, 1); order.append(l.id) }
        }
        let name = worker.worker
        let items = order.map { id -> (Int, DeadLetterIndex.Summary) in
            let (l, copies) = byID[id]!
            let deathMS = l.deaths.first.flatMap { d -> Int64? in
                if case .timestamp(let ts)? = d["time"] { return Int64(ts) * 1000 }
                return nil
            }
            let s = DeadLetterIndex.Summary(
                eventID: l.id, type: l.type, merchant: l.merchant, customer: l.customer, error: l.error, worker: name,
                queue: topo.dlq, firstFailedAt: l.firstFailedAt, deadLetteredAtMS: deathMS ?? readStartedMS,
                attempts: l.attempts, copies: copies)
            return (l.sourcePartition(topo) ?? 0, s)
        }
        let present = Set(order)
        return try await thread.run { [self] in
            var removed = 0
            var added = 0
            var known: [String: (file: Int, atMS: Int64)] = [:]
            var dbs: [SQLiteConnection?] = []
            for (i, p) in paths.enumerated() {
                guard FileManager.default.fileExists(atPath: p) else { dbs.append(nil); continue }
                let db = try SQLiteConnection(path: p, busyTimeoutMS: 10_000)
                guard try DLQIndex.hasTable(db) else { dbs.append(nil); continue }
                dbs.append(db)
                for r in try db.query("SELECT event_id, dead_lettered_at_ms FROM dead_letters") {
                    if let id = r.string(0) { known[id] = (i, r.int(1) ?? 0) }
                }
            }
            guard let fallback = dbs.firstIndex(where: { $0 != nil }) else { return (0, 0) }
            for (i, db) in dbs.enumerated() {
                guard let db else { continue }
                try db.transaction {
                    let gone = known.filter { $0.value.file == i && !present.contains($0.key) && $0.value.atMS < readStartedMS }.map(\.key)
                    removed += try DeadLetterIndex.remove(gone, db: db)
                    var rows: [DeadLetterIndex.Summary] = []
                    for (p, s) in items {
                        var s = s
                        if let k = known[s.eventID] {
                            guard k.file == i else { continue }
                            s.deadLetteredAtMS = k.atMS
                        } else {
                            let home = p < dbs.count && dbs[p] != nil ? p : fallback
                            guard home == i else { continue }
                            added += 1
                        }
                        rows.append(s)
                    }
                    try DeadLetterIndex.put(rows, db: db)
                }
            }
            return (removed, added)
        }
    }
}
