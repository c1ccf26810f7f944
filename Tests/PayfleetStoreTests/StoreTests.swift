import Foundation
import PayfleetStore
import Testing

struct StoreTests {
    func tempPath() -> String { NSTemporaryDirectory() + "store-\(UUID().uuidString)/state.sqlite" }

    @Test func migrationsRunOnceAndInOrder() async throws {
        let path = tempPath()
        let m = [Migration("t.1", "CREATE TABLE a (x INTEGER)"), Migration("t.2", "ALTER TABLE a ADD COLUMN y TEXT")]
        _ = try await Store(path: path, migrations: m)
        let again = try await Store(path: path, migrations: m + [Migration("t.3", "CREATE TABLE b (z INTEGER)")])
        let ids = try await again.withConnection { db in try db.query("SELECT id FROM schema_migrations ORDER BY rowid").compactMap { $0.string(0) } }
        #expect(ids == ["runtime.1", "store.processed_ms", "t.1", "t.2", "t.3"])
    }

    @Test("Instances opening one new file at once (a partition and its standby) migrate it once")
    func concurrentOpenersMigrateOnce() async throws {
        for _ in 0..<10 {
            let path = tempPath()
            let m = (1...8).map { Migration("t.\($0)", "CREATE TABLE t\($0) (x INTEGER)") }
            let stores = try await withThrowingTaskGroup(of: Store.self) { group in
                for _ in 0..<4 { group.addTask { try await Store(path: path, migrations: m) } }
                return try await group.reduce(into: [Store]()) { $0.append($1) }
            }
            let n = try await stores[0].withConnection { db in try db.queryOne("SELECT COUNT(*) FROM schema_migrations")?.int(0) }
            #expect(n == 10)
        }
    }

    @Test func walAndFullSynchronous() async throws {
        let s = try await Store(path: tempPath())
        let (mode, sync) = try await s.withConnection { db in
            (try db.queryOne("PRAGMA journal_mode")!.string(0)!, try db.queryOne("PRAGMA synchronous")!.int(0)!)
        }
        #expect(mode == "wal")
        #expect(sync == 2)  // FULL
    }

    @Test("reclaimJournalSpace folds the WAL into the database and truncates it to 0 bytes; the rows stay")
    func reclaimTruncatesTheLog() async throws {
        let path = tempPath()
        let s = try await Store(path: path, migrations: [Migration("t.1", "CREATE TABLE a (x INTEGER, pad BLOB)")])
        for i in 0..<50 {
            _ = try await s.write { db in try db.execute("INSERT INTO a VALUES (?, zeroblob(4000))", [.int(Int64(i))]) }
        }
        func walSize() throws -> Int { (try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? -1 }
        #expect(try walSize() > 50 * 4_000)
        #expect(await s.reclaimJournalSpace())
        #expect(try walSize() == 0)
        let n = try await s.withConnection { db in try db.queryOne("SELECT COUNT(*) FROM a")?.int(0) }
        #expect(n == 50)
    }

    @Test func processedIdsAndPruning() async throws {
        let s = try await Store(path: tempPath())
        let old = Date(timeIntervalSinceNow: -40 * 86_400)
        let inserted = try await s.write { db in
            [try db.markProcessed("evt_old", at: old), try db.markProcessed("evt_new"), try db.markProcessed("evt_new")]
        }
        #expect(inserted == [true, true, false])
        let pruned = try await s.pruneProcessed(olderThan: 35 * 86_400)
        #expect(pruned == 1)
        let (oldThere, newThere) = try await s.withConnection { db in (try db.isProcessed("evt_old"), try db.isProcessed("evt_new")) }
        #expect(!oldThere)
        #expect(newThere)
    }

    @Test func aFailingSavepointUndoesOnlyItsPart() async throws {
        let s = try await Store(path: tempPath(), migrations: [Migration("t.1", "CREATE TABLE a (x INTEGER NOT NULL)")])
        try await s.write { db in
            _ = try db.savepoint { try db.execute("INSERT INTO a VALUES (1)") }
            _ = try? db.savepoint { try db.execute("INSERT INTO a VALUES (2)"); try db.execute("INSERT INTO a VALUES (NULL)") }
            _ = try db.savepoint { try db.execute("INSERT INTO a VALUES (3)") }
        }
        let xs = try await s.withConnection { db in try db.query("SELECT x FROM a ORDER BY x").compactMap { $0.int(0) } }
        #expect(xs == [1, 3])
    }

    @Test func aThrowingTransactionLeavesNothing() async throws {
        let s = try await Store(path: tempPath(), migrations: [Migration("t.1", "CREATE TABLE a (x INTEGER)")])
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await s.write { db in
                try db.execute("INSERT INTO a VALUES (1)")
                throw Boom()
            }
        }
        let n = try await s.withConnection { db in try db.queryOne("SELECT COUNT(*) FROM a")!.int(0)! }
        #expect(n == 0)
    }

    @Test func constraintErrorsCarrySQLiteCodes() async throws {
        let s = try await Store(path: tempPath(), migrations: [Migration("t.1", "CREATE TABLE a (x INTEGER PRIMARY KEY)")])
        do {
            try await s.write { db in
                try db.execute("INSERT INTO a VALUES (1)")
                try db.execute("INSERT INTO a VALUES (1)")
            }
            Issue.record("duplicate key accepted")
        } catch let e as SQLiteError {
            #expect(e.isConstraint)
            #expect(e.description.contains("UNIQUE"))
        }
    }
}
