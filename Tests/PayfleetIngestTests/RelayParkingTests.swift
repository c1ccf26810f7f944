import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import PayfleetTestKit
import Testing

/// Issue 15 item 4 and 18: a row the broker refuses waits for its own retry instead of
/// holding back the rows behind it; sent rows, records and idempotency keys are pruned.
@Suite(.serialized) struct RelayParkingTests {
    static func insertRow(_ outbox: Outbox, id: String, type: String, customer: String, body: String) async throws {
        try await outbox.store.write { db in
            try db.execute(
                """
                INSERT INTO outbox (id, type, merchant, customer, customer_key, traceparent, body, created_at)
                VALUES (?, ?, 'm_acme', ?, ?, NULL, ?, ?)
                """,
                [.text(id), .text(type), .text(customer), .text(customer), .blob(Array(body.utf8)),
                 .int(Int64(Date().timeIntervalSince1970))])
        }
    }

    @Test("An unroutable row and a row too large for an AMQP frame wait alone: the valid events behind them are published, the two are parked, counted on /readyz, and published once released")
    func refusedRowsDoNotBlockTheOthers() async throws {
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let queue = TestEnvironment.uniqueName("relay-park")
        let unbound = "x.unbound." + queue
        let s = try await AMQPSession.connect(amqp)
        try await s.declare { d in
            try d.exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic"))
            try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")]))
            try d.bind(BindingSpec(source: Topology.eventsExchange, destination: queue, destinationType: .queue, routingKey: "payout.paid"))
        }
        await s.close()
        let config = TestIngest.configuration(amqp: amqp)
        // Rows an older version could have stored: they are the oldest in the outbox.
        let direct = try await Outbox(path: config.statePath, logger: Logger(label: "test"))
        try await Self.insertRow(direct, id: "evt_unroutable", type: unbound, customer: "cus_1", body: "{}")
        try await Self.insertRow(
            direct, id: "evt_huge", type: "payout.paid", customer: String(repeating: "c", count: 200_000), body: "{}")
        let bodies = (0..<20).map { n -> [UInt8] in
            var payout = TestIngest.object("payout")
            payout["id"] = "po_park_\(n)"
            return TestIngest.stripeEvent(id: "evt_park_\(n)", type: "payout.paid", object: payout)
        }
        try await TestIngest.withApp(config) { client, _ in
            for b in bodies {
                let r = try await client.execute(
                    uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(b), body: ByteBuffer(bytes: b))
                #expect(r.status == .accepted)
            }
            // The 20 valid events arrive although the two rows ahead of them are refused.
            var depth = 0
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline, depth < 20 {
                let c = try await AMQPSession.connect(amqp)
                depth = try await c.inspect(queue: queue).messages
                await c.close()
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(depth == 20)
            // Both keep being retried on their own schedule until they count as parked.
            var parked: [Outbox.Parked] = []
            let parkDeadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < parkDeadline, parked.count < 2 {
                parked = try await direct.parked()
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(parked.map(\.id) == ["evt_unroutable", "evt_huge"])
            #expect(parked.first?.lastError.contains("unroutable") == true, "\(parked)")
            #expect(parked.allSatisfy { $0.attempts >= Outbox.parkAfterAttempts })
            // The error stored names the broker's refusal, not the data.
            #expect(!(parked.last?.lastError.contains("ccccc") ?? true))
            try await Task.sleep(for: .milliseconds(1500))
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            #expect(TestIngest.json(ready)["outbox_parked"] as? Int == 2, "\(String(buffer: ready.body))")
            #expect(TestIngest.json(ready)["outbox_pending"] as? Int == 2)

            // The operator binds the type and releases it: it is published at once.
            let b = try await AMQPSession.connect(amqp)
            try await b.declare { d in
                try d.bind(BindingSpec(source: Topology.eventsExchange, destination: queue, destinationType: .queue, routingKey: unbound))
            }
            await b.close()
            #expect(try await direct.release(ids: ["evt_unroutable"]) == 1)
            let releaseDeadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < releaseDeadline, depth < 21 {
                let c = try await AMQPSession.connect(amqp)
                depth = try await c.inspect(queue: queue).messages
                await c.close()
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(depth == 21)
            #expect(try await direct.parked().map(\.id) == ["evt_huge"])
        }
        let c = try await AMQPSession.connect(amqp)
        var ids: [String] = []
        while let m = try await c.get(queue: queue) { ids.append(m.message.messageID ?? "") }
        #expect(ids.count == 21)
        #expect(Set(ids).count == 21)
        #expect(ids.contains("evt_unroutable") && !ids.contains("evt_huge"))
        _ = try? await c.declare { try $0.delete(queue: queue) }
        await c.close()
    }

    @Test("A deferred row is skipped until its time; deferring doubles the wait")
    func deferredRowsAreSkippedUntilDue() async throws {
        let config = TestIngest.configuration()
        let outbox = try await Outbox(path: config.statePath, logger: Logger(label: "test"))
        try await Self.insertRow(outbox, id: "a", type: "payout.paid", customer: "c", body: "{}")
        try await Self.insertRow(outbox, id: "b", type: "payout.paid", customer: "c", body: "{}")
        let t0: Int64 = 1_800_000_000_000
        let a = try #require(try await outbox.pending(limit: 10, nowMS: t0).first)
        try await outbox.deferRow(a.seq, reason: "AMQP unroutable", nowMS: t0)
        #expect(try await outbox.pending(limit: 10, nowMS: t0).map(\.id) == ["b"])
        #expect(try await outbox.pending(limit: 10, nowMS: t0 + 999).map(\.id) == ["b"])
        #expect(try await outbox.pending(limit: 10, nowMS: t0 + 1000).map(\.id) == ["a", "b"])
        try await outbox.deferRow(a.seq, reason: "AMQP unroutable", nowMS: t0 + 1000)
        #expect(try await outbox.pending(limit: 10, nowMS: t0 + 2999).map(\.id) == ["b"])
        #expect(try await outbox.pending(limit: 10, nowMS: t0 + 3000).map(\.id) == ["a", "b"])
        #expect(try await outbox.pending(limit: 10, nowMS: t0 + 3000).first?.attempts == 2)
    }

    @Test("Pruning removes sent rows, records and idempotency keys past the retention in chunks, never an unsent row")
    func pruningKeepsUnsentRows() async throws {
        let config = TestIngest.configuration()
        let outbox = try await Outbox(path: config.statePath, logger: Logger(label: "test"))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let old = Int64(now.timeIntervalSince1970) - 36 * 86_400
        let recent = Int64(now.timeIntervalSince1970) - 86_400
        try await outbox.store.write { db in
            for i in 0..<25 {
                // 10 old sent, 5 recent sent, 10 old unsent
                let sent: SQLValue = i < 10 ? .int(old) : i < 15 ? .int(recent) : .null
                try db.execute(
                    "INSERT INTO outbox (id, type, merchant, body, created_at, sent_at) VALUES (?, 'payout.paid', 'm', x'00', ?, ?)",
                    [.text("e\(i)"), .int(old), sent])
                try db.execute(
                    "INSERT INTO recorded (id, provider, event_id, type, reason, received_at) VALUES (?, 'stripe', ?, 't', 'r', ?)",
                    [.text("r\(i)"), .text("x\(i)"), .int(i < 7 ? old : recent)])
                try db.execute(
                    "INSERT INTO idempotency (key_hash, idem_key, body_sha, event_id, created_at) VALUES ('h', ?, 's', 'e', ?)",
                    [.text("k\(i)"), .int(i < 3 ? old : recent)])
            }
        }
        var total = Outbox.Pruned()
        var rounds = 0
        while true {
            let p = try await outbox.prune(retentionSeconds: 35 * 86_400, chunk: 4, now: now)
            rounds += 1
            total.outbox += p.outbox
            total.recorded += p.recorded
            total.idempotency += p.idempotency
            #expect(p.outbox <= 4 && p.recorded <= 4 && p.idempotency <= 4)
            if p.total == 0 { break }
        }
        #expect(total == Outbox.Pruned(outbox: 10, recorded: 7, idempotency: 3))
        #expect(rounds == 4)
        let left = try await outbox.store.withConnection { db in
            try db.query("SELECT id FROM outbox ORDER BY seq").compactMap { $0.string(0) }
        }
        #expect(left == (10..<25).map { "e\($0)" })
        #expect(try await outbox.pendingCount() == 10)
    }
}
