import Foundation
import Logging
import PayfleetCore
import PayfleetWorker
import PayfleetStore

/// What one `payfleet settlement reconcile` run found, as stored and as the settlement report
/// and `payfleet_reconciliation_mismatches` show it.
public struct ReconciliationRun: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        /// `missing_ours`, `missing_provider`, `amount_mismatch`, `fee_mismatch`, `payout`,
        /// `balance`, `expected`, `unexplained`, `missing_event`, `posted`.
        public var section: String
        public var status: String
        public var kind: String?
        public var reference: String
        public var currency: String
        public var ours: Int64?
        public var provider: Int64?
        public var detail: String

        public init(section: String, status: String, kind: String? = nil, reference: String, currency: String,
                    ours: Int64?, provider: Int64?, detail: String = "") {
            self.section = section
            self.status = status
            self.kind = kind
            self.reference = reference
            self.currency = currency
            self.ours = ours
            self.provider = provider
            self.detail = detail
        }
    }

    /// The kinds of mismatch counted in `payfleet_reconciliation_mismatches{kind}`.
    public static let mismatchKinds = ["missing_ours", "missing_provider", "amount", "fee", "payout", "balance"]

    public var runID: Int64 = 0
    public var provider: String
    /// The merchant reconciled (`*` when the run covered every merchant of the provider).
    public var merchantID: String
    /// The report date (`--date`).
    public var date: String
    public var createdAt: String
    /// `name sha256:<hex>` per file read.
    public var files: [String]
    public var matched: Int
    public var expected: Int
    /// Mismatches per kind (`mismatchKinds`).
    public var mismatches: [String: Int]
    /// Items worth keeping: every mismatch, payout, balance, expected and unexplained line, posted event.
    public var items: [Item]

    public var totalMismatches: Int { mismatches.values.reduce(0, +) }
    public var allMatch: Bool { totalMismatches == 0 }

    public init(provider: String, merchantID: String, date: String, createdAt: String, files: [String], matched: Int,
                expected: Int, mismatches: [String: Int], items: [Item]) {
        self.provider = provider
        self.merchantID = merchantID
        self.date = date
        self.createdAt = createdAt
        self.files = files
        self.matched = matched
        self.expected = expected
        self.mismatches = mismatches
        self.items = items
    }

    public func jsonObject() -> [String: Any] {
        [
            "run_id": runID, "provider": provider, "merchant_id": merchantID, "date": date, "created_at": createdAt,
            "files": files, "matched": matched, "expected": expected, "mismatches": mismatches,
            "total_mismatches": totalMismatches, "all_match": allMatch,
            "items": items.map { i -> [String: Any] in
                [
                    "section": i.section, "status": i.status, "kind": i.kind.map { $0 as Any } ?? NSNull(),
                    "reference": i.reference, "currency": i.currency, "ours": i.ours.map { $0 as Any } ?? NSNull(),
                    "provider": i.provider.map { $0 as Any } ?? NSNull(), "detail": i.detail,
                ]
            },
        ]
    }
}

/// The reconciliation store, `reconciliation.sqlite` beside the settlement state: one row per
/// run and its items. Written by `payfleet settlement reconcile`, read by `settlement report`
/// and by settlement-aggregator for `payfleet_reconciliation_mismatches`. Holds references and
/// amounts only (no customer data: the provider files' e-mail and name columns are not kept).
public enum ReconciliationStore {
    public static let fileName = "reconciliation.sqlite"

    static let migrations: [Migration] = [
        Migration(
            "reconciliation.1",
            """
            CREATE TABLE reconciliation_runs (
                run_id INTEGER PRIMARY KEY AUTOINCREMENT,
                provider TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                date TEXT NOT NULL CHECK (date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
                created_at TEXT NOT NULL,
                files TEXT NOT NULL,
                matched INTEGER NOT NULL,
                expected INTEGER NOT NULL,
                missing_ours INTEGER NOT NULL,
                missing_provider INTEGER NOT NULL,
                amount INTEGER NOT NULL,
                fee INTEGER NOT NULL,
                payout INTEGER NOT NULL,
                balance INTEGER NOT NULL
            );
            CREATE INDEX reconciliation_runs_latest ON reconciliation_runs(provider, merchant_id, run_id);
            CREATE INDEX reconciliation_runs_date ON reconciliation_runs(date);
            CREATE TABLE reconciliation_items (
                run_id INTEGER NOT NULL REFERENCES reconciliation_runs(run_id),
                section TEXT NOT NULL,
                status TEXT NOT NULL,
                kind TEXT,
                reference TEXT NOT NULL,
                currency TEXT NOT NULL,
                ours INTEGER CHECK (ours IS NULL OR typeof(ours) = 'integer'),
                provider INTEGER CHECK (provider IS NULL OR typeof(provider) = 'integer'),
                detail TEXT NOT NULL
            );
            CREATE INDEX reconciliation_items_run ON reconciliation_items(run_id);
            """)
    ]

    /// Appends `run` (one transaction, fsync'd); returns its id.
    public static func record(_ run: ReconciliationRun, path: String, logger: Logger) async throws -> Int64 {
        let store = try await Store(path: path, migrations: migrations, durability: .full, logger: logger)
        return try await store.write { db in
            do {
                let m = run.mismatches
                _ = try db.execute(
                    """
                    INSERT INTO reconciliation_runs (provider, merchant_id, date, created_at, files, matched, expected,
                        missing_ours, missing_provider, amount, fee, payout, balance)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    [.text(run.provider), .text(run.merchantID), .text(run.date), .text(run.createdAt),
                     .text(run.files.joined(separator: "\n")), SQLValue(run.matched), SQLValue(run.expected),
                     SQLValue(m["missing_ours"] ?? 0), SQLValue(m["missing_provider"] ?? 0), SQLValue(m["amount"] ?? 0),
                     SQLValue(m["fee"] ?? 0), SQLValue(m["payout"] ?? 0), SQLValue(m["balance"] ?? 0)])
                let id = db.lastInsertRowID
                for i in run.items {
                    _ = try db.execute(
                        """
                        INSERT INTO reconciliation_items (run_id, section, status, kind, reference, currency, ours, provider, detail)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [.int(id), .text(i.section), .text(i.status), SQLValue(i.kind), .text(i.reference),
                         .text(i.currency), SQLValue(i.ours), SQLValue(i.provider), .text(i.detail)])
                }
                return id
            }
        }
    }

    static func run(_ r: SQLRow) -> ReconciliationRun {
        var run = ReconciliationRun(
            provider: r.string(1) ?? "", merchantID: r.string(2) ?? "", date: r.string(3) ?? "",
            createdAt: r.string(4) ?? "", files: (r.string(5) ?? "").split(separator: "\n").map(String.init),
            matched: Int(r.int(6) ?? 0), expected: Int(r.int(7) ?? 0), mismatches: [:], items: [])
        for (i, k) in ReconciliationRun.mismatchKinds.enumerated() { run.mismatches[k] = Int(r.int(8 + i) ?? 0) }
        run.runID = r.int(0) ?? 0
        return run
    }

    static let runColumns =
        "run_id, provider, merchant_id, date, created_at, files, matched, expected, missing_ours, missing_provider, amount, fee, payout, balance"

    static func items(_ db: SQLiteConnection, _ runID: Int64) throws -> [ReconciliationRun.Item] {
        try db.query(
            "SELECT section, status, kind, reference, currency, ours, provider, detail FROM reconciliation_items WHERE run_id = ? ORDER BY rowid",
            [.int(runID)]
        ).map {
            .init(section: $0.string(0) ?? "", status: $0.string(1) ?? "", kind: $0.string(2), reference: $0.string(3) ?? "",
                  currency: $0.string(4) ?? "", ours: $0.int(5), provider: $0.int(6), detail: $0.string(7) ?? "")
        }
    }

    /// The latest run per provider and merchant for report date `date` (optionally one
    /// merchant's, which includes runs over every merchant), with their items. An absent store
    /// has no runs.
    public static func latest(path: String, date: String, merchant: String? = nil) throws -> [ReconciliationRun] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        do {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let rows = try db.query(
                """
                SELECT \(runColumns) FROM reconciliation_runs r
                WHERE date = ?1 AND (?2 IS NULL OR merchant_id = ?2 OR merchant_id = '*')
                  AND run_id = (SELECT MAX(run_id) FROM reconciliation_runs x
                                WHERE x.date = r.date AND x.provider = r.provider AND x.merchant_id = r.merchant_id)
                ORDER BY provider, merchant_id
                """, [.text(date), SQLValue(merchant)])
            return try rows.map { r in
                var run = Self.run(r)
                run.items = try items(db, run.runID)
                return run
            }
        } catch let e as SettlementError {
            throw e
        } catch {
            throw SettlementError("cannot read \(path): \(error)")
        }
    }

    /// The latest run per provider and merchant, whatever its date (the metric's view), without items.
    public static func latestPerMerchant(_ db: SQLiteConnection) throws -> [ReconciliationRun] {
        try db.query(
            """
            SELECT \(runColumns) FROM reconciliation_runs r
            WHERE run_id = (SELECT MAX(run_id) FROM reconciliation_runs x WHERE x.provider = r.provider AND x.merchant_id = r.merchant_id)
            ORDER BY provider, merchant_id
            """
        ).map(run)
    }

    /// The store for a long-running reader (its own thread; creates the file if absent).
    public static func open(path: String, logger: Logger) async throws -> Store {
        try await Store(path: path, migrations: migrations, durability: .full, logger: logger)
    }
}
