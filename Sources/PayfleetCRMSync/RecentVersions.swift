/// The newest version of each customer state the CRM is known to have, for the customers seen
/// lately: two generations of at most `generation` keys. A write goes to the current
/// generation; when it is full it becomes the previous one and the one before is dropped. A key
/// not found is seeded again from `crm_balances.pushed_version` (a lower bound that is exact once
/// its outcome is committed), so forgetting is safe for any key whose outcome is committed.
///
/// Why a key with a push still uncommitted is never forgotten: its push wrote it into the
/// current generation, and it is dropped only after a whole generation of other keys was written
/// after it. Keys are written by the batches in hand (the one finishing and the one being
/// applied: at most 2 × `batch_size` events, each naming its customer's states, one per
/// currency); a generation of 20 × `batch_size` (at least 10,000) outlasts them, so by then that
/// push's batch has finished and its outcome is committed. Before this, the map kept every
/// customer state this process ever pushed: crm-sync's memory grew with the number of customers.
struct RecentVersions: Sendable {
    let generation: Int
    private var current: [String: Int64] = [:]
    private var previous: [String: Int64] = [:]

    init(generation: Int) {
        precondition(generation > 0)
        self.generation = generation
    }

    init(batchSize: Int) { self.init(generation: Swift.max(10_000, 20 * batchSize)) }

    subscript(key: String) -> Int64? { current[key] ?? previous[key] }

    /// Keys held (at most 2 × `generation`).
    var count: Int { current.count + previous.count }

    /// The key's version becomes at least `version`.
    mutating func raise(_ key: String, to version: Int64) {
        let value = Swift.max(self[key] ?? 0, version)
        if current.updateValue(value, forKey: key) == nil, current.count >= generation {
            previous = current
            current = [:]
        }
    }
}
