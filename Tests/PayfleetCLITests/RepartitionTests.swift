import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// `payfleet partitions resize` against the private broker: the demo worker (table `applied`,
/// partitioned by merchant), ingest's real outbox and relay in this process, the CLI and the
/// workers as processes.
@Suite("Repartitioning", .serialized)
struct RepartitionTests {
    static func options(prefix: String) -> WorkerProcess.Options {
        var o = WorkerProcess.Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: prefix,
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.partitions = 2
        o.adminPort = 0
        o.batchSize = 50
        return o
    }

    /// Ingest's outbox and relay on `<state>/ingest.sqlite`, where the CLI looks for it.
    struct Ingest {
        let outbox: Outbox
        let relay: Task<Void, Error>?

        static func start(_ fleet: WorkerProcess, relay: Bool = true) async throws -> Ingest {
            let outbox = try await Outbox(path: fleet.dir + "/state/ingest.sqlite", logger: Logger(label: "test-ingest"))
            guard relay else { return Ingest(outbox: outbox, relay: nil) }
            let r = OutboxRelay(outbox: outbox, amqp: fleet.amqp, batchSize: 100, metrics: IngestMetrics(), logger: Logger(label: "test-relay"))
            return Ingest(outbox: outbox, relay: Task { try await r.run() })
        }

        func accept(_ events: [PaymentEvent]) async throws {
            _ = try await outbox.accept(events.map { .event($0) }, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        }

        func stop() { relay?.cancel() }
    }

    /// (event id, merchant) per partition file, in the order applied.
    static func applied(_ fleet: WorkerProcess, partitions: Int) throws -> [[(id: String, merchant: String)]] {
        try (0..<partitions).map { p in
            let path = fleet.dir + "/state/\(fleet.name).p\(p).sqlite"
            guard FileManager.default.fileExists(atPath: path) else { return [] }
            let db = try SQLiteConnection(path: path, readOnly: true)
            // Before the worker's migrations ran the file has no table yet.
            let rows = (try? db.query("SELECT event_id, merchant_id FROM applied ORDER BY seq")) ?? []
            return rows.map { ($0.string(0) ?? "", $0.string(1) ?? "") }
        }
    }

    @Test("2 → 4 partitions while events keep arriving: each applied once, per-key order kept, each key's state only in its new file")
    func twoToFour() async throws {
        try await WorkerProcess.with(Self.options(prefix: "rsz")) { fleet in
            try await fleet.declare()
            let old = [try fleet.startInstance(partition: 0), try fleet.startInstance(partition: 1)]
            let ingest = try await Ingest.start(fleet)
            defer { ingest.stop() }
            let merchants = (0..<40).map { "m_rsz\($0)" }
            // One producer accepts events into ingest's outbox in order (about 1,000/s), before,
            // during and after the resize; `sent` is the order, the index a per-key sequence number.
            let sent = Locked<[PaymentEvent]>([])
            let stop = Locked(false)
            let producer = Task {
                var n = 0
                while !stop.withLock({ $0 }) {
                    let chunk = (n..<n + 20).map { i in EventFactory.payment(i, prefix: fleet.name, merchant: merchants[(i * 7 + i / 40) % 40]) }
                    try await ingest.accept(chunk)
                    sent.withLock { $0 += chunk }
                    n += 20
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            // Before: the 2-partition layout at work.
            let warm = try await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                try Self.applied(fleet, partitions: 2).reduce(0) { $0 + $1.count } >= 1_500
            }
            #expect(warm)
            let sentBefore = sent.withLock { $0.count }
            let started = ContinuousClock.now
            let run = try await fleet.cli([
                "partitions", "resize", "demo-worker", "--to", "4", "--json",
                "--stop-command", "kill -TERM \(old[0].pid) \(old[1].pid)", "--drain-timeout", "60s", "--stop-timeout", "30s",
            ])
            let took = ContinuousClock.now - started
            let sentDuring = sent.withLock { $0.count } - sentBefore
            #expect(run.status == 0, "resize failed: \(run.stderr)")
            let figures = run.json as? [String: Any] ?? [:]
            print("resize figures: \(figures) (command \(took), \(sentDuring) events accepted meanwhile)\n\(run.stderr)")
            for c in old {
                let status = await c.wait(timeout: .seconds(10))
                #expect(status != nil, "old instance stopped")
            }
            // The operator's part: partitions: 4 in the config, instances 0..3.
            let config = try String(contentsOfFile: fleet.configPath, encoding: .utf8)
            try config.replacingOccurrences(of: "partitions: 2", with: "partitions: 4")
                .write(toFile: fleet.configPath, atomically: true, encoding: .utf8)
            let new = try (0..<4).map { try fleet.startInstance(partition: $0) }
            defer { for c in new { c.signal(SIGKILL) } }
            try await Task.sleep(for: .seconds(3))
            stop.withLock { $0 = true }
            try await producer.value
            let events = sent.withLock { $0 }
            let index = Dictionary(uniqueKeysWithValues: events.enumerated().map { ($1.id, $0) })
            // A redelivery of events applied before the resize (a publisher's retry after a lost
            // confirm): through the new layout to their key's new partition, which must know them.
            let again = Array(events[0..<sentBefore].filter { _ in Bool.random() }.prefix(300))
            let pub = fleet.publisher()
            defer { pub.close() }
            #expect(await pub.waitUntilConnected(timeout: .seconds(30)))
            let out = again.map { e in
                var headers: [String: AMQPFieldValue] = [:]
                for (k, v) in Topology.partitionHeaders(for: e) { headers[k] = .string(v) }
                return AMQPOutgoing(
                    exchange: fleet.topology.partitionExchange, routingKey: e.type.rawValue,
                    message: AMQPMessage(body: EventFactory.body(e), messageID: e.id, headers: headers))
            }
            let results = await pub.publish(batch: out)
            let published = results.filter { if case .success = $0 { true } else { false } }.count
            #expect(published == out.count, "redeliveries published")
            let done = try await eventually(timeout: .seconds(90), every: .milliseconds(250)) {
                let pending = try await ingest.outbox.pendingCount()
                return try Self.applied(fleet, partitions: 4).reduce(0) { $0 + $1.count } >= events.count && pending == 0
            }
            try await Task.sleep(for: .seconds(1))
            let files = try Self.applied(fleet, partitions: 4)
            let rows = files.flatMap { $0 }
            #expect(done, "applied \(files.map(\.count)) of \(events.count)")
            #expect(rows.count == events.count, "rows \(rows.count) for \(events.count) events sent (\(again.count) redelivered)")
            #expect(Set(rows.map(\.id)) == Set(events.map(\.id)), "every event sent applied, nothing else")
            // Each merchant in one file, in the order sent.
            var fileOf: [String: Int] = [:]
            var last: [String: Int] = [:]
            var outOfOrder = 0
            var twoFiles = 0
            for (p, list) in files.enumerated() {
                for r in list {
                    if let f = fileOf[r.merchant], f != p { twoFiles += 1 }
                    fileOf[r.merchant] = p
                    guard let i = index[r.id] else { continue }
                    if let l = last[r.merchant], l > i { outOfOrder += 1 }
                    last[r.merchant] = i
                }
            }
            #expect(twoFiles == 0, "merchants with rows in two files")
            #expect(outOfOrder == 0, "\(outOfOrder) events applied before an earlier one of their merchant")
            #expect(fileOf.count == merchants.count)
            // Keys moved to the new partitions with their history (rows applied before the resize).
            let movedWithHistory = merchants.filter { m in
                guard let f = fileOf[m], f >= 2 else { return false }
                return files[f].contains { $0.merchant == m && (index[$0.id] ?? .max) < sentBefore }
            }
            #expect(!movedWithHistory.isEmpty, "some merchants moved to partitions 2–3 with their state: \(fileOf)")
            #expect((figures["keys_moved"] as? Int ?? 0) == movedWithHistory.count)
            // The new layout alone is left, empty; the pause is gone; the old files are kept.
            for p in 0..<4 {
                #expect(try await fleet.depth(fleet.topology.queue(partition: p)) == 0)
                let topo = WorkerTopology(name: fleet.name, routingKeys: [], partitions: 4, retryDelaysMS: [200, 400, 800])
                for d in topo.retryDelaysMS { #expect(try await fleet.depth(topo.retryQueue(delayMS: d, partition: p)) == 0) }
            }
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(try await ingest.outbox.relayPause() == nil)
            let work = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/state").filter { $0.contains(".resize-2to4-") }
            #expect(work.count == 1)
            if let w = work.first {
                let kept = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/state/\(w)/old").sorted()
                #expect(kept == ["\(fleet.name).p0.sqlite", "\(fleet.name).p1.sqlite"])
            }
            print("resize run: \(events.count) events (\(sentBefore) before, \(sentDuring) during the command), \(again.count) redelivered, "
                + "rows per file \(files.map(\.count)), merchants per file \((0..<4).map { p in fileOf.values.filter { $0 == p }.count })")
            // Clean up the extra queues of partitions 2–3 (the fleet knows only 2).
            let s = try await AMQPSession.connect(fleet.amqp)
            let topo = WorkerTopology(name: fleet.name, routingKeys: [], partitions: 4, retryDelaysMS: [200, 400, 800])
            _ = try? await s.declare { d in for q in topo.declarations.queues.map(\.name) { try d.delete(queue: q) } }
            await s.close()
        }
    }

    @Test("refused with a clear error and nothing changed: DLQ not empty, relay not answering, a table without a rule, same count")
    func refusals() async throws {
        try await WorkerProcess.with(Self.options(prefix: "rszno")) { fleet in
            try await fleet.declare()
            // State files for both partitions (an instance creates its file at start).
            let w = [try fleet.startInstance(partition: 0), try fleet.startInstance(partition: 1)]
            let created = await eventually(timeout: .seconds(30)) {
                FileManager.default.fileExists(atPath: fleet.dbPath(partition: 0)) && FileManager.default.fileExists(atPath: fleet.dbPath(partition: 1))
            }
            #expect(created)
            for c in w { c.signal(SIGTERM) }
            for c in w { _ = await c.wait(timeout: .seconds(10)) }
            let ingest = try await Ingest.start(fleet, relay: false)

            let same = try await fleet.cli(["partitions", "resize", "demo-worker", "--to", "2"])
            #expect(same.status != 0 && same.stderr.contains("already has 2 partitions"), "\(same.stderr)")
            // A table the rules do not know: refused before anything is paused, naming the table.
            let stray = try SQLiteConnection(path: fleet.dbPath(partition: 0))
            try stray.executeScript("CREATE TABLE scratch (x TEXT)")
            let unknown = try await fleet.cli(["partitions", "resize", "demo-worker", "--to", "4"])
            #expect(unknown.status != 0 && unknown.stderr.contains("table 'scratch' in") && unknown.stderr.contains("has no partition rule"), "\(unknown.stderr)")
            #expect(try await ingest.outbox.relayPause() == nil)
            try stray.executeScript("DROP TABLE scratch")

            // Ingest's relay not running: the pause is never acknowledged, and is lifted again.
            let silent = try await fleet.cli(["partitions", "resize", "demo-worker", "--to", "4", "--pause-timeout", "1s"])
            #expect(silent.status != 0 && silent.stderr.contains("did not acknowledge the pause within 1s"), "\(silent.stderr)")
            #expect(try await ingest.outbox.relayPause() == nil)

            // A dead letter: refused before anything is paused.
            let s = try await AMQPSession.connect(fleet.amqp)
            try await s.publish(AMQPOutgoing(exchange: "", routingKey: fleet.topology.dlq, message: AMQPMessage(body: Array("{}".utf8), messageID: "x")))
            await s.close()
            let dlq = try await fleet.cli(["partitions", "resize", "demo-worker", "--to", "4"])
            #expect(dlq.status != 0 && dlq.stderr.contains("\(fleet.topology.dlq) holds 1 dead letter"), "\(dlq.stderr)")
            #expect(try await ingest.outbox.relayPause() == nil)
            _ = try await fleet.cli(["dlq", "purge", "demo-worker", "--all", "--yes-discard"])
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)

            // Nothing changed: the 2-partition layout and files as they were, no new queue, no work dir.
            for p in 0..<2 { #expect(try await fleet.depth(fleet.topology.queue(partition: p)) == 0) }
            let probe = try await AMQPSession.connect(fleet.amqp)
            let p2 = WorkerTopology(name: fleet.name, routingKeys: [], partitions: 4).queue(partition: 2)
            await #expect(throws: (any Error).self) { _ = try await probe.inspect(queue: p2) }
            await probe.close()
            let left = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/state").filter { $0.contains(".resize-") }
            #expect(left.isEmpty)
        }
    }

    @Test("refused while an instance keeps consuming: the pause is lifted and events flow again")
    func stillConsuming() async throws {
        try await WorkerProcess.with(Self.options(prefix: "rszbusy")) { fleet in
            try await fleet.declare()
            let w = [try fleet.startInstance(partition: 0), try fleet.startInstance(partition: 1)]
            defer { for c in w { c.signal(SIGKILL) } }
            let ingest = try await Ingest.start(fleet)
            defer { ingest.stop() }
            let first = (0..<100).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_busy\($0 % 8)") }
            try await ingest.accept(first)
            let hundred = try await eventually(timeout: .seconds(30)) { try Self.applied(fleet, partitions: 2).reduce(0) { $0 + $1.count } == 100 }
            #expect(hundred)
            let run = try await fleet.cli(["partitions", "resize", "demo-worker", "--to", "4", "--stop-timeout", "2s"])
            #expect(run.status != 0)
            #expect(run.stderr.contains("still consume after 2s"), "\(run.stderr)")
            #expect(run.stderr.contains("(1 consumer)") && run.stderr.contains("nothing was changed, the relay publishes again"), "\(run.stderr)")
            #expect(try await ingest.outbox.relayPause() == nil)
            let more = (100..<150).map { EventFactory.payment($0, prefix: fleet.name, merchant: "m_busy\($0 % 8)") }
            try await ingest.accept(more)
            let all = try await eventually(timeout: .seconds(30)) { try Self.applied(fleet, partitions: 2).reduce(0) { $0 + $1.count } == 150 }
            #expect(all)
            let left = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/state").filter { $0.contains(".resize-") }
            #expect(left.isEmpty)
        }
    }

    /// (merchant, account, currency) → balance over `paths`.
    static func ledgerBalances(_ paths: [String]) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        for path in paths where FileManager.default.fileExists(atPath: path) {
            let db = try SQLiteConnection(path: path, readOnly: true)
            for r in (try? db.query(
                "SELECT t.merchant_id, p.account, p.currency, SUM(p.amount) FROM postings p JOIN transactions t ON t.txid = p.txid GROUP BY 1, 2, 3")) ?? []
            {
                out["\(r.string(0) ?? "")|\(r.string(1) ?? "")|\(r.string(2) ?? "")", default: 0] += r.int(3) ?? 0
            }
        }
        return out
    }

    /// (event id, merchant) of ledger_events per partition file.
    static func ledgerEvents(_ fleet: WorkerProcess, partitions: Int) throws -> [[(id: String, merchant: String)]] {
        try (0..<partitions).map { p in
            let path = fleet.dir + "/state/\(fleet.name).p\(p).sqlite"
            guard FileManager.default.fileExists(atPath: path) else { return [] }
            let rows = (try? SQLiteConnection(path: path, readOnly: true).query("SELECT event_id, merchant_id FROM ledger_events")) ?? []
            return rows.map { ($0.string(0) ?? "", $0.string(1) ?? "") }
        }
    }

    @Test("ledger-writer 2 → 4 with the real command: each merchant's books in one file, every transaction balanced in its file, balances equal to one ledger of every event, redeliveries not booked twice")
    func ledgerTwoToFour() async throws {
        let merchants = (0..<10).map { "m_rszl\($0)" }
        var o = WorkerProcess.Options.worker("ledger-writer", prefix: "rszl")
        o.partitions = 2
        o.adminPort = 0
        o.batchSize = 100
        o.topLevelYAML = "merchants:\n" + merchants.map { "  - id: \($0)\n    timezone: UTC\n    currencies: [\(EventFactory.currencies.joined(separator: ", "))]\n" }.joined()
        o.sectionYAML = ["unknown_customer: Unidentified"]
        let started = ContinuousClock.now
        try await WorkerProcess.with(o) { fleet in
            try await fleet.declare()
            let old = [try fleet.startInstance(partition: 0), try fleet.startInstance(partition: 1)]
            let ingest = try await Ingest.start(fleet)
            defer { ingest.stop() }
            let types: [PaymentEvent.EventType] = [.paymentSucceeded, .paymentSucceeded, .paymentRefunded, .paymentFailed, .paymentDisputed]
            let all = (0..<600).map { EventFactory.payment($0, prefix: fleet.name, type: types[$0 % types.count], merchant: merchants[($0 * 3) % 10]) }
            let first = Array(all[0..<400])
            let second = Array(all[400...])
            try await ingest.accept(first)
            let booked = try await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                try Self.ledgerEvents(fleet, partitions: 2).reduce(0) { $0 + $1.count } == first.count
            }
            #expect(booked, "the 2-partition ledger booked the first events")
            let before = try Self.ledgerBalances((0..<2).map { fleet.dbPath(partition: $0) })
            let run = try await fleet.cli([
                "partitions", "resize", "ledger-writer", "--to", "4", "--json",
                "--stop-command", "kill -TERM \(old[0].pid) \(old[1].pid)", "--drain-timeout", "30s", "--stop-timeout", "30s",
            ])
            #expect(run.status == 0, "resize failed: \(run.stderr)")
            let figures = run.json as? [String: Any] ?? [:]
            print("ledger resize figures: \(figures)")
            for c in old { _ = await c.wait(timeout: .seconds(10)) }
            let moved = (0..<4).map { fleet.dir + "/state/\(fleet.name).p\($0).sqlite" }
            #expect(try Self.ledgerBalances(moved) == before, "balances over the 4 new files equal the 2 old ones")
            let config = try String(contentsOfFile: fleet.configPath, encoding: .utf8)
            try config.replacingOccurrences(of: "partitions: 2", with: "partitions: 4")
                .write(toFile: fleet.configPath, atomically: true, encoding: .utf8)
            let new = try (0..<4).map { try fleet.startInstance(partition: $0) }
            defer { for c in new { c.signal(SIGKILL) } }
            try await ingest.accept(second)
            // Redeliveries of events booked before the resize, through the new layout.
            let again = Array(first.shuffled().prefix(100))
            let pub = fleet.publisher()
            defer { pub.close() }
            #expect(await pub.waitUntilConnected(timeout: .seconds(30)))
            let out = again.map { e in
                var headers: [String: AMQPFieldValue] = [:]
                for (k, v) in Topology.partitionHeaders(for: e) { headers[k] = .string(v) }
                return AMQPOutgoing(
                    exchange: fleet.topology.partitionExchange, routingKey: e.type.rawValue,
                    message: AMQPMessage(body: EventFactory.body(e), messageID: e.id, headers: headers))
            }
            let results = await pub.publish(batch: out)
            #expect(results.allSatisfy { if case .success = $0 { true } else { false } }, "redeliveries published")
            let done = try await eventually(timeout: .seconds(30), every: .milliseconds(250)) {
                let pending = try await ingest.outbox.pendingCount()
                var queued = 0
                for p in 0..<4 { queued += try await fleet.depth(fleet.topology.queue(partition: p)) }
                return try Self.ledgerEvents(fleet, partitions: 4).reduce(0) { $0 + $1.count } >= all.count && pending == 0 && queued == 0
            }
            try await Task.sleep(for: .seconds(1))
            let files = try Self.ledgerEvents(fleet, partitions: 4)
            let rows = files.flatMap { $0 }
            #expect(done, "booked \(files.map(\.count)) of \(all.count)")
            #expect(rows.count == all.count && Set(rows.map(\.id)) == Set(all.map(\.id)), "every event booked once: \(rows.count) rows for \(all.count) events")
            // A merchant's events before the resize (moved by the split) and after it (routed by
            // the broker to its new partition) are in one file.
            var fileOf: [String: Set<Int>] = [:]
            for (p, list) in files.enumerated() { for r in list { fileOf[r.merchant, default: []].insert(p) } }
            #expect(fileOf.count == merchants.count && fileOf.values.allSatisfy { $0.count == 1 }, "merchants per file: \(fileOf)")
            #expect(Set(fileOf.values.map { $0.first! }).count > 2, "the merchants spread over the new partitions: \(fileOf)")
            for f in moved {
                let db = try SQLiteConnection(path: f, readOnly: true)
                #expect(try db.query("SELECT txid FROM postings GROUP BY txid, currency HAVING SUM(amount) <> 0").isEmpty, "\(f) balanced")
            }
            // The reference: one ledger of every event through the same handler.
            let reference = try await HandlerHarness(
                handler: LedgerHandler(merchants: merchants.map { Merchant(id: $0, timeZone: "UTC", currencies: EventFactory.currencies) }),
                name: "ledger-ref")
            try await reference.apply(all)
            #expect(try Self.ledgerBalances(moved) == (try Self.ledgerBalances([reference.path])), "balances equal one ledger of every event")
            print("ledger resize run: \(all.count) events (\(first.count) before), \(again.count) redelivered, rows per file \(files.map(\.count)), \(ContinuousClock.now - started)")
            let s = try await AMQPSession.connect(fleet.amqp)
            let topo = WorkerTopology(name: fleet.name, routingKeys: [], partitions: 4, retryDelaysMS: [200, 400, 800])
            _ = try? await s.declare { d in for q in topo.declarations.queues.map(\.name) { try d.delete(queue: q) } }
            await s.close()
        }
    }
}
