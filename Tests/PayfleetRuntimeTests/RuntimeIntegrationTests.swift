import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The foundation's promises against the real private broker and real SQLite files.
/// Serialized: one test stops and starts the shared broker.
@Suite(.serialized)
struct RuntimeIntegrationTests {
    @Test("10,000 events, each published twice, are applied exactly once")
    func exactlyOnceWithDuplicates() async throws {
        try await DemoFleet.with(prefix: "once") { fleet in
            try await fleet.declare()
            let events = (0..<10_000).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = try await fleet.connectedPublisher()
            try await fleet.publish(events, via: pub)
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            let done = try await eventually(timeout: .seconds(180)) {
                try await fleet.drained(rows: 10_000)
            }
            #expect(done)
            try await Task.sleep(for: .milliseconds(500))
            let a = try fleet.applied()
            #expect(a.rows == 10_000)
            #expect(a.distinct == 10_000)
            #expect(a.sum == events.reduce(0) { $0 + $1.amount.value })
            // Counters are updated right after the last ack: give the final batch a moment.
            let dups = await eventually(timeout: .seconds(10)) {
                await fleet.metric("payfleet_duplicates_skipped_total") == 10_000
            }
            let counted = await fleet.metric("payfleet_duplicates_skipped_total") ?? -1
            #expect(dups, "duplicates counted: \(counted)")
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
        }
    }

    @Test("SIGKILL mid-run and restart: all 10,000 applied exactly once")
    func sigkillMidRun() async throws {
        try await DemoFleet.with(prefix: "kill") { fleet in
            try await fleet.declare()
            let events = (0..<10_000).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = try await fleet.connectedPublisher()
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(120), every: .milliseconds(5)) { try fleet.applied().rows >= 2_000 })
            fleet.process?.signal(SIGKILL)
            _ = await fleet.process?.wait(timeout: .seconds(10))
            #expect(fleet.process?.isRunning == false)
            let atKill = try fleet.applied().rows
            #expect(atKill < 10_000, "the kill must land mid-run")
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(180)) {
                try await fleet.drained(rows: 10_000)
            })
            try await Task.sleep(for: .milliseconds(500))
            let a = try fleet.applied()
            #expect(a.rows == 10_000)
            #expect(a.distinct == 10_000)
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
        }
    }

    @Test("Broker stopped and started mid-run: publisher and consumer reconnect, nothing lost")
    func brokerRestart() async throws {
        try await DemoFleet.with(prefix: "restart") { fleet in
            try await fleet.declare()
            let events = (0..<6_000).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = try await fleet.connectedPublisher()
            try await fleet.publish(Array(events[0..<3_000]), via: pub)
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(60)) { try fleet.applied().rows >= 500 })
            try TestEnvironment.broker("stop")
            let noticed = await eventually(timeout: .seconds(10)) { !pub.isConnected }
            #expect(noticed)
            // Publishing while the broker is down fails visibly, never silently.
            let e = events[3_000]
            await #expect(throws: AMQPError.self) {
                try await pub.publish(AMQPOutgoing(exchange: "", routingKey: fleet.queue,
                                                   message: AMQPMessage(body: EventFactory.body(e), messageID: e.id)))
            }
            try TestEnvironment.broker("start")
            let reconnected = await pub.waitUntilConnected(timeout: .seconds(60))
            #expect(reconnected)
            try await fleet.publish(Array(events[3_000...]), via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(180)) {
                try await fleet.drained(distinct: 6_000)
            })
            let a = try fleet.applied()
            #expect(a.rows == 6_000)
            #expect(a.distinct == 6_000)
            #expect(fleet.process?.isRunning == true, "the worker reconnected by itself")
        }
    }

    @Test("Transient failures back off through the retry tiers without holding up later events")
    func transientRetries() async throws {
        try await DemoFleet.with(prefix: "retry") { fleet in
            try await fleet.declare()
            let flaky = EventFactory.payment(0, prefix: fleet.name, metadata: ["demo_fault": "transient:3"])
            let rest = (1...50).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = try await fleet.connectedPublisher()
            try fleet.start()
            try await fleet.publish([flaky] + rest, via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.applied().distinct == 51 })
            let order = try fleet.appliedOrder()
            #expect(order.count == 51)
            #expect(order.last == flaky.id, "the flaky event finishes last; the 50 behind it were not held up")
            let retried = await fleet.metric("payfleet_retried_total")
            #expect(retried == 3)
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
        }
    }

    @Test("A permanent failure goes to the DLQ with x-payfleet headers; a crashing event is dead-lettered by the delivery limit")
    func permanentAndCrash() async throws {
        try await DemoFleet.with(prefix: "dlq", deliveryLimit: 2, batchSize: 1) { fleet in
            try await fleet.declare()
            let bad = EventFactory.payment(1, prefix: fleet.name, metadata: ["demo_fault": "permanent"])
            let crash = EventFactory.payment(2, prefix: fleet.name, metadata: ["demo_fault": "crash"])
            let good = EventFactory.payment(3, prefix: fleet.name)
            let pub = try await fleet.connectedPublisher()
            try await fleet.publish([bad, crash], via: pub)
            // The crash kills the worker each time it sees the event; restart it like systemd would.
            // (Deliveries in flight beside a crashing one are charged a delivery too, which is
            // why production keeps delivery_limit generous; this test uses 2.)
            var restarts = 0
            let finished = try await eventually(timeout: .seconds(120), every: .milliseconds(200)) {
                if fleet.process?.isRunning != true {
                    restarts += 1
                    try fleet.start()
                }
                return try await fleet.depth(fleet.topology.dlq) == 2
            }
            #expect(finished)
            #expect(restarts >= 3, "delivered 1 + delivery_limit times before the broker dead-lettered it")
            // The worker goes on with ordinary events afterwards.
            if fleet.process?.isRunning != true { try fleet.start() }
            try await fleet.publish([good], via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(30)) { try fleet.applied().rows == 1 })
            let dead = try await fleet.deadLetters()
            #expect(dead.count == 2)
            let permanent = try #require(dead.first { $0.messageID == bad.id })
            #expect(permanent.headers[PayfleetHeaders.error]?.stringValue?.hasPrefix("DemoPermanent:") == true)
            #expect(permanent.headers[PayfleetHeaders.attempts]?.intValue == 1)
            #expect(permanent.headers[PayfleetHeaders.worker]?.stringValue == fleet.name)
            #expect(permanent.headers[PayfleetHeaders.firstFailedAt].flatMap { $0.stringValue.flatMap(RFC3339.parse) } != nil)
            let crashed = try #require(dead.first { $0.messageID == crash.id })
            guard case .array(let deaths)? = crashed.headers["x-death"], case .table(let first)? = deaths.first else {
                Issue.record("no x-death on the crashed message")
                return
            }
            #expect(first["reason"]?.stringValue == "delivery_limit")
            #expect(try fleet.appliedOrder() == [good.id])
        }
    }

    @Test("SIGTERM under load: exit 0 promptly, nothing lost, nothing applied twice")
    func sigtermUnderLoad() async throws {
        try await DemoFleet.with(prefix: "term") { fleet in
            try await fleet.declare()
            let events = (0..<8_000).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = try await fleet.connectedPublisher()
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(120), every: .milliseconds(5)) { try fleet.applied().rows >= 1_500 })
            let t0 = ContinuousClock.now
            fleet.process?.signal(SIGTERM)
            let status = await fleet.process?.wait(timeout: .seconds(20))
            #expect(status == 0, "exit status after SIGTERM; log: \(fleet.process?.log.suffix(2000) ?? "")")
            #expect(ContinuousClock.now - t0 < .seconds(10))
            #expect(try fleet.applied().rows < 8_000, "SIGTERM landed mid-run")
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(180)) {
                try await fleet.drained(rows: 8_000)
            })
            try await Task.sleep(for: .milliseconds(500))
            let a = try fleet.applied()
            #expect(a.rows == 8_000)
            #expect(a.distinct == 8_000)
        }
    }

    @Test("Malformed input is dead-lettered as permanent with a message naming the problem")
    func malformedInput() async throws {
        try await DemoFleet.with(prefix: "bad") { fleet in
            try await fleet.declare()
            let pub = try await fleet.connectedPublisher()
            let good = EventFactory.payment(1, prefix: fleet.name)
            var json = String(decoding: EventFactory.body(good), as: UTF8.self)
            let wrongSchema = json.replacingOccurrences(of: "payfleet.event/v1", with: "payfleet.event/v9")
            let unknownCurrency = json.replacingOccurrences(of: "\"currency\":\"EUR\"", with: "\"currency\":\"XXZ\"")
            #expect(unknownCurrency != json)
            let missingType = json.replacingOccurrences(of: "\"type\":\"payment.succeeded\"", with: "\"kind\":\"payment.succeeded\"")
            #expect(missingType != json)
            json = String(json)
            try await fleet.publishRaw(Array("this is not json".utf8), id: "bad-1", via: pub)
            try await fleet.publishRaw(Array(wrongSchema.utf8), id: "bad-2", via: pub)
            try await fleet.publishRaw(Array(unknownCurrency.utf8), id: "bad-3", via: pub)
            try await fleet.publishRaw(Array(missingType.utf8), id: "bad-4", via: pub)
            try await fleet.publishRaw(Array(json.utf8), id: good.id, via: pub)
            pub.close()
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(30)) { (try await fleet.depth(fleet.topology.dlq)) == 4 })
            let dead = try await fleet.deadLetters()
            let errors = Dictionary(uniqueKeysWithValues: dead.map { ($0.messageID ?? "", $0.headers[PayfleetHeaders.error]?.stringValue ?? "") })
            #expect(errors["bad-1"]?.contains("not a JSON object") == true, "\(errors)")
            #expect(errors["bad-2"]?.contains("schema") == true, "\(errors)")
            #expect(errors["bad-3"]?.contains("XXZ") == true, "\(errors)")
            #expect(errors["bad-4"]?.contains("type") == true, "\(errors)")
            #expect(errors.values.allSatisfy { $0.hasPrefix("InvalidEvent:") })
            #expect(try fleet.applied().rows == 1)
            #expect(fleet.process?.isRunning == true)
        }
    }
}
