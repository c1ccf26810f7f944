import Foundation
import PayfleetCore
@testable import PayfleetStore
import Testing

/// The store's group commit with the store's thread held, so that every job below is pending
/// at once and lands in one transaction.
@Suite struct GroupCommitTests {
    func store() async throws -> Store {
        try await Store(
            path: NSTemporaryDirectory() + "group-\(UUID().uuidString)/state.sqlite",
            migrations: [Migration("t.1", "CREATE TABLE a (x INTEGER NOT NULL)")])
    }

    /// Holds the store's thread, submits `jobs` (each a Task), waits until all are pending,
    /// releases the thread and returns each job's result.
    func together(_ s: Store, _ jobs: [@Sendable () async throws -> Void]) async -> [Result<Void, any Error>] {
        let release = DispatchSemaphore(value: 0)
        let held = Locked(false)
        let hold = Task { try await s.withConnection { _ in held.withLock { $0 = true }; release.wait() } }
        while !held.current { try? await Task.sleep(for: .milliseconds(1)) }
        let tasks = jobs.map { job in Task { () -> Result<Void, any Error> in do { try await job(); return .success(()) } catch { return .failure(error) } } }
        while s.groupCommit.state.withLock({ $0.pending.count }) < jobs.count { try? await Task.sleep(for: .milliseconds(1)) }
        release.signal()
        _ = try? await hold.value
        var out: [Result<Void, any Error>] = []
        for t in tasks { out.append(await t.value) }
        return out
    }

    func rows(_ s: Store) async throws -> [Int64] {
        try await s.withConnection { db in try db.query("SELECT x FROM a ORDER BY x").compactMap { $0.int(0) } }
    }

    @Test("Jobs pending together share one transaction (one commit, one fsync)")
    func pendingJobsShareATransaction() async throws {
        let s = try await store()
        let before = s.groupCommit.committed
        let results = await together(s, [
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (1)") } },
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (2)") } },
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (3)") } },
        ])
        #expect(results.allSatisfy { if case .success = $0 { true } else { false } })
        let after = s.groupCommit.committed
        #expect(after.transactions - before.transactions == 1)
        #expect(after.jobs - before.jobs == 3)
        #expect(try await rows(s) == [1, 2, 3])
    }

    @Test("A job that throws is undone alone (its savepoint); the others in its transaction commit")
    func aFailingJobIsUndoneAlone() async throws {
        let s = try await store()
        let results = await together(s, [
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (1)") } },
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (2)"); try db.execute("INSERT INTO a VALUES (NULL)") } },
            { _ = try await s.groupWrite { db in try db.execute("INSERT INTO a VALUES (3)") } },
        ])
        #expect(results.map { if case .success = $0 { true } else { false } } == [true, false, true])
        #expect(try await rows(s) == [1, 3])
    }
}
