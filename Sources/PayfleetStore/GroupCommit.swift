import PayfleetCore

/// Group commit: jobs that arrive while a transaction is being committed share the next
/// `BEGIN IMMEDIATE … COMMIT` (and its one fsync) instead of one each. Each job runs in its own
/// savepoint, so a failing job fails only its caller; when the transaction as a whole fails,
/// every job in it gets that error. A caller's `submit` returns once its job is on disk.
///
/// Every `Store` has one (`Store.groupWrite`), run on the store's own thread: ingest's outbox
/// (accepted requests), receipt-sender's delivery journal (intents) and the runtime's effect
/// outcomes all share it, so whatever of them completes at the same time shares one fsync.
public final class GroupCommit: Sendable {
    struct Entry: Sendable {
        /// Runs the job in its savepoint and keeps its result (on the store thread).
        let run: @Sendable (SQLiteConnection) -> Void
        /// Hands the kept result over (nil) or the transaction's error.
        let finish: @Sendable ((any Error)?) -> Void
    }

    struct State {
        var pending: [Entry] = []
        var flushing = false
    }

    let thread: BlockingThread
    let connection: SQLiteConnectionBox
    let state = Locked(State())
    /// Transactions committed and jobs in them (for benchmarks and tests).
    let counts = Locked((transactions: 0, jobs: 0))

    init(thread: BlockingThread, connection: SQLiteConnectionBox) {
        self.thread = thread
        self.connection = connection
    }

    /// Runs `job` in the next group transaction; its result once committed, or its error.
    public func submit<T: Sendable>(_ job: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            let result = Locked<Result<T, any Error>?>(nil)
            let entry = Entry(
                run: { db in
                    let r = Result<T, any Error> { try db.savepoint { try job(db) } }
                    result.withLock { $0 = r }
                },
                finish: { error in
                    if let error { c.resume(throwing: error) } else { c.resume(with: result.current!) }
                })
            let lead = state.withLock { s -> Bool in
                s.pending.append(entry)
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            // One drain per burst, on the store's thread; it ends when nothing is left to commit.
            if lead { thread.submit { self.drain() } }
        }
    }

    /// Transactions committed so far and the jobs they held.
    public var committed: (transactions: Int, jobs: Int) { counts.current }

    /// One group transaction of everything pending; then, if more arrived meanwhile, the next
    /// one is queued behind the store's other work (a batch transaction, a read) rather than run
    /// at once, so a steady stream of jobs never starves them.
    private func drain() {
        let db = connection.value
        let batch = state.withLock { s -> [Entry] in
            let b = s.pending
            s.pending.removeAll()
            if b.isEmpty { s.flushing = false }
            return b
        }
        if batch.isEmpty { return }
        do {
            try db.transaction { for e in batch { e.run(db) } }
            counts.withLock { $0.transactions += 1; $0.jobs += batch.count }
            for e in batch { e.finish(nil) }
        } catch {
            for e in batch { e.finish(error) }
        }
        thread.submit { self.drain() }
    }
}
