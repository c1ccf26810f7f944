import ArgumentParser
import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker

/// `payfleet dlq list | show | replay | edit | purge` (DESIGN §6): dead-letter inspection and
/// recovery, safe by construction — nothing leaves a DLQ before it is safe elsewhere, and every
/// change is in the audit log.
public struct DLQCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect, replay, fix and purge a worker's dead letters.",
        subcommands: [List.self, Show.self, Replay.self, Edit.self, Purge.self, Status.self])
    public init() {}

    /// Options shared by every dlq subcommand.
    public struct Common: ParsableArguments {
        @OptionGroup public var global: GlobalOptions
        @Argument(help: "The worker: its config section (ledger-writer) or queue-name stem.")
        public var worker: String
        @Option(help: "Seconds to wait while another payfleet command works on the same DLQ.")
        public var wait: Double = 30
        @Option(help: .hidden) public var prefetch = 65_535
        public init() {}

        func open() async throws -> (CLIContext, DLQAccess) {
            let ctx = try CLIContext.load(global)
            let rc = try ctx.worker(worker)
            let access = try await DLQAccess.open(ctx.amqp, worker: rc, wait: wait)
            access.prefetch = max(1, min(prefetch, 65_535))
            return (ctx, access)
        }
    }

    // MARK: list

    /// `--merchant`, `--type`, `--customer`, `--since`: which dead letters a command looks at.
    public struct Filter: ParsableArguments {
        @Option(help: "Only this merchant id.") public var merchant: String?
        @Option(help: "Only this event type (payment.succeeded, …).") public var type: String?
        @Option(help: "Only this customer id.") public var customer: String?
        @Option(help: "Only letters that first failed at or after this time: a duration back (2h, 3d) or an RFC 3339 timestamp.")
        public var since: String?
        public init() {}

        public func cutoff(now: Date = Date()) throws -> Date? {
            guard let since else { return nil }
            if let ms = ConfigSection.parseDurationMS(since) { return now.addingTimeInterval(-Double(ms) / 1000) }
            if let d = RFC3339.parse(since) { return d }
            throw ValidationError("--since: '\(since)' is neither a duration (90m, 2h, 3d) nor an RFC 3339 timestamp")
        }

        public func validate() throws { _ = try cutoff() }

        public func matcher() throws -> @Sendable (DeadLetter) -> Bool {
            let (m, t, c, after) = (merchant, type, customer, try cutoff())
            return { l in
                if let m, l.merchant != m { return false }
                if let t, l.type != t { return false }
                if let c, l.customer != c { return false }
                if let after { guard let f = l.firstFailed, f >= after else { return false } }
                return true
            }
        }
    }

    public struct List: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "List dead letters (id, type, merchant, attempts, first failed, error), or groups by error.",
            discussion: """
                Answers from the dead-letter index in the worker's state file (runtime.3) when it holds as many \
                letters as the queue; otherwise reads the whole queue (the source of truth), says so on stderr, \
                and brings the index in line. --from index|queue forces one source.
                """)
        @OptionGroup public var common: Common
        @OptionGroup public var filter: Filter
        @Option(name: .customLong("group-by"), help: "Group by: error (class + normalized message).")
        public var groupBy: GroupBy?
        @Option(help: "Show at most N letters.") public var limit: Int?
        @Option(help: "Where to read: auto (the index when it agrees with the queue depth), index, queue.")
        public var from: Source = .auto
        public init() {}

        public enum GroupBy: String, ExpressibleByArgument, Sendable { case error }
        public enum Source: String, ExpressibleByArgument, Sendable { case auto, index, queue }

        public func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        }

        /// What `run` prints, before rendering: the letters, the queue's total, each group's
        /// status (with `--group-by`), and the notes `run` writes on stderr (the console shows them).
        public struct Listing: Sendable {
            public var letters: [LetterSummary]
            public var total: Int
            public var statuses: [String: DLQGroupStatus]
            public var notes: [String]
        }

        public func run() async throws {
            let l = try await listing()
            for n in l.notes { FileHandle.standardError.write(Data((n + "\n").utf8)) }
            print(try DLQCommand.renderList(
                l.letters, total: l.total, grouped: groupBy != nil, json: common.global.json, statuses: l.statuses))
        }

        public func listing() async throws -> Listing {
            var notes: [String] = []
            let (ctx, access) = try await common.open()
            let index = DLQIndex(worker: access.worker)
            var letters: [LetterSummary]
            let total: Int
            do {
                let indexed = from == .queue ? nil : try await index.count()
                if from == .index && indexed == nil {
                    throw CLIFailure("no dead-letter index in \(index.paths.joined(separator: ", ")) (a worker older than runtime.3, or the file is on another host): use --from queue")
                }
                if let n = indexed, n == access.snapshot || from == .index {
                    await access.release()
                    if n != access.snapshot {
                        notes.append(
                            "warning: the dead-letter index holds \(n) letters, \(access.dlq) \(access.snapshot): the list is the index's (--from index)")
                    }
                    letters = try await index.letters(
                        merchant: filter.merchant, type: filter.type, customer: filter.customer,
                        sinceMS: try filter.cutoff().map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.up)) }, limit: limit)
                    total = n
                } else {
                    let started = Int64(Date().timeIntervalSince1970 * 1000)
                    let all = try await access.readAll()
                    await access.release()
                    total = access.read
                    let keep = try filter.matcher()
                    letters = all.filter(keep).map(\.summary)
                    if let limit { letters = Array(letters.prefix(limit)) }
                    var known = indexed
                    if known == nil { known = try await index.count() }
                    if let n = known {
                        let (removed, added) = try await index.reconcile(with: all, readStartedMS: started)
                        if from == .auto {
                            notes.append(
                                "the dead-letter index held \(n) letters, \(access.dlq) \(access.snapshot): read the queue (the source of truth); "
                                + "index brought in line (\(removed) removed, \(added) added)")
                        }
                    }
                }
            } catch {
                await access.release()
                throw error
            }
            let statuses = groupBy == nil ? [:] : try DLQGroupStatus.current(auditPath: ctx.auditLogPath, worker: access.worker.worker)
            return Listing(letters: letters, total: total, statuses: statuses, notes: notes)
        }
    }

    /// The groups of `--group-by error`, largest first (ties by fingerprint text).
    public static func groups(_ letters: [LetterSummary]) -> [(fingerprint: ErrorFingerprint, letters: [LetterSummary])] {
        var order: [ErrorFingerprint] = []
        var by: [ErrorFingerprint: [LetterSummary]] = [:]
        for l in letters {
            if by[l.fingerprint] == nil { order.append(l.fingerprint) }
            by[l.fingerprint, default: []].append(l)
        }
        return order.map { ($0, by[$0]!) }.sorted { ($0.1.count, $1.0.text) > ($1.1.count, $0.0.text) }
    }

    /// `statuses`: each group's investigation status (`DLQGroupStatus`), by group id.
    static func renderList(
        _ letters: [LetterSummary], total: Int, grouped: Bool, json: Bool, statuses: [String: DLQGroupStatus] = [:]
    ) throws -> String {
        if json {
            let value: Any = grouped
                ? groups(letters).map { g -> [String: Any] in
                    var o: [String: Any] = [
                        "fingerprint": g.fingerprint.id, "error_class": g.fingerprint.errorClass,
                        "error": g.fingerprint.text, "count": g.letters.count, "example": g.letters[0].error,
                        "ids": g.letters.map(\.id),
                        "first_failed_at": orNull(g.letters.compactMap(\.firstFailedAt).min()),
                        "last_failed_at": orNull(g.letters.compactMap(\.firstFailedAt).max()),
                    ]
                    o.merge(DLQGroupStatus.json(statuses[g.fingerprint.id])) { _, new in new }
                    return o
                }
                : letters.map(\.listJSON)
            let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            return String(decoding: data, as: UTF8.self)
        }
        var lines: [String] = []
        if grouped {
            let rows = groups(letters).map { g -> [String] in
                let s = statuses[g.fingerprint.id]
                return [
                    String(g.letters.count), g.fingerprint.id, s?.label ?? "open",
                    g.letters.compactMap(\.firstFailedAt).min() ?? "-", g.fingerprint.text,
                    Table.clip(s?.note ?? "", 60),
                ]
            }
            lines = Table.render(header: ["COUNT", "GROUP", "STATUS", "FIRST FAILED", "ERROR", "NOTE"], rows: rows, rightAligned: [0])
        } else {
            let rows = letters.map { l in
                [l.id, l.type ?? "-", l.merchant ?? "-", l.attempts.map(String.init) ?? "-", l.firstFailedAt ?? "-",
                 Table.clip(l.error, 100)]
            }
            lines = Table.render(header: ["ID", "TYPE", "MERCHANT", "ATTEMPTS", "FIRST FAILED", "ERROR"], rows: rows, rightAligned: [3])
        }
        lines = lines.map { TerminalText.safe($0) }
        let shown = letters.count < total ? "read \(letters.count) of \(total)" : "\(letters.count)"
        lines.append("\(shown) dead letter\(letters.count == 1 ? "" : "s")")
        return lines.joined(separator: "\n")
    }

    // MARK: show

    public struct Show: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "One dead letter: the event, every header (x-death included) and the error.")
        @OptionGroup public var common: Common
        @Argument(help: "The event id.") public var id: String
        public init() {}

        /// The letter `run` prints and how many copies of it the queue holds.
        public func find() async throws -> (letter: DeadLetter, copies: Int) {
            let (_, access) = try await common.open()
            let letters: [DeadLetter]
            do { letters = try await access.readAll() } catch {
                await access.release()
                throw error
            }
            await access.release()
            let copies = letters.filter { $0.id == id }
            guard let letter = copies.first else {
                throw CLIFailure("no dead letter with id '\(id)' in \(access.dlq) (\(letters.count) messages read)")
            }
            return (letter, copies.count)
        }

        public func run() async throws {
            let (letter, copyCount) = try await find()
            if common.global.json {
                var o = letter.fullJSON
                o["copies"] = copyCount
                try printJSON(o)
                return
            }
            var out = ["id:              \(letter.id)"]
            out.append("type:            \(letter.type ?? "-")")
            out.append("merchant:        \(letter.merchant ?? "-")")
            out.append("attempts:        \(letter.attempts.map(String.init) ?? "-")")
            out.append("first failed at: \(letter.firstFailedAt ?? "-")")
            out.append("error:           \(letter.error)")
            out.append("group:           \(letter.fingerprint.id)  \(letter.fingerprint.text)")
            if copyCount > 1 { out.append("copies:          \(copyCount) (the worker dedupes a replay of both)") }
            out.append("headers:")
            for (k, v) in letter.message.headers.sorted(by: { $0.key < $1.key }) where k != "x-death" {
                out.append("  \(k): \(v)")
            }
            if !letter.deaths.isEmpty {
                out.append("x-death:")
                for d in letter.deaths {
                    out.append("  - " + d.keys.sorted().map { "\($0)=\(d[$0]!)" }.joined(separator: " "))
                }
            }
            out.append("event:")
            let bodyLine = out.count
            if let o = try? JSONSerialization.jsonObject(with: Data(letter.message.body)),
                let pretty = try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            {
                out.append(String(decoding: pretty, as: UTF8.self))
            } else {
                out.append(String(decoding: letter.message.body, as: UTF8.self))
            }
            // Every field on one line; only the event's pretty JSON keeps its own newlines.
            print(out.enumerated().map { TerminalText.safe($1, keepNewlines: $0 == bodyLine) }.joined(separator: "\n"))
        }
    }

    // MARK: replay

    public struct Replay: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Republish dead letters to the worker's queue with confirm, then remove them from the DLQ.")
        @OptionGroup public var common: Common
        @Option(name: .customLong("id"), parsing: .upToNextOption, help: "Event ids to replay.")
        public var ids: [String] = []
        @Flag(help: "Replay every dead letter.") public var all = false
        @Option(help: "Replay the group with this id, or every error containing this text.")
        public var error: String?
        @Flag(name: .customLong("dry-run"), help: "Show what would be replayed; change nothing.")
        public var dryRun = false
        @Option(name: .customLong("batch-size"), help: "Messages per confirm round.") public var batchSize = 100
        @Option(help: "At most this many messages per second.") public var rate: Double?
        @OptionGroup public var filter: Filter
        @Option(help: ArgumentHelp(
            "Replay at most N of the selected letters (oldest in the queue first), and stop reading there.",
            discussion: "The letters read and left on the way (not selected, or already on their way to this command) "
                + "return to the end of the DLQ; the rest of the queue is not read."))
        public var max: Int?
        @Flag(help: "Also replay letters older than the worker's processed_retention (see the note this prints).")
        public var force = false
        public init() {}

        public func validate() throws {
            if let max, max < 1 { throw ValidationError("--max must be at least 1") }
            let chosen = (ids.isEmpty ? 0 : 1) + (all ? 1 : 0) + (error == nil ? 0 : 1)
            guard chosen == 1 else { throw ValidationError("choose exactly one of --id ID…, --all or --error TEXT") }
            if let error, error.isEmpty { throw ValidationError("--error needs a text or a group id") }
            guard (1...5000).contains(batchSize) else { throw ValidationError("--batch-size must be 1…5000") }
            if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        }

        /// What a replay did: `run` prints it, the console shows it.
        public struct Outcome: Sendable {
            public var dryRun: Bool
            public var result: DLQAccess.ReplayResult
            /// Asked for by `--id` and not in the DLQ.
            public var missing: [String]
            /// Not replayed: first failed before the worker's `processed_retention` (no `--force`).
            public var refused: [String]
            public var retentionDays: Int
            public var seconds: Double
            public var indexNote: String?
            public var targets: [String]
            public var dlq: String
        }

        public func run() async throws {
            let json = common.global.json
            let o = try await perform(progress: { r in
                if !json { FileHandle.standardError.write(Data("replayed \(r.replayed.count) of \(r.read) read\n".utf8)) }
            })
            let result = o.result
            let missing = o.missing
            if json {
                try printJSON([
                    "dry_run": dryRun, "selected": result.selected, "replayed": result.replayed,
                    "failed": result.failed.map { ["id": $0.id, "error": $0.error] }, "not_found": missing,
                    "read": result.read, "read_whole_queue": result.readWholeQueue,
                    "seconds": (o.seconds * 1000).rounded() / 1000,
                    "refused_older_than_retention": o.refused,
                ])
            } else if dryRun {
                print("would replay \(result.selected.count) of \(result.read) dead letters to \(o.targets.joined(separator: ", "))")
                for id in result.selected { print("  \(id)") }
            } else {
                print("replayed \(result.replayed.count) of \(result.read) dead letters in \(String(format: "%.1f", o.seconds)) s "
                      + "(republished with confirm, then removed from \(o.dlq))"
                      + (result.readWholeQueue ? "" : "; stopped at --max \(max ?? 0): the rest of the queue was not read"))
            }
            let refused = o.refused
            if !refused.isEmpty {
                FileHandle.standardError.write(Data((Self.refusalNote(refused, days: o.retentionDays) + "\n").utf8))
            }
            if let indexNote = o.indexNote { FileHandle.standardError.write(Data((indexNote + "\n").utf8)) }
            if !missing.isEmpty {
                FileHandle.standardError.write(Data("not in \(o.dlq): \(missing.joined(separator: ", "))\n".utf8))
            }
            if !result.failed.isEmpty {
                throw CLIFailure("\(result.failed.count) could not be republished and stay in \(o.dlq): \(result.failed[0].error)")
            }
            if !missing.isEmpty || !refused.isEmpty { throw ExitCode(1) }
        }

        /// Why letters older than the dedupe window were not replayed.
        public static func refusalNote(_ refused: [String], days: Int) -> String {
            "not replayed: \(refused.count) dead letter(s) first failed more than \(days) days ago (processed_retention): "
                + "their ids may have left the worker's dedupe window, so a copy already applied would be applied again. "
                + "Check each against the books, then replay with --force: \(refused.prefix(10).joined(separator: ", "))"
        }

        /// The replay itself, audited (started, each republished batch, completed).
        public func perform(progress: (DLQAccess.ReplayResult) -> Void = { _ in }) async throws -> Outcome {
            let (ctx, access) = try await common.open()
            let idSet = Set(ids)
            let errorText = error
            let all = self.all
            let filtered = try filter.matcher()
            // A replay past the dedupe window could apply an event twice: a copy of it may have
            // been applied and its id pruned from `processed` since.
            let retention = Double(access.worker.processedRetentionMS) / 1000
            let oldest = Date().addingTimeInterval(-retention)
            let force = self.force
            let budget = Locked(max ?? Int.max)
            let tooOld = Locked<[String]>([])
            let select: (DeadLetter) -> Bool = { l in
                let chosen: Bool
                if all { chosen = true } else if let errorText { chosen = l.fingerprint.matches(errorText, error: l.error) } else {
                    chosen = idSet.contains(l.id)
                }
                guard chosen, filtered(l) else { return false }
                if !force, let f = l.firstFailed, f < oldest {
                    tooOld.withLock { $0.append(l.id) }
                    return false
                }
                return budget.withLock { n in
                    guard n > 0 else { return false }
                    n -= 1
                    return true
                }
            }
            let audit: AuditLog?
            let result: DLQAccess.ReplayResult
            let started = ContinuousClock.now
            let readStartedMS = Int64(Date().timeIntervalSince1970 * 1000)
            do {
                audit = try dryRun ? nil : AuditLog(path: ctx.auditLogPath)
                try audit?.record(action: "dlq.replay", worker: access.worker.worker, outcome: "started")
                // Enough once --max letters are chosen: reading on would only rotate the queue.
                // (Not for --id: every copy of an id is replayed, wherever it is in the queue.)
                let enough: () -> Bool = { budget.current == 0 }
                result = try await access.replay(
                    where: select, dryRun: dryRun, batchSize: batchSize, rate: rate, audit: audit, enough: enough,
                    progress: progress)
            } catch {
                await access.release()
                throw error
            }
            await access.release()
            // A replay that read the whole queue makes the index what it found (the replayed
            // letters leave it, letters it lacked join it); one that stopped early only takes
            // out what it replayed. The queue is already right if this fails.
            var indexNote: String?
            do {
                let index = DLQIndex(worker: access.worker)
                let indexed = try await index.count() != nil
                if indexed, !result.readWholeQueue {
                    let left = Set(result.remaining.map(\.id))
                    try await index.remove(result.replayed.filter { !left.contains($0) })
                } else if indexed {
                    let (removed, added) = try await index.reconcile(with: result.remaining, readStartedMS: readStartedMS)
                    if added > 0 || removed > result.replayed.count {
                        indexNote = "dead-letter index brought in line with \(access.dlq): \(removed) removed, \(added) added"
                    }
                }
            } catch {
                indexNote = "warning: the dead-letter index was not updated (\(error)); `payfleet dlq list` reads the queue until it agrees"
            }
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let missing = idSet.subtracting(result.selected).subtracting(tooOld.current).sorted()
            try audit?.record(
                action: "dlq.replay", worker: access.worker.worker, outcome: "completed", ids: result.replayed,
                extra: ["failed": result.failed.map { ["id": $0.id, "error": $0.error] }, "not_found": missing])
            return Outcome(
                dryRun: dryRun, result: result, missing: missing, refused: tooOld.current,
                retentionDays: Int(retention / 86_400), seconds: seconds, indexNote: indexNote,
                targets: access.worker.topology.allQueues, dlq: access.dlq)
        }
    }

    // MARK: edit

    public struct Edit: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Fix fields of a dead letter, validate it, replay it; the original is archived.")
        @OptionGroup public var common: Common
        @Argument(help: "The event id.") public var id: String
        @Option(name: .customLong("set"), help: "path=value (repeatable), e.g. payment.id=pi_123.")
        public var sets: [String] = []
        @Option(help: "A JSON merge patch (RFC 7396) file.") public var patch: String?
        @Option(help: "Archive file (JSONL) for the original; default <audit log dir>/dlq-archive/<worker>.jsonl.")
        public var archive: String?
        public init() {}

        public func validate() throws {
            guard !sets.isEmpty || patch != nil else { throw ValidationError("give --set path=value… or --patch FILE") }
        }

        public func run() async throws {
            let (changes, archivePath) = try await perform()
            if common.global.json {
                try printJSON(["id": id, "changes": changes.map(\.json), "archive": archivePath, "replayed": true])
            } else {
                for c in changes { print("  \(c.path): \(c.before ?? "(absent)") -> \(c.after ?? "(absent)")") }
                print("edited \(id), validated and replayed; original archived in \(archivePath)")
            }
        }

        /// The edit itself, audited (`dlq.edit`): what changed and where the original is archived.
        public func perform() async throws -> (changes: [DLQEdit.Change], archive: String) {
            var patchValue: Any?
            if let patch {
                guard let data = FileManager.default.contents(atPath: patch) else {
                    throw CLIFailure("--patch: cannot read '\(patch)'")
                }
                guard let v = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed) else {
                    throw CLIFailure("--patch: '\(patch)' is not JSON")
                }
                patchValue = v
            }
            let (ctx, access) = try await common.open()
            let done: (changes: [DLQEdit.Change], archive: String)
            do {
                done = try await edit(ctx, access, patch: patchValue)
            } catch {
                await access.release()
                throw error
            }
            await access.release()
            return done
        }

        func edit(_ ctx: CLIContext, _ access: DLQAccess, patch: Any?) async throws -> (changes: [DLQEdit.Change], archive: String) {
            var copies: [(AMQPFetched, DeadLetter)] = []
            // Everything is held in the order read (the copies too): if anything below fails,
            // the queue goes back exactly as it was.
            while let f = try await access.next() {
                access.hold(f)
                let l = DeadLetter(f.message)
                if l.id == id { copies.append((f, l)) }
            }
            guard let letter = copies.first?.1 else {
                throw CLIFailure("no dead letter with id '\(id)' in \(access.dlq)")
            }
            let (body, changes) = try DLQEdit.apply(sets: sets, patch: patch, to: letter.message.body)
            let archivePath = archive ?? DLQCommand.defaultArchive(ctx, access.worker)
            let archiveFile = try JSONLines(path: archivePath)
            let audit = try AuditLog(path: ctx.auditLogPath)
            // 1. The original, durable in the archive.
            try archiveFile.append(copies.map { DLQCommand.archiveRecord($0.1, worker: access.worker, reason: "edited") })
            // 2. The edited event, confirmed by the broker.
            let out = access.outgoing(for: letter, body: body)
            let session = try await AMQPSession.connect(ctx.amqp)
            do { try await session.publish(out) } catch {
                await session.close()
                throw CLIFailure("the edited event could not be republished (the original stays in \(access.dlq)): \(error)")
            }
            await session.close()
            // 3. The audit line, then the DLQ copies go.
            try audit.record(
                action: "dlq.edit", worker: access.worker.worker, outcome: "republished", ids: [id],
                extra: ["changes": changes.map(\.json), "archive": archivePath, "copies": copies.count,
                        "target": out.exchange.isEmpty ? out.routingKey : out.exchange])
            for (f, _) in copies { try await access.ack(f) }
            access.forget(copies.map { $0.0 })
            try? await DLQIndex(worker: access.worker).remove([id])
            return (changes, archivePath)
        }
    }

    static func defaultArchive(_ ctx: CLIContext, _ worker: RuntimeConfiguration) -> String {
        let dir = (ctx.auditLogPath as NSString).deletingLastPathComponent
        return ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent("dlq-archive/\(worker.worker).jsonl")
    }

    /// One archive line: the whole message (headers, body) plus when, why and by whom.
    static func archiveRecord(_ l: DeadLetter, worker: RuntimeConfiguration, reason: String) -> [String: Any] {
        var o = l.fullJSON
        o["archived_at"] = RFC3339.format(Date())
        o["archived_by"] = AuditLog.user
        o["reason"] = reason
        o["worker"] = worker.worker
        o["queue"] = worker.topology.dlq
        return o
    }

    // MARK: purge

    public struct Purge: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Remove dead letters for good, after writing them to an archive (JSONL, fsync'd).")
        @OptionGroup public var common: Common
        @Option(name: .customLong("id"), parsing: .upToNextOption, help: "Event ids to purge.")
        public var ids: [String] = []
        @Flag(help: "Purge every dead letter.") public var all = false
        @Option(help: "Append the purged messages to this JSONL file before removing them.")
        public var archive: String?
        @Flag(name: .customLong("yes-discard"), help: "Purge without an archive: the messages are gone for good.")
        public var yesDiscard = false
        public init() {}

        public func validate() throws {
            guard (all ? 1 : 0) + (ids.isEmpty ? 0 : 1) == 1 else { throw ValidationError("choose exactly one of --id ID… or --all") }
            if archive == nil && !yesDiscard {
                throw ValidationError("refusing to purge without --archive FILE (or --yes-discard to lose the messages for good)")
            }
            if archive != nil && yesDiscard { throw ValidationError("--archive and --yes-discard exclude each other") }
        }

        public func run() async throws {
            let ctx = try CLIContext.load(common.global)
            let audit = try AuditLog(path: ctx.auditLogPath)
            let archiveFile = try archive.map { try JSONLines(path: $0) }
            let (_, access) = try await common.open()
            let idSet = Set(ids)
            var purged: [String] = []
            do {
                var batch: [(AMQPFetched, DeadLetter)] = []
                func flush() async throws {
                    guard !batch.isEmpty else { return }
                    // Archive first (written and fsync'd), then the audit line, then the acks.
                    try archiveFile?.append(batch.map { DLQCommand.archiveRecord($0.1, worker: access.worker, reason: "purged") })
                    try audit.record(action: "dlq.purge", worker: access.worker.worker,
                                     outcome: archiveFile == nil ? "discarded" : "archived", ids: batch.map { $0.1.id },
                                     extra: ["archive": orNull(archive)])
                    for (f, l) in batch {
                        try await access.ack(f)
                        purged.append(l.id)
                    }
                    batch.removeAll()
                }
                while let f = try await access.next() {
                    let l = DeadLetter(f.message)
                    if all || idSet.contains(l.id) {
                        batch.append((f, l))
                        if batch.count >= 500 { try await flush() }
                    } else {
                        access.hold(f)
                    }
                }
                try await flush()
            } catch {
                await access.release()
                throw error
            }
            await access.release()
            do { try await DLQIndex(worker: access.worker).remove(purged) } catch {
                FileHandle.standardError.write(Data("warning: the dead-letter index was not updated (\(error)); `payfleet dlq list` reads the queue until it agrees\n".utf8))
            }
            let missing = idSet.subtracting(purged).sorted()
            if common.global.json {
                try printJSON(["purged": purged, "archive": orNull(archive), "not_found": missing])
            } else {
                print("purged \(purged.count) dead letter\(purged.count == 1 ? "" : "s") from \(access.dlq)"
                      + (archive.map { "; archived in \($0)" } ?? " (discarded, no archive)"))
            }
            if !missing.isEmpty {
                throw CLIFailure("not in \(access.dlq): \(missing.joined(separator: ", "))")
            }
        }
    }
}

/// Plain text tables for the human output.
enum Table {
    static func render(header: [String], rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: max(0, widths[i] - c.count))
                if i == cells.count - 1 && !rightAligned.contains(i) { return c }
                return rightAligned.contains(i) ? pad + c : c + pad
            }.joined(separator: "  ")
        }
        return [line(header)] + rows.map(line)
    }

    static func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }
}
