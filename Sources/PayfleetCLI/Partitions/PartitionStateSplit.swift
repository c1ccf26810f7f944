import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore

/// Where each table's rows go when a worker's partitions change (`payfleet partitions resize`).
///
/// - `keyed`: business state of one partition key (the value the worker's consistent-hash
///   exchange hashes: the merchant id for merchant-partitioned workers). The rows of a key go to
///   the one new file whose partition owns the key, in their old order (`renumber`: an
///   AUTOINCREMENT column given new values, in the old order, because rows of several old files
///   meet in one new file).
/// - `everywhere`: the dedupe window (`processed`) and the effect journal. They are keyed by
///   event id, not by partition key, and an event id names one event: a new file that holds ids
///   of events it will never see loses nothing, while a file that missed the id of an event it
///   will see again (a redelivery after the resize) would apply it twice. So every new file gets
///   the union of the old files' rows; pruning by `processed_retention` shrinks them again.
/// - `schema`: `schema_migrations` and SQLite's own tables, recreated with the schema.
/// - `rebuilt`: the dead-letter index (`dead_letters`, runtime.3): created empty. The resize
///   refuses a non-empty DLQ, so the index has nothing to carry; a stale row would only be a
///   divergence the CLI repairs from the queue (see `DLQIndex`).
///
/// A table without a rule stops the resize before anything changes: the command cannot know
/// where its rows belong.
public struct PartitionStateRules: Sendable {
    public enum Rule: Sendable, Equatable {
        case keyed(column: String, renumber: String?)
        case everywhere
        case schema
        case rebuilt
    }

    public let section: String
    public let partitionKey: WorkerTopology.PartitionKey
    public let tables: [String: Rule]

    static let runtime: [String: Rule] = [
        "processed": .everywhere, "effect_journal": .everywhere, "schema_migrations": .schema, "sqlite_sequence": .schema,
        "dead_letters": .rebuilt,
    ]

    /// The workers whose state the command can split: the demo worker (`applied`) and
    /// settlement-aggregator (every table has its merchant). ledger-writer (customer account
    /// names shared across a merchant's transactions, manual entries), crm-sync and
    /// receipt-sender (customer keys that are not one column) have no rules yet.
    public static func forWorker(_ section: String) -> PartitionStateRules? {
        switch section {
        case "demo-worker":
            return PartitionStateRules(
                section: section, partitionKey: .merchant,
                tables: runtime.merging(["applied": .keyed(column: "merchant_id", renumber: "seq")]) { a, _ in a })
        case "settlement-aggregator":
            var t = runtime
            for table in ["settlement_events", "settlement_totals", "settlement_days", "settlement_adjustments",
                          "settlement_outbox", "settlement_pending_fees"]
            {
                t[table] = .keyed(column: "merchant_id", renumber: nil)
            }
            return PartitionStateRules(section: section, partitionKey: .merchant, tables: t)
        default:
            return nil
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

    /// The keys each old file holds: key → old partition. A key in two files is an error (its
    /// state would be split; the resize refuses to pick one).
    func keys() throws -> [String: Int] {
        var owner: [String: Int] = [:]
        for (p, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for (table, rule) in rules.tables.sorted(by: { $0.key < $1.key }) {
                guard case .keyed(let column, _) = rule, present.contains(table) else { continue }
                for row in try db.query("SELECT DISTINCT \(column) FROM \(table)") {
                    guard let k = row.string(0) else { continue }
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
                    let srcTables = try db.query("SELECT name FROM src.sqlite_master WHERE type = 'table'").compactMap { $0.string(0) }
                    for table in srcTables {
                        guard let rule = rules.tables[table], mainTables.contains(table) || rule == .schema else {
                            throw CLIFailure("\(old) has table '\(table)' that \(template) has not: migrate every partition file with this version first")
                        }
                        let cols = try db.query("PRAGMA src.table_info(\(table))").compactMap { $0.string(1) }
                        let mine = try db.query("PRAGMA main.table_info(\(table))").compactMap { $0.string(1) }
                        if rule != .schema, Set(cols) != Set(mine) {
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
                            try db.execute("INSERT OR IGNORE INTO main.\(table) (\(list)) SELECT \(list) FROM src.\(table)")
                        case .keyed(let column, let renumber):
                            let list = cols.filter { $0 != renumber }.map { "\"\($0)\"" }.joined(separator: ", ")
                            let order = renumber.map { " ORDER BY \"\($0)\"" } ?? ""
                            try db.execute(
                                "INSERT INTO main.\(table) (\(list)) SELECT \(list) FROM src.\(table) WHERE \"\(column)\" IN (SELECT k FROM temp.owned)\(order)")
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
            var counts: [String: Int] = [:]
            var keys = Set<String>()
            for (table, rule) in rules.tables where mainTables.contains(table) {
                guard case .keyed(let column, _) = rule else { continue }
                counts[table] = Int(try db.queryOne("SELECT count(*) FROM \(table)")?.int(0) ?? 0)
                for r in try db.query("SELECT DISTINCT \(column) FROM \(table)") { if let k = r.string(0) { keys.insert(k) } }
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

    /// Rows per keyed table over all old files.
    func oldRows() throws -> [String: Int] {
        var total: [String: Int] = [:]
        for (_, path) in existingOld {
            let db = try SQLiteConnection(path: path, readOnly: true)
            let present = Set(try Self.tables(db))
            for (table, rule) in rules.tables where present.contains(table) {
                guard case .keyed = rule else { continue }
                total[table, default: 0] += Int(try db.queryOne("SELECT count(*) FROM \(table)")?.int(0) ?? 0)
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
