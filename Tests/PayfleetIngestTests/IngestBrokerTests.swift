import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetTestKit
import Testing

/// Ingest against the private broker (`PAYFLEET_TEST_AMQP_URL`): the outbox relay publishes with
/// confirms; events accepted while the broker is down arrive once it is back, each exactly once.
@Suite(.serialized) struct IngestBrokerTests {
    func payoutEvent(_ n: Int) -> [UInt8] {
        var payout = TestIngest.object("payout")
        payout["id"] = "po_it_\(n)"
        payout["amount"] = 1000 + n
        if n == 1 { payout["metadata"] = ["note": "card 4111 1111 1111 1111"] }  // masked before it is kept
        return TestIngest.stripeEvent(id: "evt_it_\(n)", type: "payout.paid", object: payout)
    }

    func waitForDepth(_ queue: String, _ n: Int, timeout: Duration) async throws -> Int {
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let deadline = ContinuousClock.now + timeout
        var depth = -1
        while ContinuousClock.now < deadline {
            if let s = try? await AMQPSession.connect(amqp) {
                depth = (try? await s.inspect(queue: queue).messages) ?? depth
                await s.close()
                if depth >= n { return depth }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        return depth
    }

    @Test func acceptedEventsReachTheQueueExactlyOnceAcrossABrokerRestart() async throws {
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let queue = TestEnvironment.uniqueName("ingest-it")
        let s = try await AMQPSession.connect(amqp)
        try await s.declare { d in
            try d.exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic"))
            try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")]))
            try d.bind(BindingSpec(source: Topology.eventsExchange, destination: queue, destinationType: .queue, routingKey: "#"))
        }
        await s.close()
        let config = TestIngest.configuration(amqp: amqp)
        let first = 20
        let whileDown = Int(ProcessInfo.processInfo.environment["PAYFLEET_INGEST_OUTAGE_EVENTS"] ?? "1000") ?? 1000
        try await TestIngest.withApp(config) { client, config in
            for n in 0..<first {
                let r = try await client.execute(
                    uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(payoutEvent(n)),
                    body: ByteBuffer(bytes: payoutEvent(n)))
                #expect(r.status == .accepted)
            }
            // A provider retry of event 0: answered duplicate, not published again.
            let dup = try await client.execute(
                uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(payoutEvent(0)),
                body: ByteBuffer(bytes: payoutEvent(0)))
            #expect(TestIngest.json(dup)["status"] as? String == "duplicate")
            #expect(try await waitForDepth(queue, first, timeout: .seconds(30)) == first)

            #expect(try TestEnvironment.broker("stop") == 0)
            // Broker down: every webhook still gets 202 once durable (50 concurrent senders).
            try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<50 {
                    group.addTask {
                        var ok = 0
                        for n in stride(from: first + worker, to: first + whileDown, by: 50) {
                            let body = payoutEvent(n)
                            let r = try await client.execute(
                                uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body),
                                body: ByteBuffer(bytes: body))
                            if r.status == .accepted { ok += 1 }
                        }
                        return ok
                    }
                }
                var total = 0
                for try await n in group { total += n }
                #expect(total == whileDown)
            }
            #expect(try TestEnvironment.broker("start") == 0)
            let depth = try await waitForDepth(queue, first + whileDown, timeout: .seconds(120))
            #expect(depth == first + whileDown)
            try await Task.sleep(for: .seconds(1))
        }
        // Exactly the accepted events, once each, with the contract's headers.
        let c = try await AMQPSession.connect(amqp)
        var ids: [String] = []
        var checkedHeaders = false
        while let m = try await c.get(queue: queue) {
            ids.append(m.message.messageID ?? "")
            #expect(!String(decoding: m.message.body, as: UTF8.self).contains("4111 1111 1111 1111"))
            if !checkedHeaders {
                let h = m.message.headers
                #expect(h["x-payfleet-schema"]?.stringValue == "payfleet.event/v1")
                #expect(h["x-payfleet-merchant"]?.stringValue == "m_acme")
                #expect(h["traceparent"]?.stringValue?.hasPrefix("00-") == true)
                #expect(m.message.persistent)
                let e = try EventCodec.decode(Data(m.message.body))
                #expect(e.type == .payoutPaid)
                #expect(e.id == m.message.messageID)
                // The partition keys partitioned workers hash (consistent-hash exchanges).
                #expect(h["x-partition-merchant"]?.stringValue == "m_acme")
                #expect(h["x-partition-customer"]?.stringValue == e.customerKey)
                checkedHeaders = true
            }
        }
        let expected = Set((0..<(first + whileDown)).map { n in PaymentEvent.canonicalID(provider: "stripe", eventID: "evt_it_\(n)") })
        #expect(ids.count == first + whileDown)
        #expect(Set(ids) == expected)
        _ = try? await c.declare { try $0.delete(queue: queue) }
        await c.close()
    }
}
