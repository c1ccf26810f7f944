import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker

/// `payfleet status`: per worker and partition — queue ready/unacked/depth, consumers,
/// publish and deliver rates, retry-tier and DLQ depths, the worker's `/readyz` and last error;
/// ingest's readiness and outbox backlog. Exits 2 when a DLQ holds messages, a worker or
/// ingest is down or not ready, or a queue is missing — so it doubles as a monitoring check.
public struct StatusCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Queues, rates, dead letters and readiness of every configured worker.")
    @OptionGroup public var global: GlobalOptions
    @Option(name: .customLong("worker"), help: "Only this worker (repeatable): config section or queue-name stem.")
    public var workers: [String] = []
    @Flag(name: .customLong("no-management"), help: "Do not use the management HTTP API (AMQP only, less detail).")
    public var noManagement = false
    @Option(help: "Seconds to wait for each HTTP probe.") public var timeout: Double = 3
    public init() {}

    public func run() async throws {
        let report = try await report()
        if global.json {
            try printJSON(report.json)
        } else {
            print(report.render(colour: Terminal.wantsColour))
        }
        if !report.problems.isEmpty { throw ExitCode(2) }
    }

    /// What `run` prints (the console shows it too).
    public func report() async throws -> StatusReport {
        let ctx = try CLIContext.load(global)
        let root = try ConfigSection.load(file: global.configPath, environment: ProcessInfo.processInfo.environment)
        let selected = try workers.isEmpty ? ctx.configuredWorkers.map { try ctx.worker($0) } : workers.map { try ctx.worker($0) }
        var ingestURL: String?
        if workers.isEmpty, root.has("ingest") {
            let s = try root.section("ingest")
            var host = try s.string("host", default: "127.0.0.1")
            if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
            ingestURL = "http://\(host):\(try s.int("port", default: 8080, range: 0...65535))"
        }
        return try await StatusReport.collect(
            ctx, workers: selected, ingestURL: ingestURL, management: noManagement ? nil : ctx.managementURL, timeout: timeout)
    }
}

/// What `status` found.
public struct StatusReport: Sendable {
    public struct Row: Sendable {
        public var name: String
        public var section: String
        public var partition: Int
        public var queue: String
        public var exists = true
        public var ready = 0
        public var unacked: Int?
        public var consumers = 0
        public var publishRate: Double?
        public var deliverRate: Double?
        public var retry: [(queue: String, depth: Int)] = []
        public var dlq: String
        public var dlqDepth = 0
        public var adminURL: String?
        /// "ready", "not ready", "down" or "unknown" (no admin port configured).
        public var workerState = "unknown"
        public var readyz: [String: String] = [:]
        public var lastError: String?
        public var depth: Int { ready + (unacked ?? 0) }
        public var retryDepth: Int { retry.reduce(0) { $0 + $1.depth } }
    }

    public var rows: [Row] = []
    public var ingest: (url: String, ready: Bool, outboxPending: Int?, detail: String?)?
    public var source = "amqp"
    public var notes: [String] = []

    public var problems: [String] {
        var p: [String] = []
        var seenDLQ = Set<String>()
        for r in rows {
            if !r.exists { p.append("\(r.queue) does not exist") }
            if r.dlqDepth > 0, seenDLQ.insert(r.dlq).inserted { p.append("\(r.dlq) holds \(r.dlqDepth) dead letter\(r.dlqDepth == 1 ? "" : "s")") }
            if r.workerState == "down" || r.workerState == "not ready" {
                p.append("\(r.name) partition \(r.partition) is \(r.workerState)" + (r.adminURL.map { " (\($0)/readyz)" } ?? ""))
            }
        }
        if let i = ingest, !i.ready { p.append("ingest is not ready (\(i.url)/readyz)") }
        return p
    }

    public static func collect(
        _ ctx: CLIContext, workers: [RuntimeConfiguration], ingestURL: String?, management: String?, timeout: Double
    ) async throws -> StatusReport {
        var report = StatusReport()
        var mgmt: [String: [String: Any]]?
        if let management {
            do {
                mgmt = try await ManagementAPI(management, timeout: timeout).queues(vhost: ctx.amqp.vhost)
                report.source = "management"
            } catch {
                report.notes.append("management API unavailable (\(error)); AMQP counts only")
            }
        }
        var probe = QueueProbe(amqp: ctx.amqp)
        defer { probe.close() }
        for rc in workers {
            let topo = rc.topology
            let dlq = try await probe.inspect(topo.dlq)
            for p in 0..<topo.partitions {
                let q = topo.queue(partition: p)
                var row = Row(name: rc.worker, section: ctx.section(of: rc), partition: p, queue: q, dlq: topo.dlq)
                if let main = try await probe.inspect(q) {
                    row.ready = main.messages
                    row.consumers = main.consumers
                } else {
                    row.exists = false
                }
                row.dlqDepth = dlq?.messages ?? 0
                for d in topo.retryDelaysMS {
                    let rq = topo.retryQueue(delayMS: d, partition: p)
                    row.retry.append((rq, try await probe.inspect(rq)?.messages ?? 0))
                }
                if let m = mgmt?[q] {
                    row.unacked = m["messages_unacknowledged"] as? Int
                    let stats = m["message_stats"] as? [String: Any]
                    row.publishRate = ((stats?["publish_details"] as? [String: Any])?["rate"] as? NSNumber)?.doubleValue ?? 0
                    row.deliverRate = ((stats?["deliver_get_details"] as? [String: Any])?["rate"] as? NSNumber)?.doubleValue ?? 0
                }
                if rc.adminPort > 0 {
                    let url = "http://\(rc.adminHost):\(rc.adminPort + p)"
                    row.adminURL = url
                    switch await HTTPProbe.get(url + "/readyz", timeout: timeout) {
                    case .none:
                        row.workerState = "down"
                    case .some(let (status, body)):
                        row.workerState = status == 200 ? "ready" : "not ready"
                        if let o = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] {
                            for (k, v) in o where k != "ready" { row.readyz[k] = "\(v)" }
                        }
                        row.lastError = row.readyz["last_error"]
                    }
                }
                report.rows.append(row)
            }
        }
        if let ingestURL {
            let ready = await HTTPProbe.get(ingestURL + "/readyz", timeout: timeout)
            var pending: Int?
            if let metrics = await HTTPProbe.get(ingestURL + "/metrics", timeout: timeout) {
                for line in metrics.body.split(separator: "\n") where line.hasPrefix("payfleet_ingest_outbox_pending") {
                    if let v = line.split(separator: " ").last, let d = Double(v) { pending = Int(d) }
                }
            }
            report.ingest = (ingestURL, ready?.status == 200, pending, ready == nil ? "down" : ready?.body)
        }
        return report
    }

    /// DESIGN §6: `{"ingest": {"ready", "outbox_pending"}, "workers": [{"name", "partition",
    /// "ready", "depth", "unacked", "consumers", "retry_depth", "dlq_depth"}]}` — `ready` of a
    /// worker row is its ready message count (beside unacked); the process's readiness is
    /// `worker_ready`.
    public var json: [String: Any] {
        var ingestJSON: Any = NSNull()
        if let i = ingest {
            ingestJSON = ["ready": i.ready, "outbox_pending": orNull(i.outboxPending), "url": i.url]
        }
        let workers: [[String: Any]] = rows.map { r in
            [
                "name": r.name, "section": r.section, "partition": r.partition, "queue": r.queue, "exists": r.exists,
                "ready": r.ready, "depth": r.depth, "unacked": orNull(r.unacked), "consumers": r.consumers,
                "publish_rate": orNull(r.publishRate), "deliver_rate": orNull(r.deliverRate),
                "retry_depth": r.retryDepth,
                "retry": Dictionary(uniqueKeysWithValues: r.retry.map { ($0.queue, $0.depth) }),
                "dlq": r.dlq, "dlq_depth": r.dlqDepth,
                "worker_ready": r.workerState == "unknown" ? NSNull() as Any : (r.workerState == "ready") as Any,
                "worker_state": r.workerState, "admin_url": orNull(r.adminURL),
                "last_error": orNull(r.lastError), "readyz": r.readyz,
            ]
        }
        return [
            "ingest": ingestJSON, "workers": workers, "source": source, "healthy": problems.isEmpty,
            "problems": problems, "notes": notes,
        ]
    }

    public func render(colour: Bool) -> String {
        func paint(_ s: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
        func rate(_ d: Double?) -> String { d.map { String(format: "%.1f", $0) } ?? "-" }
        let header = ["WORKER", "P", "READY", "UNACKED", "CONSUMERS", "IN/s", "OUT/s", "RETRY", "DLQ", "STATE", "LAST ERROR"]
        let rowsText = rows.map { r in
            [r.name, String(r.partition), r.exists ? String(r.ready) : "missing", r.unacked.map(String.init) ?? "-",
             String(r.consumers), rate(r.publishRate), rate(r.deliverRate), String(r.retryDepth), String(r.dlqDepth),
             r.workerState, Table.clip(r.lastError ?? "", 60)]
        }
        var lines = Table.render(header: header, rows: rowsText, rightAligned: [1, 2, 3, 4, 5, 6, 7, 8])
        // Colour after layout, so escape codes do not skew the column widths.
        for (i, r) in rows.enumerated() {
            var l = lines[i + 1]
            if r.workerState == "ready" { l = l.replacingOccurrences(of: " ready", with: " " + paint("ready", "32")) }
            if r.workerState == "down" || r.workerState == "not ready" || !r.exists { l = paint(l, "31") }
            else if r.dlqDepth > 0 { l = paint(l, "33") }
            lines[i + 1] = l
        }
        if let i = ingest {
            let state = i.ready ? paint("ready", "32") : paint("not ready", "31")
            lines.append("ingest \(i.url): \(state), outbox pending \(i.outboxPending.map(String.init) ?? "-")")
        }
        lines.append("source: \(source == "management" ? "management API + AMQP" : "AMQP only (no management API: no unacked counts or rates)")")
        for n in notes { lines.append("note: \(n)") }
        let p = problems
        lines.append(p.isEmpty ? paint("healthy", "32") : paint("problems:", "31"))
        for x in p { lines.append("  - \(x)") }
        return lines.joined(separator: "\n")
    }
}

/// Passive declares over one connection; a missing queue (404 closes the channel) costs a
/// reconnect and answers nil.
struct QueueProbe {
    let amqp: AMQPConfiguration
    var session: AMQPSession?

    init(amqp: AMQPConfiguration) { self.amqp = amqp }

    mutating func inspect(_ queue: String) async throws -> (messages: Int, consumers: Int)? {
        if session == nil {
            do { session = try await AMQPSession.connect(amqp) } catch {
                throw CLIFailure("cannot connect to the broker at \(amqp): \(error)")
            }
        }
        do {
            return try await session!.inspect(queue: queue)
        } catch let e as AMQPError where e.replyCode == 404 {
            await session?.close()
            session = nil
            return nil
        }
    }

    func close() {
        if let s = session { Task { await s.close() } }
    }
}

/// RabbitMQ's management HTTP API (`broker.management_url`, credentials in the URL).
struct ManagementAPI {
    let base: URL
    let authorization: String?
    let timeout: Double

    init(_ url: String, timeout: Double) throws {
        guard var c = URLComponents(string: url), c.scheme == "http" || c.scheme == "https", c.host != nil else {
            throw CLIFailure("broker.management_url: '\(ManagementAPI.redact(url))' is not an http(s) URL")
        }
        if let user = c.user {
            let pass = c.password ?? ""
            authorization = "Basic " + Data("\(user.removingPercentEncoding ?? user):\(pass.removingPercentEncoding ?? pass)".utf8).base64EncodedString()
        } else {
            authorization = nil
        }
        c.user = nil
        c.password = nil
        c.path = ""
        base = c.url!
        self.timeout = timeout
    }

    static func redact(_ url: String) -> String {
        guard var c = URLComponents(string: url), c.password != nil else { return url }
        c.password = "***"
        return c.string ?? url
    }

    /// Every queue of the vhost by name (only the columns status needs).
    func queues(vhost: String) async throws -> [String: [String: Any]] {
        let v = vhost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? vhost
        guard let url = URL(string: base.absoluteString.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            + "/api/queues/\(v)?columns=name,messages,messages_ready,messages_unacknowledged,consumers,message_stats")
        else { throw CLIFailure("bad management URL") }
        var req = URLRequest(url: url, timeoutInterval: timeout)
        if let authorization { req.setValue(authorization, forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: req)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else { throw CLIFailure("HTTP \(status) from \(base.absoluteString)api/queues") }
        guard let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw CLIFailure("unexpected answer from \(base.absoluteString)api/queues")
        }
        var out: [String: [String: Any]] = [:]
        for q in list { if let n = q["name"] as? String { out[n] = q } }
        return out
    }
}

enum HTTPProbe {
    /// GET with a timeout: (status, body), or nil when nothing answers.
    static func get(_ url: String, timeout: Double) async -> (status: Int, body: String)? {
        guard let u = URL(string: url) else { return nil }
        let req = URLRequest(url: u, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        guard let (data, response) = try? await URLSession.shared.data(for: req) else { return nil }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}

enum Terminal {
    /// Colour only on a terminal, never when piped, and never with `NO_COLOR` or `TERM=dumb`.
    static var wantsColour: Bool {
        let env = ProcessInfo.processInfo.environment
        return isatty(STDOUT_FILENO) == 1 && env["NO_COLOR"] == nil && env["TERM"] != "dumb"
    }
}
