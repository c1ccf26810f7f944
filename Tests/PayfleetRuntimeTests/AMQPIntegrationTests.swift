import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing

/// The AMQP module on its own against the private broker.
@Suite(.serialized)
struct AMQPIntegrationTests {
    let logger = Logger(label: "test")

    func withQueue(_ body: (String, AMQPConfiguration) async throws -> Void) async throws {
        let config = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let queue = TestEnvironment.uniqueName("amqp-test")
        let s = try await AMQPSession.connect(config)
        try await s.declare { d in try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")])) }
        do { try await body(queue, config) } catch {
            _ = try? await s.declare { try $0.delete(queue: queue) }
            throw error
        }
        _ = try? await s.declare { try $0.delete(queue: queue) }
        await s.close()
    }

    @Test("Every confirmed publish is in the queue, and a consumer sees each exactly once")
    func publishConfirmAndConsume() async throws {
        try await withQueue { queue, config in
            let pub = AMQPPublisher(configuration: config, logger: logger)
            #expect(await pub.waitUntilConnected())
            let n = 10_000
            var sent = 0
            while sent < n {
                let out = (sent..<min(sent + 500, n)).map { i in
                    AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: Array("message \(i)".utf8), messageID: "m\(i)"))
                }
                let results = await pub.publish(batch: out)
                #expect(results.allSatisfy { if case .success = $0 { true } else { false } })
                sent += out.count
            }
            pub.close()
            let s = try await AMQPSession.connect(config)
            let depth = try await s.inspect(queue: queue).messages
            await s.close()
            #expect(depth == n)

            let consumer = AMQPConsumer(configuration: config, queue: queue, prefetch: 200, logger: logger)
            var seen = Set<String>()
            var total = 0
            for await event in consumer.events {
                guard case .deliveries(let batch) = event else { continue }
                for d in batch {
                    total += 1
                    seen.insert(d.message.messageID ?? "")
                    #expect(String(decoding: d.message.body, as: UTF8.self) == "message \(d.message.messageID!.dropFirst())")
                }
                consumer.ack(batch.last!, multiple: true)
                if total >= n { break }
            }
            consumer.shutdown()
            #expect(total == n)
            #expect(seen.count == n)
        }
    }

    @Test("On demand, deliveries already read are handed over at once, not after the next poll times out")
    func demandedDeliveriesAreNotHeld() async throws {
        try await withQueue { queue, config in
            let s = try await AMQPSession.connect(config)
            for i in 0..<30 {
                try await s.publish(AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: [UInt8(i)], messageID: "d\(i)")))
            }
            await s.close()
            // The whole queue fits the prefetch window, and nothing is acked: once the consumer
            // has read all 30, the broker sends nothing more, so only the demand can release a batch.
            let consumer = AMQPConsumer(
                configuration: config, queue: queue, prefetch: 30, logger: logger, onDemand: true, maxBatch: 5)
            var seen: [String] = []
            var started: ContinuousClock.Instant?
            consumer.requestDeliveries()
            for await event in consumer.events {
                guard case .deliveries(let batch) = event else { continue }
                seen += batch.compactMap(\.message.messageID)
                if started == nil {
                    // Let the consumer read the rest into its pending list before the next demand.
                    try await Task.sleep(for: .milliseconds(500))
                    started = .now
                }
                if seen.count >= 30 { break }
                consumer.requestDeliveries()
            }
            let elapsed = ContinuousClock.now - started!
            consumer.shutdown()
            #expect(seen == (0..<30).map { "d\($0)" })
            // Five demands of pending deliveries: held for a poll slice (up to 1 s) each before
            // the fix, a few milliseconds each now.
            #expect(elapsed < .milliseconds(2500), "five demanded batches took \(elapsed)")
        }
    }

    @Test("An unroutable mandatory publish is an error, not a silent drop")
    func unroutableIsAnError() async throws {
        let config = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let pub = AMQPPublisher(configuration: config, logger: logger)
        #expect(await pub.waitUntilConnected())
        do {
            try await pub.publish(AMQPOutgoing(exchange: "", routingKey: "no-such-queue-\(UUID())", message: AMQPMessage(body: [1])))
            Issue.record("an unroutable message was confirmed as published")
        } catch {
            #expect(error.code == .unroutable)
        }
        pub.close()
    }

    @Test("Declaring a queue with conflicting arguments names the queue and the reply code")
    func declarationErrorsAreTyped() async throws {
        try await withQueue { queue, config in
            let s = try await AMQPSession.connect(config)
            do {
                try await s.declare { d in try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("classic")])) }
                Issue.record("conflicting declaration accepted")
            } catch let e as AMQPError {
                #expect(e.replyCode == 406)
                #expect(e.message.contains(queue))
            }
        }
    }

    @Test("amqps:// with a CA and a client certificate publishes and consumes; a wrong CA is refused")
    func tls() async throws {
        let url = try #require(TestEnvironment.amqpsURL, "the private broker has no TLS listener (scripts/broker.sh makes one)")
        let config = try AMQPConfiguration(url: url)
        #expect(config.tls && config.caFile != nil && config.certFile != nil)
        let queue = TestEnvironment.uniqueName("amqps-test")
        let s = try await AMQPSession.connect(config)
        try await s.declare { d in try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")])) }
        try await s.publish(AMQPOutgoing(exchange: "", routingKey: queue, message: AMQPMessage(body: Array("over tls".utf8), messageID: "tls-1")))
        let got = try await s.get(queue: queue)
        #expect(got.map { String(decoding: $0.message.body, as: UTF8.self) } == "over tls")
        if let got { try await s.ack(got.deliveryTag) }
        _ = try await s.declare { try $0.delete(queue: queue) }
        await s.close()

        // The client certificate is not a CA: verifying the broker against it must fail.
        var wrong = config
        wrong.caFile = config.certFile
        do {
            _ = try await AMQPSession.connect(wrong)
            Issue.record("connected although the broker's certificate cannot be verified")
        } catch let e as AMQPError {
            #expect(e.code == .connectionFailed)
            #expect(e.message.contains(config.host))
        }
    }

    @Test func urlsAreParsedAndPasswordsNeverPrinted() throws {
        let c = try AMQPConfiguration(url: "amqps://svc:p%40ss@broker.internal:5671/payments?heartbeat=15")
        #expect(c.tls && c.host == "broker.internal" && c.port == 5671 && c.vhost == "payments")
        #expect(c.password == "p@ss" && c.heartbeatSeconds == 15)
        #expect(!c.description.contains("p@ss"))
        #expect(try AMQPConfiguration(url: "amqp://localhost").vhost == "/")
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "http://localhost") }
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://h/?bogus=1") }
    }
}
