import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// Where each table's rows go when a worker's partitions change (`payfleet partitions resize`).
///
/// - `keyed`: business state of one partition key (the value the worker's consistent-hash
///   exchange hashes: the merchant id for merchant-partitioned workers, `PaymentEvent.customerKey`
///   for customer-partitioned ones). The rows of a key go to the one new file whose partition
///   owns the key, in their old order (`renumber`: an INTEGER PRIMARY KEY or AUTOINCREMENT column
///   given new values, in the old order, because rows of several old files meet in one new file;
///   nothing may reference such a column). The key of a row is a column (`.column`), an SQL
///   expression over the row (`.expression`, for a key that is not one column), or the key of
///   the row of another keyed table it references (`.parent`: a posting has its transaction's
///   merchant). A row whose key is NULL (a posting without its transaction) stops the resize.
/// - `everywhere`: tables keyed by event id: the dedupe window (`processed`), the effect journal,
///   receipt-sender's receipts and delivery journal. An event id names one event: a new file
///   that holds ids of events it will never see loses nothing, while a file that missed the id of
///   an event it will see again (a redelivery after the resize) would apply or send it twice. So
///   every new file gets the union of the old files' rows. A row in two old files (a copy left by
///   an earlier resize, progressed only in the file that owned its key) keeps the copy that is
///   furthest on by `newest` (compared left to right: attempts, then updated_at…), never a
///   stale `intent` over a `done`.
/// - `schema`: `schema_migrations` and SQLite's own tables, recreated with the schema.
/// - `rebuilt`: the dead-letter index (`dead_letters`, runtime.3): created empty. The resize
///   refuses a non-empty DLQ, so the index has nothing to carry; a stale row would only be a
///   divergence the CLI repairs from the queue (see `DLQIndex`).
///
/// `couplings`: state that ties two keys together inside one file (crm-sync: a refund without a
/// customer, keyed by its payment id, counted in its customer's balance). Such keys can only be
/// split if the new layout puts them in one file; otherwise the resize refuses, naming the table
/// and the keys, because either side alone would be wrong. `invariants` must hold in every new
/// file, `conserved` sums over all new files must equal the old ones.
///
/// A table without a rule stops the resize before anything changes: the command cannot know
/// where its rows belong.
public struct PartitionStateRules: Sendable {
    public enum Key: Sendable, Equatable {
        case column(String)
        /// SQL over one row; `$.` stands for the row's table (`$.customer_id`).
        case expression(String)
        /// The key of the row of `table` whose `parentColumn` equals this row's `column`.
        case parent(column: String, table: String, parentColumn: String)
    }

    public enum Rule: Sendable, Equatable {
        case keyed(Key, renumber: String?)
        case everywhere
        case schema
        case rebuilt
    }

    /// Keys that must stay in one file: `sql` returns (group, key) rows from one file; all keys
    /// of a group must have one new owner.
    public struct Coupling: Sendable {
        public let table: String
        public let why: String
        public let sql: String
    }

    /// `sql` must return no row in any new file; its first column names the offender.
    public struct Invariant: Sendable {
        public let what: String
        public let sql: String
    }

    /// Sums that the split must keep: `SUM(value)` per `group` over all files, old and new alike.
    public struct Conserved: Sendable {
        public let table: String
        public let group: [String]
        public let values: [String]
    }

    public let section: String
    public let partitionKey: WorkerTopology.PartitionKey
    public let tables: [String: Rule]
    public var couplings: [Coupling] = []
    public var invariants: [Invariant] = []
    public var conserved: [Conserved] = []
    /// For an `everywhere` table: how to tell the copy that is furthest on (SQL over the row,
    /// `$.` for the row; compared left to right, greater wins).
    public var newest: [String: [String]] = [:]

    init(section: String, partitionKey: WorkerTopology.PartitionKey, tables: [String: Rule]) {
        self.section = section
        self.partitionKey = partitionKey
        self.tables = tables
        newest = Self.runtimeNewest
    }

    static let runtime: [String: Rule] = [
        "processed": .everywhere, "effect_journal": .everywhere,
        "schema_migrations": .schema, "sqlite_sequence": .schema, "dead_letters": .rebuilt,
    ]

    /// The key crm-sync's exchange hashes for a recorded event (`PaymentEvent.customerKey`: the
    /// customer id the event carried, else its payment id, else its merchant). `own_customer`
    /// says whether `customer_id` came with the event (1) or through a payment/invoice link (0).
    static let runtimeNewest: [String: [String]] = ["effect_journal": ["$.attempts", "$.updated_at", "$.state = 'done'"]]

    static let crmEventKey =
        "CASE WHEN $.own_customer = 1 THEN $.customer_id ELSE COALESCE($.payment_id, $.merchant_id) END"

    /// The workers whose state the command can split (docs/operations.md, "Change the number of
    /// partitions"):
    /// - demo-worker (`applied`, by merchant, `seq` renumbered);
    /// - settlement-aggregator: every table has its merchant;
    /// - ledger-writer: every table has its merchant but `postings` (renumbered), `transaction_checks`
    ///   and `manual_entries`, which follow their transaction's merchant; every new file is checked
    ///   balanced (each transaction's postings sum to zero per currency) and the sum per account
    ///   and currency over the new files must equal the old one;
    /// - crm-sync: customer state by customer id; `crm_events` by the key each event was routed
    ///   by; refused when a customerless event (keyed by its payment id or merchant) and the
    ///   customer it reached through a link, or two keys sharing a payment, invoice or refund id
    ///   in one file, would go to different new files (`couplings`);
    /// - receipt-sender: `receipts` and `receipt_deliveries` are per event and do not store the
    ///   event's customer key: everywhere, like `processed`, so no receipt is sent twice.
    public static func forWorker(_ section: String) -> PartitionStateRules? {
        // Each worker's partition key is the one its exchange hashes (WorkerIdentity).
        guard let worker = WorkerIdentity(rawValue: section) else { return nil }
        switch worker {
        case .demoWorker:
            return PartitionStateRules(
                section: section, partitionKey: worker.partitionKey,
                tables: runtime.merging(["applied": .keyed(.column("merchant_id"), renumber: "seq")]) { a, _ in a })
        case .settlementAggregator:
            var t = runtime
            for table in ["settlement_events", "settlement_totals", "settlement_days", "settlement_adjustments",
                          "settlement_outbox", "settlement_pending_fees"]
            {
                t[table] = .keyed(.column("merchant_id"), renumber: nil)
            }
            return PartitionStateRules(section: section, partitionKey: worker.partitionKey, tables: t)
        case .ledgerWriter:
            var t = runtime
            for table in ["transactions", "ledger_events", "customer_links", "unresolved_receivables", "booked_originals",
                          "reversals", "customer_accounts"]
            {
                t[table] = .keyed(.column("merchant_id"), renumber: nil)
            }
            let byTransaction = Key.parent(column: "txid", table: "transactions", parentColumn: "txid")
            t["postings"] = .keyed(byTransaction, renumber: "id")
            t["transaction_checks"] = .keyed(byTransaction, renumber: nil)
            t["manual_entries"] = .keyed(byTransaction, renumber: nil)
            var r = PartitionStateRules(section: section, partitionKey: worker.partitionKey, tables: t)
            r.invariants = [
                Invariant(
                    what: "a transaction whose postings do not sum to zero per currency",
                    sql: "SELECT txid FROM postings GROUP BY txid, currency HAVING SUM(amount) <> 0 LIMIT 1"),
                Invariant(
                    what: "a transaction whose postings do not match its check row",
                    sql: "SELECT c.txid FROM transaction_checks c WHERE c.postings <> (SELECT COUNT(*) FROM postings p WHERE p.txid = c.txid) LIMIT 1"),
                Invariant(
                    what: "a transaction without its check row",
                    sql: "SELECT t.txid FROM transactions t WHERE NOT EXISTS (SELECT 1 FROM transaction_checks c WHERE c.txid = t.txid) LIMIT 1"),
                Invariant(
                    what: "a manual entry reversing a transaction not in its file",
                    sql: "SELECT m.txid FROM manual_entries m WHERE m.reverses IS NOT NULL AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.txid = m.reverses) LIMIT 1"),
            ]
            r.conserved = [Conserved(table: "postings", group: ["account", "currency"], values: ["amount"])]
            return r
        case .crmSync:
            var t = runtime
            t["crm_events"] = .keyed(.expression(crmEventKey), renumber: nil)
            for table in ["crm_links", "crm_customers", "crm_balances"] { t[table] = .keyed(.column("customer_id"), renumber: nil) }
            var r = PartitionStateRules(section: section, partitionKey: worker.partitionKey, tables: t)
            let key = crmEventKey.replacingOccurrences(of: "$.", with: "e.")
            let us = "char(31)"
            // Events sharing a customer, payment, invoice or refund under different keys.
            let shared: [(tag: String, column: String, why: String)] = [
                ("c", "customer_id", "an event without a customer counted for the customer it reached through a link"),
                ("p", "payment_id", "events of one payment (its refunds, reversal, disputes) under different keys"),
                ("i", "invoice_id", "events of one invoice under different keys"),
                ("r", "refund_id", "a refund and its failure under different keys"),
            ]
            r.couplings = shared.map { c in
                Coupling(
                    table: "crm_events", why: c.why,
                    sql: "SELECT '\(c.tag)' || \(us) || e.merchant_id || \(us) || e.\(c.column), \(key) FROM crm_events e WHERE e.\(c.column) IS NOT NULL")
            } + [
                Coupling(
                    table: "crm_links", why: "a payment or invoice link and the events of that payment or invoice under another key",
                    sql: "SELECT substr(l.kind, 1, 1) || \(us) || l.merchant_id || \(us) || l.ref, l.customer_id FROM crm_links l"),
            ]
            r.conserved = [
                Conserved(table: "crm_balances", group: ["merchant_id", "currency"], values: ["outstanding", "paid", "refunded", "disputed"])
            ]
            return r
        case .receiptSender:
            var t = runtime
            t["receipts"] = .everywhere
            t["receipt_deliveries"] = .everywhere
            var r = PartitionStateRules(section: section, partitionKey: worker.partitionKey, tables: t)
            r.newest["receipts"] = ["$.status = 'sent'", "$.updated_at"]
            r.newest["receipt_deliveries"] = ["$.attempts", "$.state = 'sent'", "$.unknown_outcomes", "$.updated_at"]
            return r
        }
    }

    /// SQL for the key of a row of `table` aliased `alias` in `schema` (nil: not keyed).
    func keySQL(_ table: String, schema: String, alias: String) -> String? {
        guard case .keyed(let key, _) = tables[table] else { return nil }
        switch key {
        case .column(let c): return "\(alias).\"\(c)\""
        case .expression(let e): return e.replacingOccurrences(of: "$.", with: "\(alias).")
        case .parent(let column, let parent, let parentColumn):
            let p = alias + "p"
            guard let inner = keySQL(parent, schema: schema, alias: p) else { return nil }
            return "(SELECT \(inner) FROM \(schema).\"\(parent)\" AS \(p) WHERE \(p).\"\(parentColumn)\" = \(alias).\"\(column)\")"
        }
    }
}

/// The file side of a resize: reads the old partition files, builds the new ones in a work
/// directory, checks them, and swaps them in. Synchronous SQLite: run it on a `BlockingThread`.
struct PartitionStateSplit: Sendable {
    let rules: PartitionStateRules
    /// Old partition N's file at index N (missing files: partitions that never consumed).
    let oldFiles: [String]
    /// New partition N's final path at index N.
    let newFiles: [String]
    let workDir: String

    var stagingDir: String { workDir + "/new" }
    var backupDir: String { workDir + "/old" }
    func staging(_ i: Int) -> String { stagingDir + "/" + (newFiles[i] as NSString).lastPathComponent }

    var existingOld: [(partition: Int, path: String)] {
        oldFiles.enumerated().filter { FileManager.default.fileExists(atPath: $0.element) }.map { ($0.offset, $0.element) }
    }

    /// Tables of a file (name, CREATE statement) without SQLite's internal ones.
    static func tables(_ db: SQLiteConnection) throws -> [String] {
        try db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid").compactMap { $0.string(0) }
    }

    /// Every table of every old file has a rule (else the error names the table and file).
    func checkTables() throws {
        for (_, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            for t in try Self.tables(db) where rules.tables[t] == nil {
                throw CLIFailure(
                    "table '\(t)' in \(path) has no partition rule: the resize cannot tell which partition its rows belong to; nothing was changed")
            }
        }
    }

    /// The keyed tables of the rules, sorted.
    var keyedTables: [String] {
        rules.tables.filter { if case .keyed = $0.value { true } else { false } }.map(\.key).sorted()
    }

    /// The keys each old file holds: key → old partition. A key in two files is an error (its
    /// state would be split; the resize refuses to pick one), and so is a row without a key.
    func keys() throws -> [String: Int] {
        var owner: [String: Int] = [:]
        for (p, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for table in keyedTables where present.contains(table) {
                guard let key = rules.keySQL(table, schema: "main", alias: "t") else { continue }
                for row in try db.query("SELECT \(key) AS k, count(*) FROM \"\(table)\" AS t GROUP BY k") {
                    guard let k = row.string(0) else {
                        var why = "no \(rules.partitionKey.rawValue) key"
                        if case .keyed(.parent(let column, let parent, let parentColumn), _)? = rules.tables[table] {
                            why = "no \(parent) row with their \(column) (\(parent).\(parentColumn))"
                        }
                        throw CLIFailure(
                            "\(row.int(1) ?? 0) rows of table '\(table)' in \(path) have \(why): the resize cannot tell which partition they belong to; nothing was changed")
                    }
                    if let other = owner[k], other != p {
                        throw CLIFailure(
                            "\(rules.partitionKey.rawValue) '\(TerminalText.safe(k))' has state in two partition files (\(oldFiles[other]) and \(path)); "
                                + "merge it by hand before resizing; nothing was changed")
                    }
                    owner[k] = p
                }
            }
        }
        return owner
    }

    /// Keys that share state in one file must have one new owner (`PartitionStateRules.couplings`).
    func checkCouplings(newOwner: [String: Int]) throws {
        for (_, path) in existingOld where !rules.couplings.isEmpty {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for c in rules.couplings where present.contains(c.table) {
                var groups: [String: [String: Int]] = [:]  // group → key → new owner
                for row in try db.query(c.sql) {
                    guard let g = row.string(0), let k = row.string(1) else { continue }
                    guard let o = newOwner[k] else {
                        throw CLIFailure("\(c.table) in \(path): \(c.why) names \(rules.partitionKey.rawValue) '\(TerminalText.safe(k))' that no table holds; nothing was changed")
                    }
                    groups[g, default: [:]][k] = o
                }
                let split = groups.filter { Set($0.value.values).count > 1 }
                if let (_, keys) = split.min(by: { $0.key < $1.key }) {
                    let placed = keys.sorted { $0.key < $1.key }.prefix(4)
                        .map { "'\(TerminalText.safe($0.key))' to partition \($0.value)" }.joined(separator: ", ")
                    throw CLIFailure(
                        "table '\(c.table)' in \(path) holds \(c.why): the new layout of \(newFiles.count) partitions sends \(placed) "
                            + "(\(split.count) such group\(split.count == 1 ? "" : "s")); their state cannot be split between files. "
                            + "Try another --to (docs/operations.md, \"Change the number of partitions\"); nothing was changed")
                }
            }
        }
    }

    /// Folds each old file's WAL into the file (the workers are stopped) so a file can be
    /// moved on its own.
    func checkpointOld() throws {
        for (_, path) in existingOld {
            let db = try SQLiteConnection(path: path)
            let r = try db.queryOne("PRAGMA wal_checkpoint(TRUNCATE)")
            if r?.int(0) == 1 {
                throw CLIFailure("\(path) is still in use (its WAL could not be checkpointed): is an instance still running?")
            }
        }
    }

    struct Built: Sendable {
        /// Rows per keyed table in each new file, and the keys each new file holds.
        var rows: [[String: Int]]
        var keys: [Int]
        var processed: [Int]
    }

    /// Builds every new file in the staging directory; `owner` maps each key to its new partition.
    func build(newOwner: [String: Int]) throws -> Built {
        try checkCouplings(newOwner: newOwner)
        let fm = FileManager.default
        try? fm.removeItem(atPath: stagingDir)
        try fm.createDirectory(atPath: stagingDir, withIntermediateDirectories: true)
        guard let template = existingOld.first?.path else { return Built(rows: [], keys: [], processed: []) }
        let schemaDB = try SQLiteConnection(path: template, readOnly: true)
        let objects = try schemaDB.query(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
        let tableSQL = objects.filter { $0.string(0) == "table" }.compactMap { $0.string(2) }
        let laterSQL = objects.filter { $0.string(0) != "table" }.compactMap { $0.string(2) }
        var built = Built(rows: [], keys: [], processed: [])
        for i in newFiles.indices {
            let path = staging(i)
            let db = try SQLiteConnection(path: path)
            try db.executeScript("PRAGMA foreign_keys=OFF")
            try db.transaction { for sql in tableSQL { try db.executeScript(sql) } }
            try db.executeScript("CREATE TEMP TABLE owned (k TEXT PRIMARY KEY) WITHOUT ROWID")
            try db.transaction {
                for (k, p) in newOwner where p == i { try db.execute("INSERT INTO temp.owned (k) VALUES (?)", [.text(k)]) }
            }
            let mainTables = Set(try Self.tables(db))
            for (_, old) in existingOld {
                try db.execute("ATTACH DATABASE ? AS src", [.text(old)])
                try db.transaction {
                    let srcObjects = try db.query("SELECT name, sql FROM src.sqlite_master WHERE type = 'table'")
                    let srcTables = srcObjects.compactMap { $0.string(0) }
                    // Rowid tables keep their old row order (`ORDER BY rowid`; FleetTrace lists an
                    // event's transactions by rowid); WITHOUT ROWID ones are ordered by their key.
                    let withoutRowid = Set(srcObjects.filter { ($0.string(1) ?? "").uppercased().contains("WITHOUT ROWID") }.compactMap { $0.string(0) })
                    for table in srcTables {
                        guard let rule = rules.tables[table], mainTables.contains(table) || rule == .schema else {
                            throw CLIFailure("\(old) has table '\(table)' that \(template) has not: migrate every partition file with this version first")
                        }
                        let cols = try db.query("PRAGMA src.table_info(\"\(table)\")").compactMap { $0.string(1) }
                        let mine = try db.query("PRAGMA main.table_info(\"\(table)\")")
                        if rule != .schema, Set(cols) != Set(mine.compactMap { $0.string(1) }) {
                            throw CLIFailure("\(old) has other columns in '\(table)' than \(template): migrate every partition file with this version first")
                        }
                        switch rule {
                        case .schema:
                            if table == "schema_migrations" {
                                try db.execute("INSERT OR IGNORE INTO main.schema_migrations SELECT * FROM src.schema_migrations")
                            }
                        case .rebuilt:
                            break
                        case .everywhere:
                            let list = cols.map { "\"\($0)\"" }.joined(separator: ", ")
                            // PRAGMA table_info: column 5 is the column's position in the primary key.
                            let pk = mine.filter { ($0.int(5) ?? 0) > 0 }.sorted { ($0.int(5) ?? 0) < ($1.int(5) ?? 0) }.compactMap { $0.string(1) }
                            if let newest = rules.newest[table], !newest.isEmpty, !pk.isEmpty {
                                let set = cols.filter { !pk.contains($0) }.map { "\"\($0)\" = excluded.\"\($0)\"" }.joined(separator: ", ")
                                let theirs = newest.map { $0.replacingOccurrences(of: "$.", with: "excluded.") }.joined(separator: ", ")
                                let ours = newest.map { $0.replacingOccurrences(of: "$.", with: "\"\(table)\".") }.joined(separator: ", ")
                                try db.execute(
                                    "INSERT INTO main.\"\(table)\" (\(list)) SELECT \(list) FROM src.\"\(table)\" WHERE true "
                                        + "ON CONFLICT (\(pk.map { "\"\($0)\"" }.joined(separator: ", "))) DO UPDATE SET \(set) WHERE (\(theirs)) > (\(ours))")
                            } else {
                                try db.execute("INSERT OR IGNORE INTO main.\"\(table)\" (\(list)) SELECT \(list) FROM src.\"\(table)\"")
                            }
                        case .keyed(_, let renumber):
                            guard let key = rules.keySQL(table, schema: "src", alias: "t") else { continue }
                            let kept = cols.filter { $0 != renumber }
                            let list = kept.map { "\"\($0)\"" }.joined(separator: ", ")
                            let select = kept.map { "t.\"\($0)\"" }.joined(separator: ", ")
                            let order = renumber.map { " ORDER BY t.\"\($0)\"" } ?? (withoutRowid.contains(table) ? "" : " ORDER BY t.rowid")
                            try db.execute(
                                "INSERT INTO main.\"\(table)\" (\(list)) SELECT \(select) FROM src.\"\(table)\" AS t WHERE \(key) IN (SELECT k FROM temp.owned)\(order)")
                        }
                    }
                }
                try db.execute("DETACH DATABASE src")
            }
            try db.transaction { for sql in laterSQL { try db.executeScript(sql) } }
            if let bad = try db.queryOne("PRAGMA foreign_key_check") {
                throw CLIFailure("the new file for partition \(i) fails its foreign keys (table \(bad.string(0) ?? "?")); nothing was changed")
            }
            guard try db.queryOne("PRAGMA quick_check")?.string(0) == "ok" else {
                throw CLIFailure("the new file for partition \(i) fails SQLite's quick_check; nothing was changed")
            }
            for inv in rules.invariants {
                if let r = try db.queryOne(inv.sql) {
                    throw CLIFailure("internal: the new file for partition \(i) has \(inv.what) (\(TerminalText.safe(r.string(0) ?? "?"))); nothing was changed")
                }
            }
            var counts: [String: Int] = [:]
            var keys = Set<String>()
            for table in keyedTables where mainTables.contains(table) {
                guard let key = rules.keySQL(table, schema: "main", alias: "t") else { continue }
                counts[table] = Int(try db.queryOne("SELECT count(*) FROM \"\(table)\"")?.int(0) ?? 0)
                for r in try db.query("SELECT DISTINCT \(key) FROM \"\(table)\" AS t") {
                    guard let k = r.string(0) else { throw CLIFailure("internal: a row of '\(table)' lost its key in new partition \(i)") }
                    keys.insert(k)
                }
            }
            // Every key in this file is one it owns.
            if let stray = keys.first(where: { newOwner[$0] != i }) {
                throw CLIFailure("internal: key '\(TerminalText.safe(stray))' landed in new partition \(i) but belongs to \(newOwner[stray].map(String.init) ?? "none"); nothing was changed")
            }
            built.rows.append(counts)
            built.keys.append(keys.count)
            built.processed.append(Int(try db.queryOne("SELECT count(*) FROM processed")?.int(0) ?? 0))
            _ = try db.queryOne("PRAGMA wal_checkpoint(TRUNCATE)")
        }
        return built
    }

    /// `build`, then the checks that the new files together hold exactly the old state: every
    /// keyed row once, every processed id in each file, the conserved sums unchanged.
    func buildAndVerify(newOwner: [String: Int]) throws -> Built {
        let built = try build(newOwner: newOwner)
        for (table, n) in try oldRows() {
            let now = built.rows.reduce(0) { $0 + ($1[table] ?? 0) }
            if now != n { throw CLIFailure("internal: \(table) has \(now) rows in the new files and \(n) in the old ones") }
        }
        let processed = try oldProcessed()
        if let i = built.processed.firstIndex(where: { $0 != processed }) {
            throw CLIFailure("internal: new partition \(i) has \(built.processed[i]) processed ids of \(processed)")
        }
        let before = try sums(existingOld.map(\.path))
        let after = try sums(newFiles.indices.map(staging))
        if before != after {
            let wrong = Set(before.keys).union(after.keys).sorted().first { before[$0] != after[$0] } ?? "?"
            throw CLIFailure("internal: the sum \(TerminalText.safe(wrong)) is \(after[wrong] ?? []) in the new files and \(before[wrong] ?? []) in the old ones")
        }
        return built
    }

    /// The conserved sums over `paths`: "table(group values)" → sums.
    func sums(_ paths: [String]) throws -> [String: [Int64]] {
        var out: [String: [Int64]] = [:]
        for path in paths {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for c in rules.conserved where present.contains(c.table) {
                let group = c.group.map { "\"\($0)\"" }.joined(separator: ", ")
                let values = c.values.map { "SUM(\"\($0)\")" }.joined(separator: ", ")
                for r in try db.query("SELECT \(group), \(values) FROM \"\(c.table)\" GROUP BY \(group)") {
                    let name = c.table + "(" + c.group.indices.map { r.string($0) ?? "NULL" }.joined(separator: ", ") + ")"
                    let v = c.values.indices.map { r.int(c.group.count + $0) ?? 0 }
                    var acc = out[name] ?? Array(repeating: 0, count: v.count)
                    for j in v.indices {
                        let (sum, over) = acc[j].addingReportingOverflow(v[j])
                        if over { throw CLIFailure("\(name) overflows 64 bits when summed over the files") }
                        acc[j] = sum
                    }
                    out[name] = acc
                }
            }
        }
        return out
    }

    /// Rows per keyed table over all old files.
    func oldRows() throws -> [String: Int] {
        var total: [String: Int] = [:]
        for (_, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for table in keyedTables where present.contains(table) {
                total[table, default: 0] += Int(try db.queryOne("SELECT count(*) FROM \"\(table)\"")?.int(0) ?? 0)
            }
        }
        return total
    }

    /// Distinct processed ids over all old files.
    func oldProcessed() throws -> Int {
        var ids = Set<String>()
        for (_, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            guard try Self.tables(db).contains("processed") else { continue }
            for r in try db.query("SELECT event_id FROM processed") { if let s = r.string(0) { ids.insert(s) } }
        }
        return ids.count
    }

    /// Moves the old files into `<work>/old` and the new ones into place (renames on one file
    /// system; the WAL of each old file was checkpointed into it).
    func install() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: backupDir, withIntermediateDirectories: true)
        for (p, path) in existingOld {
            try fm.moveItem(atPath: path, toPath: backupDir + "/" + (path as NSString).lastPathComponent)
            for suffix in ["-wal", "-shm"] { try? fm.removeItem(atPath: path + suffix) }
            _ = p
        }
        for i in newFiles.indices {
            let dir = (newFiles[i] as NSString).deletingLastPathComponent
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for suffix in ["-wal", "-shm"] { try? fm.removeItem(atPath: staging(i) + suffix) }
            try fm.moveItem(atPath: staging(i), toPath: newFiles[i])
        }
        try? fm.removeItem(atPath: stagingDir)
    }
}

/// Which partition the broker routes each key to with `partitions` partition queues: a
/// throw-away consistent-hash exchange with the same hash header and `partitions` exclusive
/// queues bound in order with equal weight (as the worker's own exchange), one message per key.
/// The broker's own hashing answers, so nothing depends on reimplementing it.
enum PartitionProbe {
    static func owners(
        keys: [String], partitions: Int, header: String, stem: String, amqp: AMQPConfiguration
    ) async throws -> [String: Int] {
        if partitions == 1 { return Dictionary(uniqueKeysWithValues: keys.map { ($0, 0) }) }
        let session: AMQPSession
        do { session = try await AMQPSession.connect(amqp) } catch {
            throw CLIFailure("cannot connect to the broker at \(amqp): \(error)")
        }
        let tag = String(UUID().uuidString.prefix(8)).lowercased()
        let exchange = "\(stem).resize.probe.\(tag)"
        let queues = (0..<partitions).map { "\(exchange).\($0)" }
        do {
            try await session.declare { d in
                try d.exchange(ExchangeSpec(name: exchange, type: "x-consistent-hash", arguments: ["hash-header": .string(header)]))
                for q in queues {
                    try d.exclusiveQueue(q)
                    try d.bind(BindingSpec(source: exchange, destination: q, destinationType: .queue, routingKey: "1"))
                }
            }
            for k in keys {
                try await session.publish(AMQPOutgoing(
                    exchange: exchange, routingKey: "",
                    message: AMQPMessage(body: Array(k.utf8), messageID: "probe", headers: [header: .string(k)], persistent: false),
                    mandatory: true))
            }
            var owner: [String: Int] = [:]
            for (i, q) in queues.enumerated() {
                while let m = try await session.get(queue: q) {
                    owner[String(decoding: m.message.body, as: UTF8.self)] = i
                }
            }
            _ = try? await session.declare { try $0.delete(exchange: exchange) }
            await session.close()
            guard owner.count == keys.count else {
                throw CLIFailure("the partition probe placed \(owner.count) of \(keys.count) keys; nothing was changed")
            }
            return owner
        } catch {
            await session.close()
            // The failure may have closed the channel: a fresh connection removes the exchange.
            if let s = try? await AMQPSession.connect(amqp) {
                _ = try? await s.declare { try $0.delete(exchange: exchange) }
                await s.close()
            }
            throw error
        }
    }
}
