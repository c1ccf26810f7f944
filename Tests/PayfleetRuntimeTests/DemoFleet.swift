import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetTestKit

/// The runtime's demonstration worker under test (`payfleet-demo-worker`, table `applied`).
typealias DemoFleet = WorkerProcess

extension WorkerProcess {
    static func with(
        prefix: String, retryDelays: [String] = ["200ms", "400ms", "800ms"], deliveryLimit: Int = 20, batchSize: Int = 200,
        _ body: (WorkerProcess) async throws -> Void
    ) async throws {
        var o = Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: prefix,
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.retryDelays = retryDelays
        o.deliveryLimit = deliveryLimit
        o.batchSize = batchSize
        try await with(o, body)
    }

    /// (rows in `applied`, distinct event ids, sum of amounts)
    func applied() throws -> (rows: Int, distinct: Int, sum: Int64) {
        guard let db = try database(),
            let r = try? db.queryOne("SELECT COUNT(*), COUNT(DISTINCT event_id), COALESCE(SUM(amount), 0) FROM applied")
        else { return (0, 0, 0) }
        return (Int(r.int(0)!), Int(r.int(1)!), r.int(2)!)
    }

    /// True once at least `rows` (or `distinct`) effects exist and the main queue is empty.
    func drained(rows: Int = 0, distinct: Int = 0) async throws -> Bool {
        let a = try applied()
        guard a.rows >= rows, a.distinct >= distinct else { return false }
        return try await depth(queue) == 0
    }

    func appliedOrder() throws -> [String] {
        guard let db = try database() else { return [] }
        return try db.query("SELECT event_id FROM applied ORDER BY seq").compactMap { $0.string(0) }
    }
}
