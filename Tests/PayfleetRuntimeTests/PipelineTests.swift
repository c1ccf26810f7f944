import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The runtime's two batches in hand (`WorkerRuntime.consumeLoop`): the next batch is applied
/// while the last one's effects run; effects of two batches never overlap; an event that is in
/// both waits for the earlier finish. In process, against the private broker and a real SQLite file.
@Suite(.serialized)
struct PipelineTests {
    /// Logs when each event is applied and when its effect starts and ends; each effect sleeps.
    struct Probe: WorkerHandler {
        struct Effect: Codable, Sendable { var id: String }
        enum Step: Equatable { case apply, start, end }
        let log = Locked<[(step: Step, id: String)]>([])
        let performed = Locked<[String: Int]>([:])
        let unknown = Locked<[String]>([])
        let effectTime: Duration

        func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> Effect? {
            log.withLock { $0.append((.apply, event.id)) }
            return Effect(id: event.id)
        }

        func perform(_ effect: Effect, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws {
            log.withLock { $0.append((.start, event.id)) }
            if outcomeUnknown { unknown.withLock { $0.append(event.id) } }
            try? await Task.sleep(for: effectTime)
            performed.withLock { $0[event.id, default: 0] += 1 }
            log.withLock { $0.append((.end, event.id)) }
        }
    }

    @Test("Batch N+1 is applied while batch N's effects run; no two batches' effects overlap; an event in both is performed once, its outcome known")
    func pipelinedBatches() async throws {
        let logger = Logger(label: "test")
        let config = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let name = TestEnvironment.uniqueName("pipeline")
        let topo = WorkerTopology(name: name, routingKeys: ["payment.succeeded"])
        let session = try await AMQPSession.connect(config)
        try await session.declare { try $0.declare(worker: topo) }
        let dir = TestEnvironment.makeTempDir("pipeline")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // 40 events, then 40 more where each one is published again 8 places later (two copies
        // in adjacent batches of 10), in one queue in this order.
        let events = (0..<80).map { EventFactory.payment($0, prefix: name) }
        var order = Array(events[0..<40])
        for k in 40..<80 {
            order.append(events[k])
            if k - 8 >= 40 { order.append(events[k - 8]) }
        }
        for k in 72..<80 { order.append(events[k]) }
        let publisher = AMQPPublisher(configuration: config, logger: logger)
        #expect(await publisher.waitUntilConnected())
        let out = order.map { e in
            AMQPOutgoing(exchange: "", routingKey: topo.queue(partition: 0), message: AMQPMessage(body: EventFactory.body(e), messageID: e.id))
        }
        for r in await publisher.publish(batch: out) { try r.get() }
        publisher.close()

        // Effects one at a time: any two effects in flight at once are of two batches.
        let probe = Probe(effectTime: .milliseconds(20))
        let rc = RuntimeConfiguration(
            worker: name, amqp: config, topology: topo, statePath: dir + "/probe.sqlite", batchSize: 10, effectConcurrency: 1)
        let runtime = try await WorkerRuntime(configuration: rc, handler: probe, logger: logger)
        let deadline = ContinuousClock.now + .seconds(60)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runtime.run() }
            group.addTask {
                while ContinuousClock.now < deadline {
                    let done = try await runtime.store.withConnection { db in
                        Int(try db.queryOne("SELECT count(*) FROM effect_journal WHERE state = 'done'")?.int(0) ?? 0)
                    }
                    if done >= events.count { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                // Let the last batch's ack go out.
                try await Task.sleep(for: .milliseconds(300))
            }
            try await group.next()
            group.cancelAll()
        }
        try await Task.sleep(for: .milliseconds(300))
        // Anything unacked went back to the queue when the runtime's connection closed.
        let left = try await session.inspect(queue: topo.queue(partition: 0)).messages
        for q in topo.declarations.queues.map(\.name) { _ = try? await session.declare { try $0.delete(queue: q) } }
        await session.close()

        #expect(left == 0, "every delivery acked")
        let performed = probe.performed.current
        #expect(performed.count == events.count && performed.values.allSatisfy { $0 == 1 }, "each effect once: \(performed.filter { $0.value != 1 })")
        #expect(probe.unknown.current.isEmpty, "no effect seen as interrupted: \(probe.unknown.current)")

        var inFlight = Set<String>()
        var appliedDuringEffects = 0
        var overlaps: [String] = []
        for (step, id) in probe.log.current {
            switch step {
            case .apply: if !inFlight.isEmpty { appliedDuringEffects += 1 }
            case .start:
                if !inFlight.isEmpty { overlaps.append("\(id) started while \(inFlight.sorted()) ran") }
                inFlight.insert(id)
            case .end: inFlight.remove(id)
            }
        }
        #expect(overlaps.isEmpty, "\(overlaps.prefix(3))")
        // One at a time and 20 ms each: a batch's effects take 200 ms; its successor was applied meanwhile.
        #expect(appliedDuringEffects >= 10, "events applied while an effect ran: \(appliedDuringEffects)")
    }
}
