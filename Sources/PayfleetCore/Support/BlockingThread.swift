import Foundation

/// A dedicated OS thread that runs blocking C calls (rabbitmq-c, SQLite) one at a time, so
/// they never occupy Swift's cooperative thread pool. Async callers are bridged with
/// continuations.
public final class BlockingThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var stopped = false
    private var thread: Thread?
    public let name: String

    public init(name: String) {
        self.name = name
        // The thread keeps its object alive until `shutdown()` lets the loop end: an owner that
        // drops it (a connector built for a config that is then refused) never leaves the
        // thread running on freed memory. Owners call `shutdown()` when done.
        let t = Thread { self.loop() }
        t.name = name
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty && stopped {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job() }
        }
    }

    /// Enqueues a job without waiting for it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` on the thread and returns its result to the async caller.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
            submit {
                do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
            }
        }
    }

    /// Finishes queued jobs, then lets the thread exit.
    public func shutdown() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    deinit { shutdown() }
}
