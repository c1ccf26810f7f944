import ArgumentParser
import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import PayfleetWorker

/// `payfleet partitions resize WORKER --to N`: changes a worker's number of partitions with the
/// old queues drained, keeping per-key order and exactly-once (docs/operations.md, "Change the
/// number of partitions").
///
/// Why ingest's relay is paused rather than new events parked in a holding queue: a holding
/// queue keeps new events away from the old queues, but emptying it into the new layout cannot
/// be ordered against events that arrive meanwhile (between binding the new layout and the
/// last held message, a key's new event would overtake its held ones) unless publishing stops
/// for that moment, which is a pause anyway. The relay's pause does all of it: ingest keeps
/// accepting (each event committed to its outbox, answered 202), the outbox keeps them in
/// order, and the relay publishes them to the new layout when the pause is lifted.
public struct PartitionsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "partitions", abstract: "Change a worker's number of partitions.", subcommands: [Resize.self])
    public init() {}

    public struct Resize: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Pause ingest's relay, drain the worker's queues, split its SQLite state by key into N files, declare N partitions, resume.",
            discussion: """
                Run it where ingest's state file and every partition file of the worker are. Once the
                old queues are empty it runs --stop-command (or waits for you to stop every instance),
                then moves each key's state, and every file's processed ids, to the new files, keeps
                the old files in <state dir>/<worker>.resize-<P>to<N>-<time>/old, declares the new
                layout and lifts the pause. Then set <worker>.partitions to N and start instances
                0..N-1. Anything that fails before the new layout is declared changes nothing and
                lifts the pause.
                """)
        @OptionGroup public var global: GlobalOptions
        @Argument(help: "The worker's config section (demo-worker, settlement-aggregator, ledger-writer, crm-sync, receipt-sender).")
        public var worker: String
        @Option(name: .customLong("to"), help: "The new number of partitions (1–256).")
        public var to: Int
        @Option(name: .customLong("stop-command"), help: "Shell command run once the queues are drained, to stop every instance of the worker.")
        public var stopCommand: String?
        @Option(name: .customLong("drain-timeout"), help: "How long the old queues and retry tiers may take to empty.")
        public var drainTimeout = "10m"
        @Option(name: .customLong("stop-timeout"), help: "How long the instances may take to stop consuming.")
        public var stopTimeout = "10m"
        @Option(name: .customLong("pause-timeout"), help: "How long ingest's relay may take to acknowledge the pause.")
        public var pauseTimeout = "30s"
        @Option(name: .customLong("ingest-state-file"), help: "ingest's SQLite file (else from the configuration).")
        public var ingestStateFile: String?
        @Flag(name: .customLong("ingest-stopped"), help: "ingest is stopped: do not wait for its relay to acknowledge the pause.")
        public var ingestStopped = false
        @Flag(name: .customLong("dry-run"), help: "Check the preconditions and print the plan; change nothing.")
        public var dryRun = false
        public init() {}

        public func validate() throws {
            guard (1...256).contains(to) else { throw ValidationError("--to must be 1–256") }
            for (name, value) in [("drain-timeout", drainTimeout), ("stop-timeout", stopTimeout), ("pause-timeout", pauseTimeout)] {
                guard ConfigSection.parseDurationMS(value) != nil else { throw ValidationError("--\(name): '\(value)' is not a duration") }
            }
        }

        public func run() async throws {
            var r = Resizer(command: self)
            try await r.run()
        }
    }
}

/// The steps of one resize, with what it measured.
struct Resizer {
    let command: PartitionsCommand.Resize
    var figures: [String: Any] = [:]
    var say: (String) -> Void

    init(command: PartitionsCommand.Resize) {
        self.command = command
        let toStderr = command.global.json
        say = { line in
            if toStderr { FileHandle.standardError.write(Data("resize: \(line)\n".utf8)) } else {
                FileHandle.standardOutput.write(Data("resize: \(line)\n".utf8))
            }
        }
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return (Double(c.seconds) + Double(c.attoseconds) / 1e18).rounded(toPlaces: 3)
    }

    mutating func run() async throws {
        let started = ContinuousClock.now
        let ctx = try CLIContext.load(command.global)
        let rc = try ctx.worker(command.worker)
        let section = ctx.section(of: rc)
        guard let rules = PartitionStateRules.forWorker(section) else {
            throw CLIFailure(
                "the resize has no partition rules for '\(section)' (where each of its tables' rows belong): supported are demo-worker, settlement-aggregator, ledger-writer, crm-sync and receipt-sender; nothing was changed")
        }
        let old = rc.topology
        let to = command.to
        guard to != old.partitions else {
            throw CLIFailure("\(section) already has \(to) partition\(to == 1 ? "" : "s") (\(section).partitions); nothing to do")
        }
        let new: WorkerTopology = {
            var t = old
            t.partitions = to
            return t
        }()
        // File names: the runtime's defaults in the worker's state directory.
        let dir = (rc.statePath as NSString).deletingLastPathComponent
        func file(_ p: Int, of n: Int) -> String {
            (dir as NSString).appendingPathComponent(WorkerIdentity.stateFileName(name: rc.worker, partition: p, partitions: n))
        }
        guard rc.statePath == file(0, of: old.partitions) else {
            throw CLIFailure("\(section).state_file is set (\(rc.statePath)): the resize needs the default per-partition names in the state directory; nothing was changed")
        }
        let oldFiles = (0..<old.partitions).map { file($0, of: old.partitions) }
        let newFiles = (0..<to).map { file($0, of: to) }
        for (p, f) in oldFiles.enumerated() where !FileManager.default.fileExists(atPath: f) {
            throw CLIFailure(
                "no state file for partition \(p) at \(f): run the resize on the host that has every partition's file (a partition without one never ran: start it once); nothing was changed")
        }
        if let stale = try? FileManager.default.contentsOfDirectory(atPath: dir).first(where: {
            $0.hasPrefix("\(rc.worker).resize-") && !FileManager.default.fileExists(atPath: dir + "/" + $0 + "/DONE")
        }) {
            throw CLIFailure("an earlier resize did not finish: \(dir)/\(stale) (docs/operations.md, \"An interrupted resize\"); nothing was changed")
        }
        let stamp = RFC3339.format(Date()).replacingOccurrences(of: ":", with: "").replacingOccurrences(of: "-", with: "")
        let workDir = dir + "/\(rc.worker).resize-\(old.partitions)to\(to)-\(stamp)"
        let split = PartitionStateSplit(rules: rules, oldFiles: oldFiles, newFiles: newFiles, workDir: workDir)
        let oldQueues = old.allQueues
        let tiers = (0..<old.partitions).flatMap { p in old.retryDelaysMS.map { old.retryQueue(delayMS: $0, partition: p) } }
        let header = old.partitionKey.header
        let stem = "payfleet.\(rc.worker)"

        // 1. Preconditions, before anything changes.
        var probe = QueueProbe(amqp: ctx.amqp)
        defer { probe.close() }
        for q in oldQueues + tiers where try await probe.inspect(q) == nil {
            throw CLIFailure("\(q) does not exist: the broker does not have the configured layout (\(section).partitions: \(old.partitions)); nothing was changed")
        }
        for p in old.partitions..<max(old.partitions, to) {
            if let d = try await probe.inspect(new.queue(partition: p)), d.messages > 0 || d.consumers > 0 {
                throw CLIFailure("\(new.queue(partition: p)) already holds \(d.messages) messages and has \(d.consumers) consumers; nothing was changed")
            }
        }
        guard let dlqDepth = try await probe.inspect(old.dlq) else {
            throw CLIFailure("\(old.dlq) does not exist: is '\(section)' deployed? (payfleet topology declare)")
        }
        if dlqDepth.messages > 0 {
            throw Self.dlqRefusal(old.dlq, dlqDepth.messages, section)
        }
        let ingestPath = try OutboxCommand.statePath(command.global, override: command.ingestStateFile)
        let hasIngest = FileManager.default.fileExists(atPath: ingestPath)
        if !hasIngest && !command.ingestStopped {
            throw CLIFailure(
                "no ingest state file at \(ingestPath): run the resize on ingest's host, pass --ingest-state-file, or --ingest-stopped when nothing publishes; nothing was changed")
        }
        let thread = BlockingThread(name: "resize-sqlite")
        defer { thread.shutdown() }
        let knownKeys = try await thread.run { () throws -> [String: Int] in
            try split.checkTables()
            return try split.keys()
        }
        if old.partitions > 1 {
            // The probe must reproduce where the broker put the keys so far.
            let placed = try await PartitionProbe.owners(
                keys: Array(knownKeys.keys), partitions: old.partitions, header: header, stem: stem, amqp: ctx.amqp)
            if let wrong = knownKeys.first(where: { placed[$0.key] != $0.value }) {
                throw CLIFailure(
                    "\(old.partitionKey.rawValue) '\(TerminalText.safe(wrong.key))' is in partition \(wrong.value)'s file but the broker routes it to partition \(placed[wrong.key] ?? -1) of \(old.partitions): the probe does not match this broker; nothing was changed")
            }
        }
        // Keys that share state must land together (crm-sync): refused now rather than after the
        // pause (checked again on the drained files).
        if command.dryRun || !rules.couplings.isEmpty {
            let owners = try await PartitionProbe.owners(
                keys: Array(knownKeys.keys), partitions: to, header: header, stem: stem, amqp: ctx.amqp)
            try await thread.run { try split.checkCouplings(newOwner: owners) }
            if command.dryRun {
                let moving = knownKeys.filter { owners[$0.key] != $0.value || old.partitions == 1 }.count
                say("plan: \(section) \(old.partitions) → \(to) partitions; \(knownKeys.count) keys known, \(moving) change files; preconditions hold; nothing was changed (dry run)")
                return
            }
        }

        // Locks held until the end: no second resize, and no DLQ command (a replay publishes to
        // the partition queues directly, past the paused relay).
        let lock: AMQPSession
        do { lock = try await AMQPSession.connect(ctx.amqp) } catch {
            throw CLIFailure("cannot connect to the broker at \(ctx.amqp): \(error)")
        }
        for name in [stem + ".resize.lock", DLQAccess.lockName(rc)] {
            do { try await lock.declare { try $0.exclusiveQueue(name) } } catch let e as AMQPError where e.replyCode == 405 {
                await lock.close()
                throw CLIFailure("another payfleet command holds \(name) (a resize or a dlq command on \(section)); try again when it is done; nothing was changed")
            }
        }
        defer { Task { await lock.close() } }

        // 2. Pause ingest's relay.
        let holder = "payfleet partitions resize \(section) (pid \(getpid()), \(AuditLog.user)@\(ProcessInfo.processInfo.hostName))"
        var logger = Logger(label: "payfleet.cli")
        logger.logLevel = .error
        let outbox: Outbox?
        if hasIngest { outbox = try await Outbox(path: ingestPath, logger: logger) } else { outbox = nil }
        let pausedAt = ContinuousClock.now
        if let outbox {
            if let other = try await outbox.pauseRelay(holder: holder, reason: "resize \(section) \(old.partitions)→\(to)") {
                throw CLIFailure("ingest's relay is already paused by \(other.holder); nothing was changed")
            }
            if !command.ingestStopped {
                let deadline = ContinuousClock.now + .milliseconds(ConfigSection.parseDurationMS(command.pauseTimeout)!)
                while try await outbox.relayPause()?.acknowledgedMS == nil {
                    guard ContinuousClock.now < deadline else {
                        _ = try? await outbox.resumeRelay(holder: holder)
                        throw CLIFailure(
                            "ingest's relay did not acknowledge the pause within \(command.pauseTimeout) (is ingest running? pass --ingest-stopped if it is stopped); nothing was changed")
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            say("ingest's relay paused after \(Self.seconds(ContinuousClock.now - pausedAt)) s; ingest keeps accepting into its outbox")
        }
        figures["pause_ack_s"] = Self.seconds(ContinuousClock.now - pausedAt)

        // From here until the new layout is declared, a failure lifts the pause and changes nothing.
        func rollback(_ message: String) async -> CLIFailure {
            try? FileManager.default.removeItem(atPath: workDir)
            if let outbox { _ = try? await outbox.resumeRelay(holder: holder) }
            return CLIFailure(message + "; nothing was changed, the relay publishes again")
        }

        // 3. Wait until the old queues and their retry tiers are empty.
        let drainStart = ContinuousClock.now
        let drainDeadline = drainStart + .milliseconds(ConfigSection.parseDurationMS(command.drainTimeout)!)
        let management = ctx.managementURL.flatMap { try? ManagementAPI($0, timeout: 5) }
        var quiet = 0
        var lastReport = ContinuousClock.now
        while quiet < 3 {
            var busy: [String] = []
            for q in oldQueues + tiers {
                guard let d = try await probe.inspect(q) else { throw await rollback("\(q) disappeared during the drain") }
                if d.messages > 0 { busy.append("\(q) \(d.messages)") }
            }
            if busy.isEmpty, let management, let stats = try? await management.queues(vhost: ctx.amqp.vhost) {
                for q in oldQueues { if let u = stats[q]?["messages_unacknowledged"] as? Int, u > 0 { busy.append("\(q) \(u) unacked") } }
            }
            quiet = busy.isEmpty ? quiet + 1 : 0
            if !busy.isEmpty {
                guard ContinuousClock.now < drainDeadline else {
                    throw await rollback("the old queues did not drain within \(command.drainTimeout): \(busy.joined(separator: ", "))")
                }
                if ContinuousClock.now - lastReport > .seconds(5) {
                    say("draining: \(busy.joined(separator: ", "))")
                    lastReport = ContinuousClock.now
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        figures["drain_s"] = Self.seconds(ContinuousClock.now - drainStart)
        say("old queues and retry tiers empty after \(figures["drain_s"]!) s; stopping the instances of \(section)")

        // 4. The instances stop; then nothing may be left (unacknowledged messages come back).
        let stopStart = ContinuousClock.now
        if let cmd = command.stopCommand {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", cmd]
            do { try p.run() } catch { throw await rollback("--stop-command could not start: \(error)") }
            while p.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            if p.terminationStatus != 0 { throw await rollback("--stop-command exited with \(p.terminationStatus)") }
        } else {
            say("stop every instance of \(section) now (systemctl stop 'payfleet-\(section)@*'); waiting up to \(command.stopTimeout)")
        }
        let stopDeadline = stopStart + .milliseconds(ConfigSection.parseDurationMS(command.stopTimeout)!)
        while true {
            var consumed: [String] = []
            for q in oldQueues {
                if let d = try await probe.inspect(q), d.consumers > 0 { consumed.append("\(q) (\(d.consumers) consumer\(d.consumers == 1 ? "" : "s"))") }
            }
            if consumed.isEmpty { break }
            guard ContinuousClock.now < stopDeadline else {
                throw await rollback(
                    "instances of \(section) still consume after \(command.stopTimeout): \(consumed.joined(separator: ", ")); stop every instance (systemctl stop 'payfleet-\(section)@*') and run the resize again")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        for q in oldQueues + tiers {
            if let d = try await probe.inspect(q), d.messages > 0 {
                throw await rollback(
                    "\(q) holds \(d.messages) messages after its consumers stopped (unacknowledged ones came back): start the instances again to drain them, then run the resize again")
            }
        }
        if let d = try await probe.inspect(old.dlq), d.messages > 0 {
            let refusal = Self.dlqRefusal(old.dlq, d.messages, section)
            throw await rollback(refusal.message.replacingOccurrences(of: "; nothing was changed", with: ""))
        }
        figures["stop_s"] = Self.seconds(ContinuousClock.now - stopStart)

        // 5. The state: every key's rows to the new file that owns it, processed ids to all.
        let splitStart = ContinuousClock.now
        let built: PartitionStateSplit.Built
        let keyCount: Int
        let moved: Int
        do {
            let keys = try await thread.run { () throws -> [String: Int] in
                try split.checkpointOld()
                try split.checkTables()
                return try split.keys()
            }
            if old.partitions > 1 {
                let placed = try await PartitionProbe.owners(
                    keys: Array(keys.keys), partitions: old.partitions, header: header, stem: stem, amqp: ctx.amqp)
                if let wrong = keys.first(where: { placed[$0.key] != $0.value }) {
                    throw CLIFailure("\(old.partitionKey.rawValue) '\(TerminalText.safe(wrong.key))' is in partition \(wrong.value)'s file but the broker routes it to partition \(placed[wrong.key] ?? -1)")
                }
            }
            let owners = try await PartitionProbe.owners(keys: Array(keys.keys), partitions: to, header: header, stem: stem, amqp: ctx.amqp)
            let b = try await thread.run { () throws -> PartitionStateSplit.Built in try split.buildAndVerify(newOwner: owners) }
            built = b
            keyCount = keys.count
            moved = keys.filter { owners[$0.key] != $0.value || old.partitions == 1 || to == 1 }.count
        } catch let f as CLIFailure {
            throw await rollback(f.message.replacingOccurrences(of: "; nothing was changed", with: ""))
        } catch {
            throw await rollback("splitting the state failed: \(error)")
        }
        figures["split_s"] = Self.seconds(ContinuousClock.now - splitStart)
        figures["keys"] = keyCount
        figures["keys_moved"] = moved
        figures["rows_per_partition"] = built.rows.map { $0.values.reduce(0, +) }
        figures["keys_per_partition"] = built.keys
        figures["processed_ids_per_partition"] = built.processed
        say("state split: \(keyCount) keys, \(moved) change files; rows per new partition \(figures["rows_per_partition"]!) in \(figures["split_s"]!) s")

        // 6. The new layout: the old partition exchange goes (its buckets follow binding order,
        // so it is declared afresh), and queues the new layout has not (all verified empty).
        let declareStart = ContinuousClock.now
        do {
            var amqp = ctx.amqp
            amqp.declareEventsExchange = true
            let s = try await AMQPSession.connect(amqp)
            let gone = oldQueues.filter { !new.allQueues.contains($0) }
            let goneTiers = (0..<old.partitions).filter { !new.allQueues.contains(old.queue(partition: $0)) }
                .flatMap { p in old.retryDelaysMS.map { old.retryQueue(delayMS: $0, partition: p) } }
            try await s.declare { d in
                if old.isPartitioned { try d.delete(exchange: old.partitionExchange) }
                for q in gone + goneTiers { try d.delete(queue: q) }
                try d.declare(worker: new)
            }
            await s.close()
        } catch {
            throw CLIFailure(
                "declaring the new layout failed (\(error)): the relay stays paused and the old files are untouched; run `payfleet topology declare` with \(section).partitions: \(old.partitions) to restore the old layout, remove \(workDir), then lift the pause (docs/operations.md, \"An interrupted resize\")")
        }
        figures["declare_s"] = Self.seconds(ContinuousClock.now - declareStart)
        do {
            try await thread.run { try split.install() }
        } catch {
            throw CLIFailure(
                "the new layout is declared but moving the files failed (\(error)): the relay stays paused; finish by hand from \(workDir) (docs/operations.md, \"An interrupted resize\")")
        }
        let summary = try? JSONSerialization.data(withJSONObject: ["from": old.partitions, "to": to, "at": RFC3339.format(Date())])
        guard FileManager.default.createFile(atPath: workDir + "/DONE", contents: summary) else {
            throw CLIFailure(
                "the new layout is in place but \(workDir)/DONE could not be written: the relay stays paused; create that file, then lift the pause (docs/operations.md, \"An interrupted resize\")")
        }

        // 7. Resume.
        var waiting = 0
        if let outbox {
            waiting = (try? await outbox.pendingCount()) ?? -1
            try await outbox.resumeRelay(holder: holder)
        }
        figures["paused_s"] = Self.seconds(ContinuousClock.now - pausedAt)
        figures["events_waiting_in_outbox"] = waiting
        figures["total_s"] = Self.seconds(ContinuousClock.now - started)
        figures["from"] = old.partitions
        figures["to"] = to
        figures["old_files"] = split.backupDir
        try? AuditLog(path: ctx.auditLogPath).record(
            action: "partitions.resize", worker: section, outcome: "\(old.partitions) → \(to)", extra: figures)
        say("relay resumed after a \(figures["paused_s"]!) s pause (\(waiting) events had waited in the outbox); old files kept in \(split.backupDir)")
        if command.global.json {
            try printJSON(figures)
        } else {
            print("resized \(section) from \(old.partitions) to \(to) partitions. Now set `\(section).partitions: \(to)` in \(command.global.configPath) and start instances 0..\(to - 1) (systemctl enable --now 'payfleet-\(section)@{0..\(to - 1)}').")
        }
    }

    static func dlqRefusal(_ dlq: String, _ n: Int, _ section: String) -> CLIFailure {
        CLIFailure(
            "\(dlq) holds \(n) dead letter\(n == 1 ? "" : "s"): replay them (payfleet dlq replay \(section) --all) or archive them (payfleet dlq purge \(section) --all --archive FILE) first, since after the resize their x-death names a partition queue that may no longer own their key; nothing was changed")
    }
}

extension Double {
    func rounded(toPlaces n: Int) -> Double {
        let m = Foundation.pow(10.0, Double(n))  // the C pow: with swift-numerics in the graph, `pow` here meant the static Double.pow
        return (self * m).rounded() / m
    }
}
