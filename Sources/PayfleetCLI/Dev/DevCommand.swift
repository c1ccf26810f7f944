import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetAMQP
import PayfleetCore
import Yams

/// `payfleet dev up | down | logs` (DESIGN §6): a private broker and the whole fleet on this
/// machine with the sandbox connectors, under a supervisor that restarts a crashed process.
public struct DevCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dev", abstract: "Run the whole fleet on this machine (sandbox connectors, private broker).",
        subcommands: [Up.self, Down.self, Logs.self, Supervise.self])
    public init() {}

    /// The sandbox phone/billing API key (its SHA-256 is in `config/payfleet.yaml`).
    public static let sandboxAPIKey = "pf_sandbox_phone_key"

    struct StateOptions: ParsableArguments {
        @Option(name: .long, help: "State directory (broker, SQLite files, logs, sandbox outputs).")
        var stateDir = ".payfleet/dev"
    }

    /// `--state-dir DIR` or `--config FILE` (the `DIR/payfleet.yaml` that `up` wrote and every
    /// other command takes, DESIGN §6): either names the running fleet.
    struct FleetOptions: ParsableArguments {
        @Option(name: .long, help: "State directory (broker, SQLite files, logs, sandbox outputs; default .payfleet/dev).")
        var stateDir: String?
        @Option(name: .long, help: "The configuration `dev up` wrote (DIR/payfleet.yaml, as other commands take it): its fleet.")
        var config: String?

        /// The fleet's state directory: `--state-dir`, else the one `--config` belongs to, else the default.
        func resolvedStateDir() throws -> String {
            if let stateDir { return stateDir }
            guard let config else { return ".payfleet/dev" }
            return try Self.stateDir(ofConfig: config)
        }

        /// The directory a generated configuration lives in (`DIR/payfleet.yaml`, with its
        /// `state_dir` = `DIR/state`): the file's own directory when it has the fleet's `run`
        /// directory, else the parent of its `state_dir`.
        static func stateDir(ofConfig config: String) throws -> String {
            let fm = FileManager.default
            let abs = URL(fileURLWithPath: config.hasPrefix("/") ? config : fm.currentDirectoryPath + "/" + config).standardized
            guard fm.fileExists(atPath: abs.path) else { throw CLIFailure("--config: \(config) does not exist") }
            var candidates = [abs.deletingLastPathComponent().path]
            if let root = try? ConfigSection.load(file: abs.path), let state = try? root.string("state_dir") {
                candidates.append(URL(fileURLWithPath: state).deletingLastPathComponent().standardized.path)
            }
            for dir in candidates {
                var isDir: ObjCBool = false
                let generated = URL(fileURLWithPath: dir + "/payfleet.yaml").standardized.path == abs.path
                if generated, fm.fileExists(atPath: dir + "/run", isDirectory: &isDir), isDir.boolValue { return dir }
            }
            throw CLIFailure(
                "--config: \(config) is not a configuration `payfleet dev up` wrote (no run/ directory beside it); pass --state-dir")
        }
    }

    public struct Up: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Start the broker and every process; return once all are ready.")
        @OptionGroup var state: StateOptions
        @Option(name: .long, help: "Sandbox defaults to start from (else $PAYFLEET_CONFIG, else config/payfleet.yaml).")
        var config: String?
        @Option(name: .long, help: "JSON or YAML list of merchants replacing the sandbox merchants.")
        var merchants: String?
        @Option(name: .long, help: "Seconds to wait for every process to be ready.")
        var timeout = 180
        @Flag(name: .long, help: "One JSON object (URLs, ports, pids, sandbox secrets) for scripts.")
        var json = false
        public init() {}

        public func run() async throws {
            let dev = try DevLayout(stateDir: state.stateDir)
            let base = config ?? ProcessInfo.processInfo.environment["PAYFLEET_CONFIG"] ?? dev.repoRoot + "/config/payfleet.yaml"
            if !dev.supervisorRunning {
                try dev.writeConfig(from: base, merchantsFile: merchants)
            }
            let info = try dev.info()
            try dev.startBroker(info)
            // The whole topology before any process, so nothing ingest accepts is unroutable.
            let ctx = try CLIContext.load(configPath: dev.configPath)
            let session = try await AMQPSession.connect(ctx.amqp)
            for w in ctx.workers { try await session.declare { d in try d.declare(worker: w) } }
            await session.close()
            if !dev.supervisorRunning { try dev.startSupervisor() }
            var notReady: [String] = []
            for p in info.processes {
                if !(await dev.waitReady(p, timeout: .seconds(timeout))) { notReady.append(p.name) }
            }
            guard notReady.isEmpty else {
                for name in notReady {
                    FileHandle.standardError.write(Data("--- \(dev.logPath(name)) ---\n\(dev.tail(name, lines: 15))\n".utf8))
                }
                throw CLIFailure("not ready after \(timeout) s: \(notReady.joined(separator: ", ")) (logs in \(dev.logsDir))")
            }
            let summary = try dev.summary(info)
            if json {
                try printJSON(summary)
            } else {
                dev.printHuman(summary, info)
            }
        }
    }

    public struct Down: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Stop every process gracefully, then the broker.")
        @OptionGroup var fleet: FleetOptions
        public init() {}

        public func run() async throws {
            let dev = try DevLayout(stateDir: try fleet.resolvedStateDir())
            if let pid = dev.supervisorPID, DevLayout.isAlive(pid) {
                kill(pid, SIGTERM)
                let deadline = ContinuousClock.now + .seconds(90)
                while DevLayout.isAlive(pid) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
                if DevLayout.isAlive(pid) {
                    // The supervisor did not stop its processes in time: kill them and it.
                    for name in ["ingest"] + DevLayout.workers.map(\.name) {
                        if let child = dev.pid(of: name) { kill(child, SIGKILL) }
                    }
                    kill(pid, SIGKILL)
                }
            }
            try? FileManager.default.removeItem(atPath: dev.runDir + "/supervisor.pid")
            if FileManager.default.fileExists(atPath: dev.configPath) {
                try dev.stopBroker(try dev.info())
            }
            print("Payfleet stopped (state kept in \(dev.stateDir)).")
        }
    }

    public struct Logs: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Show the processes' logs.")
        @OptionGroup var fleet: FleetOptions
        @Argument(help: "Process (ingest, crm-sync, ledger-writer, receipt-sender, settlement-aggregator, supervisor); all when omitted.")
        var process: String?
        @Option(name: [.customShort("n"), .long], help: "Lines from the end of each log.")
        var lines = 40
        @Flag(name: .shortAndLong, help: "Keep printing what is appended.")
        var follow = false
        public init() {}

        public func run() async throws {
            let dev = try DevLayout(stateDir: try fleet.resolvedStateDir())
            let names = try process.map { [$0] } ?? (FileManager.default.contentsOfDirectory(atPath: dev.logsDir)
                .filter { $0.hasSuffix(".log") }.map { String($0.dropLast(4)) }.sorted())
            for name in names {
                guard FileManager.default.fileExists(atPath: dev.logPath(name)) else {
                    throw CLIFailure("no log for '\(name)' in \(dev.logsDir)")
                }
                if names.count > 1 { print("==> \(name) <==") }
                print(dev.tail(name, lines: lines))
            }
            guard follow else { return }
            var offsets = Dictionary(uniqueKeysWithValues: names.map { ($0, dev.size(of: $0)) })
            while true {
                for name in names {
                    let size = dev.size(of: name)
                    if size > offsets[name]!, let h = FileHandle(forReadingAtPath: dev.logPath(name)) {
                        h.seek(toFileOffset: offsets[name]!)
                        let text = String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
                        try? h.close()
                        for line in text.split(separator: "\n") { print(names.count > 1 ? "\(name): \(line)" : String(line)) }
                        fflush(nil)
                    }
                    offsets[name] = size
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// The supervisor `up` starts in its own session: runs every process, restarts one that
    /// exits unexpectedly (with backoff), and on SIGTERM stops them all gracefully.
    public struct Supervise: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Run and restart the fleet's processes (started by `dev up`).", shouldDisplay: false)
        @OptionGroup var fleet: FleetOptions
        public init() {}

        public func run() throws {
            let dev = try DevLayout(stateDir: try fleet.resolvedStateDir())
            try DevSupervisor(dev: dev, processes: try dev.info().processes).run()
        }
    }
}

/// One process of the dev fleet and where it answers `/readyz`.
struct DevProcess: Sendable {
    let name: String
    let port: Int
}

/// Ports and sandbox values read from the generated config.
struct DevInfo {
    let processes: [DevProcess]
    let amqpURL: String
    let managementURL: String
    let amqpPort: Int
    let managementPort: Int
    let ingestURL: String
    let stateDir: String
    let mailDir: String
    let crmFile: String
    let root: ConfigSection
}

/// Where `payfleet dev` keeps things: `DIR/payfleet.yaml` (the generated config later commands
/// take), `DIR/broker`, `DIR/state` (SQLite files and sandbox outputs), `DIR/logs`, `DIR/run`.
struct DevLayout: Sendable {
    static let workers = WorkerIdentity.fleet

    let stateDir: String
    let repoRoot: String
    let binDir: String

    init(stateDir: String) throws {
        let fm = FileManager.default
        let abs = stateDir.hasPrefix("/") ? stateDir : fm.currentDirectoryPath + "/" + stateDir
        self.stateDir = URL(fileURLWithPath: abs).standardized.path
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        binDir = exe.deletingLastPathComponent().path
        // The checkout the binary was built in (…/.build/<config>/payfleet), else the cwd.
        var url = exe
        var found: String?
        while url.path != "/" {
            url.deleteLastPathComponent()
            if fm.fileExists(atPath: url.path + "/scripts/broker.sh") { found = url.path; break }
        }
        if found == nil, fm.fileExists(atPath: fm.currentDirectoryPath + "/scripts/broker.sh") {
            found = fm.currentDirectoryPath
        }
        guard let root = found else {
            throw CLIFailure("cannot find scripts/broker.sh (run `payfleet dev` from a Payfleet checkout)")
        }
        repoRoot = root
        for d in [self.stateDir, logsDir, runDir] { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
    }

    var configPath: String { stateDir + "/payfleet.yaml" }
    var brokerDir: String { stateDir + "/broker" }
    var logsDir: String { stateDir + "/logs" }
    var runDir: String { stateDir + "/run" }
    func logPath(_ name: String) -> String { logsDir + "/\(name).log" }

    var supervisorPID: Int32? {
        (try? String(contentsOfFile: runDir + "/supervisor.pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
    var supervisorRunning: Bool { supervisorPID.map(Self.isAlive) ?? false }

    /// Whether `pid` runs: a zombie (exited, not yet reaped — a container without an init
    /// reaps late) has stopped.
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    func pid(of name: String) -> Int32? {
        (try? String(contentsOfFile: runDir + "/\(name).pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Writes `DIR/payfleet.yaml`: the sandbox defaults with `state_dir` under DIR and, with
    /// `--merchants`, those merchants (the phone API key and Stripe's default merchant follow).
    func writeConfig(from base: String, merchantsFile: String?) throws {
        guard let text = try? String(contentsOfFile: base, encoding: .utf8) else {
            throw CLIFailure("cannot read \(base)")
        }
        guard var doc = try Yams.load(yaml: text) as? [String: Any] else {
            throw CLIFailure("\(base): expected a mapping at the top level")
        }
        doc["state_dir"] = stateDir + "/state"
        // The dev fleet runs ingest and the four workers only: a section of a process it does
        // not run would make `payfleet status` report that process as down.
        doc[WorkerIdentity.demoWorker.configSection] = nil
        if let merchantsFile {
            let list = try Self.readMerchants(merchantsFile)
            doc["merchants"] = list
            let ids = list.compactMap { $0["id"] as? String }
            if var ingest = doc["ingest"] as? [String: Any] {
                if var keys = ingest["api_keys"] as? [[String: Any]] {
                    for i in keys.indices { keys[i]["merchants"] = ids }
                    ingest["api_keys"] = keys
                }
                if var stripe = ingest["stripe"] as? [String: Any], let first = ids.first {
                    stripe["default_merchant"] = first
                    ingest["stripe"] = stripe
                }
                doc["ingest"] = ingest
            }
        }
        let yaml = try Yams.dump(object: doc, sortKeys: true)
        let header = "# Generated by `payfleet dev up` from \(base); pass it as --config to other commands.\n"
        try (header + yaml).write(toFile: configPath, atomically: true, encoding: .utf8)
        // Validate now, with the keys every process reads: a bad merchants file fails here, named.
        let root = try ConfigSection.load(file: configPath)
        for s in try root.sectionList("merchants") { _ = try Merchant.read(s) }
    }

    /// A JSON or YAML list of `{id, name, timezone, cutoff, currencies, stripe_account, adyen_merchant_account}`.
    static func readMerchants(_ path: String) throws -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIFailure("cannot read \(path)") }
        let parsed: Any?
        do { parsed = try Yams.load(yaml: text) } catch {  // YAML is a superset of JSON
            throw CLIFailure("\(path): not JSON or YAML: \(error)")
        }
        guard let list = parsed as? [[String: Any]], !list.isEmpty else {
            throw CLIFailure("\(path): expected a non-empty list of merchants")
        }
        for (i, m) in list.enumerated() where (m["id"] as? String)?.isEmpty ?? true {
            throw CLIFailure("\(path): merchants[\(i)].id: required value missing")
        }
        return list
    }

    func info() throws -> DevInfo {
        let root = try ConfigSection.load(file: configPath)
        let broker = try root.section("broker")
        let amqpURL = try broker.secret("url") ?? "amqp://guest:guest@127.0.0.1:25682/"
        let mgmtURL = try broker.secret("management_url") ?? "http://guest:guest@127.0.0.1:25683/"
        guard let amqpPort = URLComponents(string: amqpURL)?.port, let mgmtPort = URLComponents(string: mgmtURL)?.port else {
            throw CLIFailure("\(configPath): broker.url and broker.management_url need explicit ports for the private broker")
        }
        let ingest = try root.section("ingest")
        let ingestPort = try ingest.int("port", default: 8080)
        let ingestHost = try ingest.string("host", default: "127.0.0.1")
        var processes = [DevProcess(name: "ingest", port: ingestPort)]
        for w in Self.workers where FileManager.default.isExecutableFile(atPath: binDir + "/" + w.name) {
            processes.append(DevProcess(name: w.name, port: try root.section(w.configSection).int("admin_port", default: w.defaultAdminPort)))
        }
        let state = try root.string("state_dir", default: stateDir + "/state")
        return DevInfo(
            processes: processes, amqpURL: amqpURL, managementURL: mgmtURL, amqpPort: amqpPort, managementPort: mgmtPort,
            ingestURL: "http://\(ingestHost):\(ingestPort)", stateDir: state,
            mailDir: try root.section("receipt-sender").string("mail_dir", default: state + "/mail"),
            crmFile: try root.section("crm-sync").string("crm_file", default: state + "/crm.jsonl"),
            root: root)
    }

    func brokerEnvironment(_ info: DevInfo) -> [String: String] {
        [
            "PAYFLEET_BROKER_AMQP_PORT": String(info.amqpPort), "PAYFLEET_BROKER_MGMT_PORT": String(info.managementPort),
            "PAYFLEET_BROKER_DIST_PORT": String(info.amqpPort + 2), "PAYFLEET_BROKER_EPMD_PORT": String(info.amqpPort + 3),
        ]
    }

    func startBroker(_ info: DevInfo) throws {
        let status = try runScript(["start", brokerDir], environment: brokerEnvironment(info), log: logPath("broker"))
        guard status == 0 else { throw CLIFailure("the private broker did not start (see \(logPath("broker")))") }
    }

    func stopBroker(_ info: DevInfo) throws {
        _ = try runScript(["stop", brokerDir], environment: brokerEnvironment(info), log: logPath("broker"))
    }

    private func runScript(_ args: [String], environment: [String: String], log: String) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repoRoot + "/scripts/broker.sh"] + args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        p.standardOutput = try appendHandle(log)
        p.standardError = try appendHandle(log)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    func appendHandle(_ path: String) throws -> FileHandle {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else { throw CLIFailure("cannot write \(path)") }
        h.seekToEndOfFile()
        return h
    }

    /// `payfleet dev supervise` in a new session (it outlives `up`), output to logs/supervisor.log.
    func startSupervisor() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = [binDir + "/payfleet", "dev", "supervise", "--state-dir", stateDir]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = try appendHandle(logPath("supervisor"))
        p.standardError = try appendHandle(logPath("supervisor"))
        try p.run()
        let deadline = Date().addingTimeInterval(10)
        while !supervisorRunning && Date() < deadline { usleep(50_000) }
        guard supervisorRunning else { throw CLIFailure("the supervisor did not start (see \(logPath("supervisor")))") }
    }

    func waitReady(_ p: DevProcess, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        guard let url = URL(string: "http://127.0.0.1:\(p.port)/readyz") else { return false }
        while ContinuousClock.now < deadline {
            if let (_, response) = try? await URLSession.shared.data(from: url),
                (response as? HTTPURLResponse)?.statusCode == 200
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    func summary(_ info: DevInfo) throws -> [String: Any] {
        let ingest = try info.root.section("ingest")
        let stripe = try ingest.section("stripe")
        var standard: [String: String] = [:]
        for s in try ingest.sectionList("standard_webhooks") {
            if let source = try s.string("source"), let secret = try s.secret("secret") { standard[source] = secret }
        }
        var admin: [String: String] = [:]
        var pids: [String: Int] = [:]
        for p in info.processes {
            admin[p.name] = "http://127.0.0.1:\(p.port)"
            if let pid = pid(of: p.name) { pids[p.name] = Int(pid) }
        }
        if let s = supervisorPID { pids["supervisor"] = Int(s) }
        return [
            "ingest_url": info.ingestURL, "state_dir": stateDir, "config": configPath,
            "amqp_url": info.amqpURL, "management_url": info.managementURL,
            "admin_urls": admin, "pids": pids, "logs_dir": logsDir,
            "mail_dir": info.mailDir, "crm_file": info.crmFile,
            "stripe_webhook_secrets": try stripe.stringList("webhook_secrets") ?? [],
            "adyen_hmac_key": try ingest.section("adyen").secret("hmac_key") ?? "",
            "standard_webhooks": standard,
            "api_key": DevCommand.sandboxAPIKey,
        ]
    }

    func printHuman(_ s: [String: Any], _ info: DevInfo) {
        print("Payfleet is running (sandbox).")
        let rows: [(String, String)] = [
            ("ingest", info.ingestURL), ("config", configPath), ("state", stateDir),
            ("amqp", info.amqpURL), ("management", info.managementURL), ("mail_dir", info.mailDir),
            ("crm_file", info.crmFile),
        ]
        for (k, v) in rows { print("  \(k.padding(toLength: 22, withPad: " ", startingAt: 0)) \(v)") }
        let pids = s["pids"] as? [String: Int] ?? [:]
        for p in info.processes {
            let label = p.name.padding(toLength: 22, withPad: " ", startingAt: 0)
            print("  \(label) http://127.0.0.1:\(p.port)/readyz  pid \(pids[p.name].map(String.init) ?? "?")  log \(logPath(p.name))")
        }
        print("Sandbox secrets:")
        print("  stripe webhook secret  \((s["stripe_webhook_secrets"] as? [String])?.first ?? "")")
        print("  adyen hmac key         \(s["adyen_hmac_key"] as? String ?? "")")
        for (source, secret) in (s["standard_webhooks"] as? [String: String] ?? [:]).sorted(by: { $0.key < $1.key }) {
            print("  standard webhooks      \(source): \(secret)")
        }
        print("  api key (phonepay)     \(DevCommand.sandboxAPIKey)")
        print("Try: payfleet simulate --count 500 --config \(configPath)")
        print("Stop with: payfleet dev down --config \(configPath)")
    }

    func tail(_ name: String, lines: Int) -> String {
        guard let text = try? String(contentsOfFile: logPath(name), encoding: .utf8) else { return "" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines + 1).joined(separator: "\n")
    }

    func size(of name: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: logPath(name)))?[.size] as? NSNumber)?.uint64Value ?? 0
    }
}

/// Runs each process on its own thread: start, wait, restart after an unexpected exit with
/// backoff (1 s doubling to 30 s, reset after a minute up); exit 78 (configuration) is not
/// restarted. SIGTERM/SIGINT: SIGTERM every child, wait up to 60 s, then SIGKILL.
final class DevSupervisor: @unchecked Sendable {
    let dev: DevLayout
    let processes: [DevProcess]
    private let stopping = Locked(false)
    private let children = Locked<[String: Process]>([:])

    init(dev: DevLayout, processes: [DevProcess]) {
        self.dev = dev
        self.processes = processes
    }

    func log(_ s: String) {
        FileHandle.standardError.write(Data("\(RFC3339.format(Date())) supervisor: \(s)\n".utf8))
    }

    func run() throws {
        try "\(getpid())\n".write(toFile: dev.runDir + "/supervisor.pid", atomically: true, encoding: .utf8)
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [self] in stopAll() }
            s.resume()
            return s
        }
        let group = DispatchGroup()
        for p in processes {
            group.enter()
            let t = Thread { [self] in
                supervise(p)
                group.leave()
            }
            t.start()
        }
        // The signal sources must outlive the wait (an optimized build would release them early
        // and SIGTERM would then be ignored).
        withExtendedLifetime(sources) { group.wait() }
        try? FileManager.default.removeItem(atPath: dev.runDir + "/supervisor.pid")
        log("all processes stopped")
    }

    private func supervise(_ p: DevProcess) {
        var backoff = 1.0
        while !stopping.current {
            let proc = Process()
            proc.executableURL = URL(fileURLWithPath: dev.binDir + "/" + p.name)
            proc.arguments = ["--config", dev.configPath]
            proc.standardInput = FileHandle.nullDevice
            do {
                let out = try dev.appendHandle(dev.logPath(p.name))
                proc.standardOutput = out
                proc.standardError = out
                try proc.run()
            } catch {
                log("cannot start \(p.name): \(error)")
                return
            }
            children.withLock { $0[p.name] = proc }
            try? "\(proc.processIdentifier)\n".write(toFile: dev.runDir + "/\(p.name).pid", atomically: true, encoding: .utf8)
            log("started \(p.name) pid \(proc.processIdentifier)")
            let started = Date()
            proc.waitUntilExit()
            children.withLock { $0[p.name] = nil }
            let status = proc.terminationStatus
            if stopping.current { break }
            if status == 78 {
                log("\(p.name) exited 78 (configuration error): not restarting; see \(dev.logPath(p.name))")
                return
            }
            if Date().timeIntervalSince(started) > 60 { backoff = 1 }
            let how = proc.terminationReason == .uncaughtSignal ? "was killed by signal \(status)" : "exited with \(status)"
            log("\(p.name) \(how); restarting in \(Int(backoff)) s")
            Thread.sleep(forTimeInterval: backoff)
            backoff = min(backoff * 2, 30)
        }
        try? FileManager.default.removeItem(atPath: dev.runDir + "/\(p.name).pid")
    }

    private func stopAll() {
        guard !stopping.withLock({ s -> Bool in defer { s = true }; return s }) else { return }
        log("stopping every process")
        let running = children.current
        for (_, proc) in running { kill(proc.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && children.current.values.contains(where: { $0.isRunning }) { usleep(100_000) }
        for (_, proc) in children.current where proc.isRunning { kill(proc.processIdentifier, SIGKILL) }
    }
}
