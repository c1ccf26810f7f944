import Foundation

/// Group commit for a local file writer: each `submit` waits until its item is written, and the
/// items that arrive while one group is being written form the next group, written together (one
/// fsync or syncfs for all) on the writer's own thread, never on the cooperative pool.
///
/// `write` gets a group in arrival order and answers one error (or nil) per item.
public final class WriteGroups<Item: Sendable>: @unchecked Sendable {
    public typealias Write = @Sendable (_ items: [Item]) -> [(any Error)?]

    struct Pending: Sendable {
        let item: Item
        let done: CheckedContinuation<Void, any Error>
    }

    private let thread: BlockingThread
    private let write: Write
    private let queue = Locked<(pending: [Pending], flushing: Bool)>(([], false))

    public init(name: String, write: @escaping Write) {
        thread = BlockingThread(name: name)
        self.write = write
    }

    deinit { thread.shutdown() }

    /// Returns once `item` is written; throws what `write` answered for it.
    public func submit(_ item: Item) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let lead = queue.withLock { q -> Bool in
                q.pending.append(Pending(item: item, done: c))
                if q.flushing { return false }
                q.flushing = true
                return true
            }
            if lead { thread.submit { self.flush() } }
        }
    }

    private func flush() {
        let group = queue.withLock { q -> [Pending] in
            let g = q.pending
            q.pending.removeAll()
            if g.isEmpty { q.flushing = false }
            return g
        }
        if group.isEmpty { return }
        let errors = write(group.map(\.item))
        for (i, p) in group.enumerated() {
            if let e = i < errors.count ? errors[i] : nil { p.done.resume(throwing: e) } else { p.done.resume() }
        }
        thread.submit { self.flush() }
    }
}
