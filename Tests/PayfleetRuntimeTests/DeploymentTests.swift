import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetAMQP
import ArgumentParser
import PayfleetCLI
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// What `deploy/` promises: units systemd accepts and rates well, the notify protocol, alert
/// rules that fire, least-privilege broker users, partitions with standbys, TLS.
@Suite(.serialized)
struct DeploymentTests {
    static let deploy = TestEnvironment.repoRoot + "/deploy"

    static func run(_ tool: String, _ args: [String], environment: [String: String] = [:]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func has(_ tool: String) -> Bool { (try? run("sh", ["-c", "command -v \(tool)"]).0) == 0 }

    @Test("systemd-analyze verify accepts every unit; each service's exposure is at most 2.0")
    func systemdUnits() throws {
        try #require(Self.has("systemd-analyze"), "systemd-analyze is installed by scripts/install-deps.sh")
        let src = Self.deploy + "/systemd"
        let units = try FileManager.default.contentsOfDirectory(atPath: src).filter { $0.hasPrefix("payfleet") }.sorted()
        #expect(units.count == 8, "\(units)")
        // The units run /opt/payfleet/bin/X; point them at the built binaries for verify.
        let dir = TestEnvironment.makeTempDir("units")
        for u in units {
            let text = try String(contentsOfFile: src + "/" + u, encoding: .utf8)
                .replacingOccurrences(of: "/opt/payfleet/bin", with: TestEnvironment.binDir)
            try text.write(toFile: dir + "/" + u, atomically: true, encoding: .utf8)
        }
        let env = ["SYSTEMD_UNIT_PATH": dir + ":"]
        let names = units.map { $0.replacingOccurrences(of: "@.service", with: "@0.service") }
        for name in names {
            let (status, out) = try Self.run("systemd-analyze", ["verify", name], environment: env)
            #expect(status == 0 && out.isEmpty, "\(name): \(out)")
        }
        for name in names where name.hasSuffix(".service") {
            let (status, out) = try Self.run("systemd-analyze", ["security", "--offline=true", name], environment: env)
            let line = out.split(separator: "\n").first { $0.contains("Overall exposure level") } ?? ""
            let score = line.split(separator: ":").last.flatMap { Double($0.split(separator: " ").first ?? "") }
            print("exposure \(name): \(score.map { String($0) } ?? "?")")
            #expect(status == 0)
            #expect(score != nil && score! <= 2.0, "\(name): \(line)")
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("Each process runs as its own user with its own state directory, and the production config puts each state file there")
    func perProcessUsersAndStateDirectories() throws {
        let processes = ["ingest", "crm-sync", "ledger-writer", "receipt-sender", "settlement-aggregator"]
        var users: Set<String> = []
        for p in processes {
            let file = Self.deploy + "/systemd/payfleet-\(p)" + (p == "ingest" ? ".service" : "@.service")
            let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
            func value(_ key: String) -> [String] { lines.filter { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) } }
            #expect(value("User") == ["payfleet-\(p)"], "\(p)")
            #expect(value("Group") == ["payfleet-\(p)"], "\(p)")
            #expect(value("StateDirectory") == ["payfleet/\(p)"], "\(p)")
            #expect(value("UMask") == ["0027"], "\(p)")
            #expect(value("DynamicUser").isEmpty)
            users.insert(value("User").first ?? "")
        }
        #expect(users.count == processes.count)

        let creds = TestEnvironment.makeTempDir("creds-users")
        defer { try? FileManager.default.removeItem(atPath: creds) }
        for (k, v) in ["broker-url": "amqp://u:p@127.0.0.1:5672/", "management-url": "http://u:p@127.0.0.1:15672/"] {
            try v.write(toFile: creds + "/" + k, atomically: true, encoding: .utf8)
        }
        let root = try ConfigSection.load(
            file: TestEnvironment.repoRoot + "/config/payfleet.production.yaml", environment: ["CREDENTIALS_DIRECTORY": creds])
        #expect(try root.section("ingest").string("state_file") == "/var/lib/payfleet/ingest/ingest.sqlite")
        #expect(try root.section("cli").string("audit_log") == "/var/log/payfleet/audit.jsonl")
        let amqp = try RuntimeConfiguration.readBroker(root)
        #expect(amqp.declareEventsExchange == false)
        for w in WorkerIdentity.fleet {
            for partition in [0, 1] {
                var s = try root.section(w.name)
                if partition == 1 {
                    // Partitioned: every partition's file stays in the worker's own directory.
                    let text = try String(contentsOfFile: TestEnvironment.repoRoot + "/config/payfleet.production.yaml", encoding: .utf8)
                        .replacingOccurrences(of: "\(w.name):\n  state_dir", with: "\(w.name):\n  partitions: 2\n  state_dir")
                        .replacingOccurrences(of: "  partitions: 1\n", with: "")
                    let file = creds + "/p.yaml"
                    try text.write(toFile: file, atomically: true, encoding: .utf8)
                    s = try ConfigSection.load(file: file, environment: ["CREDENTIALS_DIRECTORY": creds]).section(w.name)
                }
                let rc = try RuntimeConfiguration.read(
                    root: root, section: s, worker: w.name, routingKeys: w.routingKeys, partitionKey: w.partitionKey,
                    defaultAdminPort: 9100, partition: partition)
                #expect(rc.statePath.hasPrefix("/var/lib/payfleet/\(w.name)/"), "\(rc.statePath)")
                #expect(rc.statePath.hasSuffix(partition == 0 ? "\(w.name).sqlite" : "\(w.name).p1.sqlite"), "\(rc.statePath)")
            }
        }
    }

    @Test("config/payfleet.production.yaml is valid for every process, secrets read from the credentials directory")
    func productionConfig() throws {
        let creds = TestEnvironment.makeTempDir("creds")
        defer { try? FileManager.default.removeItem(atPath: creds) }
        let secrets = [
            "broker-url": "amqp://payfleet-x:secret-pw@127.0.0.1:5672/", "management-url": "http://u:p@127.0.0.1:15672/",
            "stripe-webhook-secrets": "whsec_test_secret_a\nwhsec_test_secret_b", "adyen-hmac-key": "00112233445566778899aabbccddeeff",
            "admin-token": "admin-token-of-at-least-32-characters-0123",
        ]
        for (k, v) in secrets { try v.write(toFile: creds + "/" + k, atomically: true, encoding: .utf8) }
        let config = TestEnvironment.repoRoot + "/config/payfleet.production.yaml"
        for p in ["ingest", "crm-sync", "ledger-writer", "receipt-sender", "settlement-aggregator"] {
            let (status, out) = try Self.run(
                TestEnvironment.binDir + "/" + p, ["--config", config, "--check-config"], environment: ["CREDENTIALS_DIRECTORY": creds])
            #expect(status == 0, "\(p): \(out)")
            #expect(!out.contains("secret-pw"))
        }
        // Without the credentials the error names the key, not the secret.
        let (status, out) = try Self.run(
            TestEnvironment.binDir + "/ledger-writer", ["--config", config, "--check-config"],
            environment: ["CREDENTIALS_DIRECTORY": creds + "/missing"])
        #expect(status == 78 && out.contains("broker.url_file"), "\(out)")
    }

    @Test("promtool accepts the alert rules and each alert fires on its series (alerts_test.yml)")
    func alertRules() throws {
        try #require(Self.has("promtool"), "promtool comes with Debian's prometheus package (scripts/install-deps.sh)")
        let dir = Self.deploy + "/prometheus"
        let (c, checkOut) = try Self.run("promtool", ["check", "rules", dir + "/alerts.yml"])
        #expect(c == 0, "\(checkOut)")
        #expect(checkOut.contains("SUCCESS: 18 rules found"))
        let (t, testOut) = try Self.run("sh", ["-c", "cd '\(dir)' && promtool test rules alerts_test.yml"])
        #expect(t == 0, "\(testOut)")
    }

    @Test("sd_notify: READY=1 once up, WATCHDOG=1 periodically, STOPPING=1 on SIGTERM")
    func systemdNotify() async throws {
        try await DemoFleet.with(prefix: "notify") { fleet in
            let socket = try NotifySocket(path: "/tmp/pf-notify-\(UInt32.random(in: 0...999_999)).sock")
            defer { socket.close() }
            fleet.process = try fleet.startInstance(
                partition: 0, environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"])
            var messages: [String] = []
            let ready = await eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                messages += socket.drain()
                return messages.contains { $0.hasPrefix("READY=1") }
            }
            #expect(ready, "log: \(fleet.process?.log.suffix(1500) ?? "")")
            // READY only after the broker connections and database: the queue exists by then.
            #expect(try await fleet.depth(fleet.queue) == 0)
            messages = []
            try await Task.sleep(for: .seconds(2))
            messages += socket.drain()
            let pings = messages.filter { $0 == "WATCHDOG=1" }.count
            #expect(pings >= 3, "WATCHDOG=1 every 200 ms for 2 s, got \(pings): \(messages)")
            fleet.process?.signal(SIGTERM)
            let status = await fleet.process?.wait(timeout: .seconds(20))
            #expect(status == 0, "exit \(status.map(String.init) ?? "none") (\(fleet.process.map { "\($0.process.terminationReason == .uncaughtSignal ? "signal" : "exit")" } ?? "")); log: \(fleet.process?.log.suffix(3000) ?? "")")
            messages += socket.drain()
            #expect(messages.contains("STOPPING=1"), "\(messages)")
        }
    }

    @Test("4 partitions, 2 instances each: per-key order kept, killing each active instance loses and doubles nothing")
    func partitionsWithStandbys() async throws {
        var o = WorkerProcess.Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: "parts",
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.partitions = 4
        o.adminPort = 0
        o.batchSize = 50
        try await WorkerProcess.with(o) { fleet in
            try await fleet.declare()
            var instances: [Int: [ChildProcess]] = [:]
            for p in 0..<4 {
                instances[p] = [try fleet.startInstance(partition: p), try fleet.startInstance(partition: p)]
            }
            let merchants = (0..<16).map { "m_part\($0)" }
            let total = 4_000
            let events = (0..<total).map { n in EventFactory.payment(n, prefix: fleet.name, merchant: merchants[n % 16]) }
            let index = Dictionary(uniqueKeysWithValues: events.enumerated().map { ($1.id, $0) })
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected(timeout: .seconds(30)))
            func publish(_ slice: ArraySlice<PaymentEvent>) async { await fleet.publishPartitioned(slice, via: pub) }
            await publish(events[0..<total / 2])
            // Kill -9 the active instance of every partition (the one the broker delivers to:
            // its deliveries counter moved) and publish the rest: the standby must take over.
            func deliveries(_ c: ChildProcess) async -> Int {
                guard let line = c.log.split(separator: "\n").first(where: { $0.contains("admin listener up") }),
                    let port = line.split(separator: " ").first(where: { $0.hasPrefix("admin.port=") })?.dropFirst(11),
                    let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
                    let (data, _) = try? await URLSession.shared.data(from: url)
                else { return -1 }
                var sum = 0
                for line in String(decoding: data, as: UTF8.self).split(separator: "\n")
                where line.hasPrefix("payfleet_deliveries_total") {
                    if let v = line.split(separator: " ").last, let d = Double(v) { sum += Int(d) }
                }
                return sum
            }
            _ = await eventually(timeout: .seconds(60)) {
                var sum = 0
                for list in instances.values { for c in list { sum += max(0, await deliveries(c)) } }
                return sum >= total / 2
            }
            for p in 0..<4 {
                let counts = [await deliveries(instances[p]![0]), await deliveries(instances[p]![1])]
                let active = counts.firstIndex { $0 > 0 }
                #expect(counts.filter { $0 > 0 }.count == 1, "partition \(p): one active instance, deliveries \(counts)")
                await instances[p]![active ?? 0].killNow()
            }
            await publish(events[(total / 2)...])
            func applied() throws -> [(partition: Int, ids: [String])] {
                try (0..<4).map { p in
                    guard FileManager.default.fileExists(atPath: fleet.dbPath(partition: p)) else { return (p, []) }
                    let db = try SQLiteConnection(path: fleet.dbPath(partition: p), readOnly: true)
                    return (p, try db.query("SELECT event_id FROM applied ORDER BY seq").compactMap { $0.string(0) })
                }
            }
            let done = try await eventually(timeout: .seconds(120), every: .milliseconds(200)) {
                try applied().reduce(0) { $0 + $1.ids.count } >= total
            }
            let counts = try applied().map(\.ids.count)
            #expect(done, "applied \(counts)")
            try await Task.sleep(for: .milliseconds(500))
            let all = try applied()
            let ids = all.flatMap(\.ids)
            #expect(ids.count == total, "applied \(ids.count) rows for \(total) events: \(counts), dir \(fleet.dir)")
            #expect(Set(ids).count == total, "every event exactly once")
            // Each merchant lives on one partition, and its events were applied in publish order.
            var partitionOf: [String: Int] = [:]
            var lastIndex: [String: Int] = [:]
            var outOfOrder = 0
            for (p, list) in all {
                for id in list {
                    guard let i = index[id] else { continue }
                    let m = events[i].merchantID
                    #expect(partitionOf[m, default: p] == p, "merchant \(m) on two partitions")
                    partitionOf[m] = p
                    if let last = lastIndex[m], last > i { outOfOrder += 1 }
                    lastIndex[m] = i
                }
            }
            #expect(outOfOrder == 0, "\(outOfOrder) events applied before an earlier one of the same key")
            #expect(Set(partitionOf.values).count > 1, "keys spread over partitions: \(partitionOf)")
            for p in 0..<4 { #expect(try await fleet.depth(fleet.topology.queue(partition: p)) == 0) }
            for list in instances.values { for c in list { await c.killNow() } }
        }
    }

    @Test("A worker's broker user can neither publish to payfleet.events, nor redeclare or delete it, nor read another worker's queue")
    func leastPrivilege() async throws {
        let crm = WorkerTopology(name: TestEnvironment.uniqueName("lp-crm"), routingKeys: ["payment.succeeded"])
        let ledger = WorkerTopology(name: TestEnvironment.uniqueName("lp-ledger"), routingKeys: ["payment.succeeded"])
        let admin = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let s = try await AMQPSession.connect(admin)
        try await s.declare { d in
            try d.declare(worker: crm)
            try d.declare(worker: ledger)
        }
        let perm = Topology.permissions(workers: [crm, ledger]).first { $0.user == "payfleet-\(crm.name)" }!
        let user = perm.user
        let password = "pw-\(UUID().uuidString.prefix(8))"
        func ctl(_ args: [String]) throws -> Int32 {
            try Self.run("bash", [TestEnvironment.repoRoot + "/scripts/broker.sh", "ctl", TestEnvironment.brokerDir] + args).0
        }
        _ = try ctl(["delete_user", user])
        #expect(try ctl(["add_user", user, password]) == 0)
        #expect(try ctl(["set_permissions", "-p", "/", user, perm.configure, perm.write, perm.read]) == 0)
        defer { _ = try? ctl(["delete_user", user]) }

        var url = URLComponents(string: TestEnvironment.amqpURL)!
        url.user = user
        url.password = password
        var limited = try AMQPConfiguration(url: url.string!)
        // As in production (broker.declare_events_exchange: false): the exchange is only checked.
        limited.declareEventsExchange = false
        // Its own topology: declare, publish to its retry tier (default exchange), read its queue.
        let own = try await AMQPSession.connect(limited)
        try await own.declare { d in try d.declare(worker: crm) }
        try await own.publish(AMQPOutgoing(
            exchange: "", routingKey: crm.retryQueue(delayMS: crm.retryDelaysMS[0], partition: 0),
            message: AMQPMessage(body: Array("{}".utf8))))
        _ = try await own.get(queue: crm.queue(partition: 0))
        await own.close()

        func refused(_ body: (AMQPSession) async throws -> Void) async -> String? {
            guard let session = try? await AMQPSession.connect(limited) else { return "cannot connect" }
            defer { Task { await session.close() } }
            do {
                try await body(session)
                return nil
            } catch let e as AMQPError {
                return e.replyCode == 403 ? "403" : e.description
            } catch { return "\(error)" }
        }
        let publish = await refused { session in
            try await session.publish(AMQPOutgoing(
                exchange: Topology.eventsExchange, routingKey: "payment.succeeded", message: AMQPMessage(body: Array("{}".utf8))))
        }
        #expect(publish == "403", "publish to payfleet.events: \(publish ?? "allowed")")
        let read = await refused { session in _ = try await session.get(queue: ledger.queue(partition: 0)) }
        #expect(read == "403", "basic.get on another worker's queue: \(read ?? "allowed")")
        let dlq = await refused { session in _ = try await session.get(queue: ledger.dlq) }
        #expect(dlq == "403", "basic.get on another worker's DLQ: \(dlq ?? "allowed")")
        var active = limited
        active.declareEventsExchange = true
        let redeclare = await refused { _ in
            let session = try await AMQPSession.connect(active)
            defer { Task { await session.close() } }
            try await session.declare { d in try d.eventsExchange() }
        }
        #expect(redeclare == "403", "exchange.declare payfleet.events: \(redeclare ?? "allowed")")
        let delete = await refused { session in try await session.declare { d in try d.delete(exchange: Topology.eventsExchange) } }
        #expect(delete == "403", "exchange.delete payfleet.events: \(delete ?? "allowed")")
        // Ingest's user: publish to payfleet.events only, configure nothing.
        let ingestPerm = Topology.permissions(workers: [crm, ledger]).first { $0.user == "payfleet-ingest" }!
        #expect(ingestPerm.configure == "^$")

        try await s.declare { d in
            for q in crm.declarations.queues + ledger.declarations.queues { try d.delete(queue: q.name) }
        }
        await s.close()
    }

    @Test("payfleet topology declare refuses a change of partitions while the old layout's queues hold messages")
    func repartitioningRefused() async throws {
        let dir = TestEnvironment.makeTempDir("repart")
        let base = TestEnvironment.uniqueName("rp")
        let names = WorkerIdentity.fleet.map { ($0.name, "\(base)-\($0.name)") }
        func write(partitions: Int) throws {
            var yaml = "broker:\n  url: \(TestEnvironment.amqpURL)\nstate_dir: \(dir)\n"
            for (section, name) in names {
                yaml += "\(section):\n  name: \(name)\n  partitions: \(section == "crm-sync" ? partitions : 1)\n"
            }
            try yaml.write(toFile: dir + "/payfleet.yaml", atomically: true, encoding: .utf8)
        }
        func declare() async throws {
            var c = try PayfleetCommand.parseAsRoot(["topology", "declare", "--config", dir + "/payfleet.yaml"])
            guard var a = c as? AsyncParsableCommand else { return try c.run() }
            try await a.run()
            c = a
        }
        let crm = names[0].1
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        try write(partitions: 2)
        try await declare()
        let pub = AMQPPublisher(configuration: amqp, name: "repart", logger: .init(label: "test"))
        #expect(await pub.waitUntilConnected(timeout: .seconds(30)))
        for i in 0..<3 {
            try await pub.publish(AMQPOutgoing(exchange: "", routingKey: "payfleet.\(crm).p1", message: AMQPMessage(body: Array("{\"n\":\(i)}".utf8))))
        }
        pub.close()
        try write(partitions: 1)
        var refusal = ""
        do { try await declare() } catch { refusal = "\(error)" }
        #expect(refusal.contains("payfleet.\(crm).p1 holds 3 messages"), "\(refusal)")
        // Drained: the change goes through.
        let s = try await AMQPSession.connect(amqp)
        _ = try await s.declare { d in try d.purge(queue: "payfleet.\(crm).p1") }
        try await declare()
        #expect(try await s.inspect(queue: "payfleet.\(crm)").messages == 0)
        // Clean up both layouts.
        let topologies = names.map { WorkerTopology(name: $0.1, routingKeys: [], partitions: 1) }
            + [WorkerTopology(name: crm, routingKeys: [], partitions: 2)]
        _ = try? await s.declare { d in
            for t in topologies {
                for q in t.declarations.queues { try d.delete(queue: q.name) }
                for e in t.declarations.exchanges { try d.delete(exchange: e.name) }
            }
        }
        await s.close()
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("A worker runs over TLS (amqps with the CA and client certificate openssl made) end to end")
    func workerOverTLS() async throws {
        let tlsURL = try #require(TestEnvironment.amqpsURL, "the private broker has a TLS listener")
        var o = WorkerProcess.Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: "tls",
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.brokerURL = tlsURL
        try await WorkerProcess.with(o) { fleet in
            try await fleet.declare()
            let events = (0..<500).map { EventFactory.payment($0, prefix: fleet.name) }
            try await fleet.publish(events, via: fleet.publisher())
            try fleet.start()
            let done = try await eventually(timeout: .seconds(60)) { try fleet.count("applied") >= 500 }
            #expect(done, "log: \(fleet.process?.log.suffix(1500) ?? "")")
            #expect(try fleet.count("applied") == 500)
        }
    }
}

/// A datagram socket bound where `NOTIFY_SOCKET` points, as systemd's would be.
final class NotifySocket {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, rc == 0 else { throw POSIXError(.EADDRINUSE) }
        _ = fcntl(fd, F_SETFL, O_NONBLOCK)
    }

    /// Every datagram received so far.
    func drain() -> [String] {
        var out: [String] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += String(decoding: buf[0..<n], as: UTF8.self).split(separator: "\n").map(String.init)
        }
        return out
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
