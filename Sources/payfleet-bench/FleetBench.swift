import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetStore

/// The whole fleet end to end, in one run on the dev fleet's private broker (issue 10):
/// (1) the bare broker fan-out ceiling — publish with confirms to a topic exchange with four
///     queues, each consumed with acks, no work;
/// (2) the fleet at full speed — signed Stripe webhooks into ingest, until all four workers
///     have committed every event;
/// (3) the fleet at a fixed rate — latency from ingest's 202 to the last worker's commit
///     (`processed.processed_ms` in each worker's SQLite file), p50 / p99;
/// and the RSS of every process.
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "End-to-end fleet throughput, latency and memory against the ceiling.")

    @Option(help: "The dev fleet's state directory (started with `payfleet dev up` if it is not running).")
    var stateDir = ".payfleet/dev"
    @Option(help: "Events for the ceiling and the full-speed run.")
    var count = 10_000
    @Option(help: "Concurrent webhook requests in the full-speed run.")
    var concurrency = 32
    @Option(help: "Events per second in the latency run.")
    var rate = 1_000
    @Option(help: "Seconds of the latency run.")
    var duration = 20
    @Option(help: "Stripe webhook secret (the sandbox's).")
    var stripeSecret = "whsec_payfleetSandboxStripeSecret1"

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        let fleet = try startFleet()
        let amqp = try AMQPConfiguration(url: fleet.amqpURL)
        let workers = fleet.admin.keys.filter { $0 != "ingest" }.sorted()
        print("payfleet-bench fleet: \(count) events; workers \(workers.joined(separator: ", ")); state \(fleet.stateDir)")

        let ceiling = try await self.ceiling(amqp, queues: 4)
        print(String(format: "(1) broker fan-out ceiling (publish with confirms → 4 queues consumed with acks): %8.0f events/s", ceiling))

        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let cpuBefore = cpuByProcess(fleet)
        let fast = try await send(fleet, runID: runID + "f", total: count, ratePerSecond: nil)
        let fastDone = try await waitCommitted(fleet, workers: workers, sent: fast)
        let cpuAfter = cpuByProcess(fleet)
        let span = Double(fastDone.lastCommitMS - fast.firstSendMS) / 1000
        let fleetRate = Double(fast.ids.count) / max(span, 0.001)
        print(String(format: "(2) fleet, full speed (%d concurrent webhooks): %8.0f events/s   (ingest 202s alone: %.0f/s)",
                     concurrency, fleetRate, Double(fast.ids.count) / max(Double(fast.lastAckMS - fast.firstSendMS) / 1000, 0.001)))
        print(String(format: "    ratio fleet / ceiling = %.2f", fleetRate / ceiling))
        print("    CPU per 1,000 events in (2), by process (user + system):")
        var totalCPU = 0.0
        for name in cpuAfter.keys.sorted() {
            let ms = (cpuAfter[name] ?? 0) - (cpuBefore[name] ?? 0)
            totalCPU += ms
            print("      " + name.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: " %7.0f ms", ms * 1000 / Double(fast.ids.count)))
        }
        print(String(format: "      %@ %7.0f ms (%.2f of 2 cores over %.1f s)", "all".padding(toLength: 22, withPad: " ", startingAt: 0),
                     totalCPU * 1000 / Double(fast.ids.count), totalCPU / 1000 / max(span, 0.001) / 2, span))

        let paced = try await send(fleet, runID: runID + "r", total: rate * duration, ratePerSecond: rate)
        let pacedDone = try await waitCommitted(fleet, workers: workers, sent: paced)
        let latencies = pacedDone.latencyMS.sorted()
        func pct(_ p: Double) -> Int { latencies.isEmpty ? -1 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        let achieved = Double(paced.ids.count) / max(Double(paced.lastAckMS - paced.firstSendMS) / 1000, 0.001)
        print(String(format: "(3) fleet at %d events/s for %d s (achieved %.0f/s): 202 → last worker's commit p50 %d ms, p99 %d ms, max %d ms",
                     rate, duration, achieved, pct(0.5), pct(0.99), latencies.last ?? -1))
        print(String(format: "    ingest 202 latency p50 %d ms, p99 %d ms", paced.ackLatencyP(0.5), paced.ackLatencyP(0.99)))
        for (w, l) in pacedDone.byWorker.sorted(by: { $0.key < $1.key }) {
            let s = l.sorted()
            print("    202 → " + w.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: " commit p50 %6d ms, p99 %6d ms", s[s.count / 2], s[min(s.count - 1, s.count * 99 / 100)]))
        }
        print("    resident memory after the runs (VmRSS / peak VmHWM):")
        for (name, pid) in fleet.pids.sorted(by: { $0.key < $1.key }) where name != "supervisor" {
            let (rss, hwm) = Self.memory(pid: pid)
            print("      " + name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: " %6.1f MiB / %6.1f MiB", rss, hwm))
        }
    }

    struct Fleet {
        let amqpURL: String
        let ingestURL: String
        let stateDir: String
        let admin: [String: String]
        let pids: [String: Int32]
    }

    /// `payfleet dev up --json` from the same build (idempotent: reuses a running fleet).
    func startFleet() throws -> Fleet {
        let bin = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin + "/payfleet")
        p.arguments = ["dev", "up", "--json", "--state-dir", stateDir]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let j = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CLIError("payfleet dev up failed (exit \(p.terminationStatus))")
        }
        return Fleet(
            amqpURL: j["amqp_url"] as? String ?? "", ingestURL: j["ingest_url"] as? String ?? "",
            stateDir: (j["state_dir"] as? String ?? stateDir) + "/state",
            admin: j["admin_urls"] as? [String: String] ?? [:],
            pids: (j["pids"] as? [String: Int] ?? [:]).mapValues { Int32($0) })
    }

    /// Publish `count` 500-byte persistent messages with confirms to a fresh topic exchange
    /// bound to `queues` quorum queues while a consumer per queue acks; events/s until every
    /// queue has delivered them all.
    func ceiling(_ config: AMQPConfiguration, queues n: Int) async throws -> Double {
        let logger = Logger(label: "bench")
        let tag = "payfleet.bench.\(UInt32.random(in: 0...UInt32.max))"
        let names = (0..<n).map { "\(tag).q\($0)" }
        let session = try await AMQPSession.connect(config)
        try await session.declare { d in
            try d.exchange(ExchangeSpec(name: tag, type: "topic"))
            for q in names {
                _ = try d.queue(QueueSpec(name: q, arguments: ["x-queue-type": .string("quorum")]))
                try d.bind(BindingSpec(source: tag, destination: q, destinationType: .queue, routingKey: "#"))
            }
        }
        let body = Array(String(repeating: "x", count: 500).utf8)
        let total = count
        let t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for q in names {
                group.addTask {
                    let consumer = AMQPConsumer(configuration: config, queue: q, prefetch: 500, logger: logger)
                    var got = 0
                    for await e in consumer.events {
                        guard case .deliveries(let batch) = e else { continue }
                        got += batch.count
                        consumer.ack(batch.last!, multiple: true)
                        if got >= total { break }
                    }
                    consumer.shutdown()
                }
            }
            group.addTask {
                let pub = AMQPPublisher(configuration: config, name: "bench-ceiling", maxBatch: 500, logger: logger)
                guard await pub.waitUntilConnected() else { throw CLIError("cannot connect to \(config)") }
                var sent = 0
                while sent < total {
                    let k = min(500, total - sent)
                    let out = (0..<k).map { i in
                        AMQPOutgoing(exchange: tag, routingKey: "payment.succeeded", message: AMQPMessage(body: body, messageID: "c\(sent + i)"))
                    }
                    for r in await pub.publish(batch: out) { try r.get() }
                    sent += k
                }
                pub.close()
            }
            try await group.waitForAll()
        }
        let rate = Double(total) / (ContinuousClock.now - t0).seconds
        try await session.declare { d in for q in names { try d.delete(queue: q) } }
        await session.close()
        return rate
    }

    struct Sent {
        var ids: [String] = []
        var ackMS: [String: Int64] = [:]
        var sendMS: [String: Int64] = [:]
        var firstSendMS: Int64 = .max
        var lastAckMS: Int64 = 0
        func ackLatencyP(_ p: Double) -> Int {
            let l = ids.compactMap { id in ackMS[id].flatMap { a in sendMS[id].map { Int(a - $0) } } }.sorted()
            return l.isEmpty ? -1 : l[min(l.count - 1, Int(Double(l.count) * p))]
        }
    }

    /// Signed `charge.succeeded` webhooks (a customer with an email, so every worker acts),
    /// built and signed before the clock starts and sent by `HTTPLoad` on its own threads: as
    /// fast as `concurrency` connections allow, or paced at `ratePerSecond`.
    func send(_ fleet: Fleet, runID: String, total: Int, ratePerSecond: Int?) async throws -> Sent {
        guard let url = URL(string: fleet.ingestURL), let host = url.host, let port = url.port.flatMap({ UInt16(exactly: $0) })
        else { throw CLIError("bad ingest URL \(fleet.ingestURL)") }
        let created = Int64(Date().timeIntervalSince1970)
        let requests = (0..<total).map { i in
            let body = Array(Self.chargeSucceeded(run: runID, n: i, created: created).utf8)
            return HTTPLoad.request(
                path: "/webhooks/stripe", host: "\(host):\(port)",
                headers: [("Content-Type", "application/json"),
                          ("Stripe-Signature", StripeSignature.sign(payload: body, secret: stripeSecret, timestamp: created))],
                body: body)
        }
        let connections = ratePerSecond.map { max(concurrency, $0 / 20) } ?? concurrency
        let answers = try await HTTPLoad.run(
            host: host, port: port, requests: requests, connections: connections, ratePerSecond: ratePerSecond)
        var s = Sent()
        for a in answers {
            guard a.status == 202, let j = try? JSONSerialization.jsonObject(with: Data(a.body)) as? [String: Any],
                let id = j["id"] as? String
            else {
                throw CLIError("ingest answered \(a.status): \(String(decoding: a.body, as: UTF8.self))")
            }
            s.ids.append(id)
            s.sendMS[id] = a.sentMS
            s.ackMS[id] = a.ackedMS
            s.firstSendMS = min(s.firstSendMS, a.sentMS)
            s.lastAckMS = max(s.lastAckMS, a.ackedMS)
        }
        return s
    }

    static func chargeSucceeded(run: String, n: Int, created: Int64) -> String {
        let amount = 500 + (n * 37) % 20_000
        return """
            {"id":"evt_bench_\(run)_\(n)","object":"event","type":"charge.succeeded","created":\(created),"livemode":false,\
            "data":{"object":{"id":"ch_bench\(run)x\(n)","object":"charge","amount":\(amount),"amount_captured":\(amount),\
            "currency":"gbp","customer":"cus_bench\(n % 500)","payment_intent":"pi_bench\(run)x\(n)","paid":true,\
            "status":"succeeded","receipt_email":"bench\(n % 500)@example.com",\
            "billing_details":{"email":"bench\(n % 500)@example.com","name":"Bench Customer \(n % 500)"},\
            "balance_transaction":{"id":"txn_bench\(run)x\(n)","fee":\(amount / 50 + 20),"currency":"gbp"},\
            "payment_method_details":{"type":"card","card":{"brand":"visa","last4":"4242"}},"metadata":{}}}}
            """
    }

    struct Committed {
        var lastCommitMS: Int64 = 0
        var latencyMS: [Int] = []
        /// Per worker: 202 → that worker's commit.
        var byWorker: [String: [Int]] = [:]
    }

    /// Waits until every worker's `processed` table holds every id, then per event the time
    /// from its 202 to the last worker's commit.
    func waitCommitted(_ fleet: Fleet, workers: [String], sent: Sent) async throws -> Committed {
        let since = sent.firstSendMS - 1000
        let deadline = ContinuousClock.now + .seconds(300)
        var seen: [String: [String: Int64]] = [:]
        while ContinuousClock.now < deadline {
            for w in workers {
                let path = fleet.stateDir + "/\(w).sqlite"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let db = try SQLiteConnection(path: path, readOnly: true)
                var map: [String: Int64] = [:]
                for r in try db.query("SELECT event_id, processed_ms FROM processed WHERE processed_ms >= ?", [.int(since)]) {
                    if let id = r.string(0), let ms = r.int(1) { map[id] = ms }
                }
                seen[w] = map
            }
            let complete = workers.allSatisfy { w in sent.ids.allSatisfy { seen[w]?[$0] != nil } }
            if complete { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        var c = Committed()
        for id in sent.ids {
            let commits = workers.compactMap { seen[$0]?[id] }
            guard commits.count == workers.count, let last = commits.max(), let ack = sent.ackMS[id] else {
                throw CLIError("event \(id) not committed by every worker within 300 s")
            }
            c.lastCommitMS = max(c.lastCommitMS, last)
            c.latencyMS.append(Int(last - ack))
            for w in workers { if let t = seen[w]?[id] { c.byWorker[w, default: []].append(Int(t - ack)) } }
        }
        return c
    }

    /// CPU time (ms) of each fleet process, of the broker (every process whose command line names
    /// the fleet's broker directory: beam.smp and its helpers) and of this load generator.
    func cpuByProcess(_ fleet: Fleet) -> [String: Double] {
        var out: [String: Double] = [:]
        for (name, pid) in fleet.pids { out[name] = WorkerBench.usage(pid: pid).cpuMS }
        let brokerDir = URL(fileURLWithPath: fleet.stateDir).deletingLastPathComponent().path + "/broker"
        var broker = 0.0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            if String(decoding: cmd, as: UTF8.self).contains(brokerDir) { broker += WorkerBench.usage(pid: pid).cpuMS }
        }
        out["broker (beam)"] = broker
        out["bench load generator"] = WorkerBench.usage(pid: getpid()).cpuMS
        return out
    }

    /// (VmRSS, VmHWM) in MiB.
    static func memory(pid: Int32) -> (Double, Double) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func kb(_ key: String) -> Double {
            for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
                return Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
            }
            return 0
        }
        return (kb("VmRSS") / 1024, kb("VmHWM") / 1024)
    }
}
