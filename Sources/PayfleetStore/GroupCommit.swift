import PayfleetCore

/// Group commit: jobs that arrive while a transaction is being committed share the next
/// `BEGIN IMMEDIATE … COMMIT` (and its one fsync) instead of one each. Each job runs in its own
/// savepoint, so a failing job fails only its caller; when the transaction as a whole fails,
/// every job in it gets that error. A caller's `submit` returns once its job is on disk.
///
/// Used by ingest's outbox (accepted requests) and receipt-sender's delivery journal (intents).
public final class GroupCommit<Output: Sendable>: Sendable {
    public typealias Job = @Sendable (SQLiteConnection) throws -> Output
    typealias Waiter = CheckedContinuation<Result<Output, any Error>, Never>

    struct State {
        var pending: [(Job, Waiter)] = []
        var flushing = false
    }

    let store: Store
    let state = Locked(State())

    public init(store: Store) { self.store = store }

    /// Runs `job` in the next group transaction; its result once committed, or its error.
    public func submit(_ job: @escaping Job) async throws -> Output {
        let result = await withCheckedContinuation { (c: Waiter) in
            let lead = state.withLock { s -> Bool in
                s.pending.append((job, c))
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            // One short-lived drain task per burst; it ends when nothing is left to commit.
            if lead { Task { await self.drain() } }
        }
        return try result.get()
    }

    private func drain() async {
        while true {
            let batch = state.withLock { s -> [(Job, Waiter)] in
                let b = s.pending
                s.pending.removeAll()
                if b.isEmpty { s.flushing = false }
                return b
            }
            if batch.isEmpty { return }
            let jobs = batch.map(\.0)
            do {
                let results = try await store.write { db in
                    jobs.map { job in Result<Output, any Error> { try db.savepoint { try job(db) } } }
                }
                for (i, r) in results.enumerated() { batch[i].1.resume(returning: r) }
            } catch {
                for (_, w) in batch { w.resume(returning: .failure(error)) }
            }
        }
    }
}
