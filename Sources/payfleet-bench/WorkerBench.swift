import ArgumentParser
import Foundation
import Logging
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit

/// One worker alone against a filled queue (issue 17): `EventMix` events of the types the
/// worker subscribes to are published to its queue first, then the worker's release executable
/// starts with sandbox connectors and drains it. The demo worker drains the same events in the
/// same run, as the runtime's own figure. Printed per worker: events/s (first to last commit,
/// the worker's own `processed_ms`), events per batch transaction, fsyncs per 1,000 events
/// (`perf stat` on the process's fsync/fdatasync syscalls, when perf can attach), the process's
/// CPU time per 1,000 events and bytes it wrote per event (`/proc/PID/stat` utime+stime and
/// `/proc/PID/io` wchar over its whole life: figures that stay comparable when other work shares
/// the cores, unlike events/s), and the ratio to the demo worker.
struct WorkerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "One worker's drain rate against the demo worker on the same events.")

    @Argument(help: "crm-sync, ledger-writer, receipt-sender, settlement-aggregator or all.")
    var worker = "all"
    @Option(help: "AMQP URL of the (private) broker.")
    var amqp = ProcessInfo.processInfo.environment["PAYFLEET_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:25672/"
    @Option(help: "Events per worker (of the worker's own types).")
    var count = 20_000
    @Option(help: "Batch size (prefetch is three times it).")
    var batchSize = 200
    @Option(help: "Customers the events are spread over (fewer: longer histories per customer).")
    var customers = 400
    @Flag(help: "Keep the temp directories (configs, SQLite files, logs).")
    var keep = false
    @Flag(help: "Count fsync/fdatasync syscalls with perf stat (root).")
    var fsyncs = false

    struct Figures {
        var rate: Double
        var perBatch: Double
        var fsyncsPer1000: Double?
        var rssMiB: Double
        var cpuMSPer1000: Double = 0
        var writtenKiBPerEvent: Double = 0
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        if keep { setenv("PAYFLEET_TEST_KEEP", "1", 1) }
        setenv("PAYFLEET_TEST_AMQP_URL", amqp, 1)
        let names = worker == "all" ? WorkerIdentity.fleet.map(\.name) : [worker]
        guard names.allSatisfy({ n in WorkerIdentity.fleet.contains { $0.name == n } }) else {
            throw ValidationError("unknown worker \(worker); one of \(WorkerIdentity.fleet.map(\.name).joined(separator: ", ")) or all")
        }
        print("payfleet-bench worker: \(count) events each, batch \(batchSize), release binaries in \(TestEnvironment.binDir)")
        print("worker                    events/s   events/batch   fsyncs/1000 ev   RSS MiB   CPU ms/1000 ev   written KiB/ev   ratio to demo")
        for name in names {
            let spec = WorkerIdentity.fleet.first { $0.name == name }!
            var mix = EventMix(seed: 17, prefix: "b\(UInt32.random(in: 0...UInt32.max))", customers: customers)
            var events: [PaymentEvent] = []
            while events.count < count {
                events += mix.take(1000).filter { spec.routingKeys.contains($0.type.rawValue) }
            }
            events = Array(events.prefix(count))
            let demo = try await drain(executable: "payfleet-demo-worker", section: "demo-worker", spec: spec, events: events)
            let w = try await drain(executable: name, section: name, spec: spec, events: events)
            func row(_ label: String, _ f: Figures, ratio: String) {
                let fs = f.fsyncsPer1000.map { String(format: "%8.1f", $0) } ?? "     n/a"
                print(label.padding(toLength: 24, withPad: " ", startingAt: 0)
                    + String(
                        format: "%10.0f %14.1f   %@ %14.1f %16.0f %16.1f   %@", f.rate, f.perBatch, fs, f.rssMiB,
                        f.cpuMSPer1000, f.writtenKiBPerEvent, ratio))
            }
            row(name, w, ratio: String(format: "%.2f", w.rate / demo.rate))
            row("  demo worker, same events", demo, ratio: "1.00")
        }
    }

    /// Fills a fresh queue with `events`, starts the executable, waits until every event is in
    /// its `processed` table and no effect is left in flight; the figures.
    func drain(executable: String, section: String, spec: WorkerIdentity, events: [PaymentEvent]) async throws -> Figures {
        var o = WorkerProcess.Options(
            executable: executable, section: section, prefix: "bench-\(section)", routingKeys: spec.routingKeys,
            partitionKey: spec.partitionKey)
        o.batchSize = batchSize
        o.deliveryLimit = 50
        o.topLevelYAML = EventMix.merchantsYAML
        switch section {
        case "crm-sync": o.sectionYAML = ["connector: sandbox", "crm_file: {dir}/crm.jsonl"]
        case "receipt-sender": o.sectionYAML = ["email_transport: sandbox", "sms_transport: sandbox", "channels: [email, sms]"]
        case "ledger-writer": o.sectionYAML = ["unknown_customer: Unidentified"]
        default: break
        }
        var figures = Figures(rate: 0, perBatch: 0, fsyncsPer1000: nil, rssMiB: 0)
        try await WorkerProcess.with(o) { fleet in
            try await fleet.declare()
            let pub = fleet.publisher()
            guard await pub.waitUntilConnected() else { throw CLIError("cannot connect to the broker") }
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            let pid = fleet.process!.pid
            let perf = fsyncs ? PerfSyscalls(pid: pid) : nil
            let ok = await eventually(timeout: .seconds(900), every: .milliseconds(100)) {
                guard (try? fleet.count("processed")) == events.count else { return false }
                let inFlight = (try? fleet.count("effect_journal", where: "state = 'intent'")) ?? 0
                return inFlight == 0
            }
            let fsyncs = perf?.stop()
            guard ok else { throw CLIError("\(executable) did not drain \(events.count) events; log \(fleet.process?.logPath ?? "")") }
            guard let db = try fleet.database(),
                let row = try db.queryOne("SELECT MIN(processed_ms), MAX(processed_ms) FROM processed"),
                let first = row.int(0), let last = row.int(1)
            else { throw CLIError("no processed rows") }
            // The end: the last outcome recorded (effects finish after their batch commits).
            let lastEffect = (try? db.queryOne("SELECT MAX(updated_at) FROM effect_journal"))?.flatMap { $0.int(0) }.map { $0 * 1000 } ?? 0
            let span = Double(max(last, min(lastEffect, last + 60_000)) - first) / 1000
            figures.rate = Double(events.count) / max(span, 0.001)
            let metrics = await fleet.metrics()
            let batches = metrics.split(separator: "\n").first { $0.hasPrefix("payfleet_batch_size_count") }
                .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0
            figures.perBatch = batches > 0 ? Double(events.count) / batches : 0
            figures.fsyncsPer1000 = fsyncs.map { Double($0) * 1000 / Double(events.count) }
            figures.rssMiB = FleetBench.memory(pid: pid).0
            let usage = Self.usage(pid: pid)
            figures.cpuMSPer1000 = usage.cpuMS * 1000 / Double(events.count)
            figures.writtenKiBPerEvent = usage.writtenBytes / 1024 / Double(events.count)
        }
        return figures
    }

    /// The process's CPU time (user + system, ms) and bytes written (`wchar`: every write and
    /// pwrite, page cache and sockets) since it started.
    static func usage(pid: Int32) -> (cpuMS: Double, writtenBytes: Double) {
        var cpu = 0.0
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) {
                cpu = (u + s) * 1000 / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        var written = 0.0
        if let io = try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8) {
            for line in io.split(separator: "\n") where line.hasPrefix("wchar:") {
                written = Double(line.split(separator: " ").last ?? "0") ?? 0
            }
        }
        return (cpu, written)
    }
}

/// `perf stat` counting one process's fsync + fdatasync syscalls (root, Debian's linux-perf);
/// nil when perf cannot attach.
final class PerfSyscalls {
    let process = Process()
    let output: String

    init?(pid: Int32) {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perf") else { return nil }
        output = NSTemporaryDirectory() + "perf-\(pid).csv"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perf")
        process.arguments = ["stat", "-x", ",", "-o", output, "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync", "-p", String(pid)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
    }

    /// Stops counting; the total, or nil when perf failed.
    func stop() -> Int? {
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return nil }
        var total = 0
        var seen = false
        for line in text.split(separator: "\n") where line.contains("syscalls:sys_enter_") {
            if let v = Int(line.split(separator: ",").first ?? "") { total += v; seen = true }
        }
        return seen ? total : nil
    }
}
