import ArgumentParser
import Foundation
import PayfleetCore

/// The investigation status of a dead-letter group (`dlq list --group-by error`): `open` (the
/// default), `investigating` (by whom), or `ignored`, with a note. The audit log is where it is
/// kept: each change is one `dlq.group_status` line (who set it, when, the group, the state, the
/// note), and a group's status is its worker's latest such line. So the history is the audit
/// trail itself, and nothing but the log has to be backed up.
public struct DLQGroupStatus: Sendable, Equatable {
    public enum State: String, CaseIterable, ExpressibleByArgument, Sendable {
        case open, investigating, ignored
    }

    public var group: String
    public var state: State
    /// Who investigates (`investigating`); who set it otherwise.
    public var by: String?
    public var note: String?
    public var at: String
    /// The OS user who set it (the audit line's `user`).
    public var user: String

    public static let action = "dlq.group_status"

    /// The latest status of each group of `worker` (queue-name stem), by group id.
    public static func current(auditPath: String, worker: String) throws -> [String: DLQGroupStatus] {
        guard FileManager.default.fileExists(atPath: auditPath) else { return [:] }
        let lines: [[String: Any]]
        do { lines = try JSONLines.read(auditPath) } catch {
            throw CLIFailure("cannot read the audit log '\(auditPath)': \(error.localizedDescription)")
        }
        var out: [String: DLQGroupStatus] = [:]
        for o in lines where o["action"] as? String == action && o["worker"] as? String == worker {
            guard let g = o["group"] as? String, let s = (o["state"] as? String).flatMap(State.init(rawValue:)) else { continue }
            out[g] = DLQGroupStatus(
                group: g, state: s, by: o["by"] as? String, note: o["note"] as? String, at: o["at"] as? String ?? "",
                user: o["user"] as? String ?? "")
        }
        return out
    }

    /// `investigating (alice)`, `ignored`, `open`.
    public var label: String {
        state == .investigating ? "investigating (\(by ?? user))" : state.rawValue
    }

    /// The fields `dlq list --group-by error --json` adds to a group.
    public static func json(_ s: DLQGroupStatus?) -> [String: Any] {
        [
            "status": s?.state.rawValue ?? State.open.rawValue, "status_by": orNull(s?.by), "status_note": orNull(s?.note),
            "status_at": orNull(s?.at), "status_user": orNull(s?.user),
        ]
    }

    /// A group id as `dlq list --group-by error` shows it: 8 hex digits.
    public static func checkGroup(_ g: String) throws -> String {
        let g = g.lowercased()
        guard g.count == 8, g.allSatisfy(\.isHexDigit) else {
            throw CLIFailure("group '\(TerminalText.safe(g))' is not a group id (8 hex digits, the GROUP column of `dlq list --group-by error`)")
        }
        return g
    }

    /// A note or name: at most `limit` characters, no control characters (it is printed in tables).
    public static func checkText(_ s: String?, option: String, limit: Int) throws -> String? {
        guard let s else { return nil }
        let t = s.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { throw CLIFailure("\(option): must not be empty") }
        guard t.count <= limit else { throw CLIFailure("\(option): at most \(limit) characters (got \(t.count))") }
        guard !t.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw CLIFailure("\(option): no control characters or line breaks")
        }
        return t
    }
}

extension DLQCommand {
    /// `payfleet dlq status W` (every group's status) and `payfleet dlq status W GROUP STATE
    /// [--by WHO] [--note TEXT]` (sets one, appending to the audit log). Reads no queue.
    public struct Status: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Show or set the investigation status of dead-letter groups (open, investigating, ignored).",
            discussion: """
                GROUP is the id in the GROUP column of `dlq list W --group-by error`. The status and its note are \
                kept in the audit log (one line per change; the latest wins) and shown by `dlq list --group-by error`.
                """)
        @OptionGroup public var global: GlobalOptions
        @Argument(help: "The worker: its config section (ledger-writer) or queue-name stem.") public var worker: String
        @Argument(help: "The group id (8 hex digits).") public var group: String?
        @Argument(help: "open, investigating or ignored.") public var state: DLQGroupStatus.State?
        @Option(help: "Who investigates (default: you).") public var by: String?
        @Option(help: "A note: the ticket, the suspected cause, why it is ignored.") public var note: String?
        public init() {}

        public func validate() throws {
            if group != nil, state == nil { throw ValidationError("give the state too: open, investigating or ignored") }
            if group == nil, by != nil || note != nil { throw ValidationError("--by and --note need GROUP and STATE") }
        }

        /// What `run` prints (and, with GROUP and STATE, the audit line it appended).
        public func output() throws -> String {
            let ctx = try CLIContext.load(global)
            let rc = try ctx.worker(worker)
            if let group, let state {
                let g = try DLQGroupStatus.checkGroup(group)
                let note = try DLQGroupStatus.checkText(note, option: "--note", limit: 1000)
                var who = try DLQGroupStatus.checkText(by, option: "--by", limit: 100)
                if state == .investigating, who == nil { who = AuditLog.user }
                try AuditLog(path: ctx.auditLogPath).record(
                    action: DLQGroupStatus.action, worker: rc.worker, outcome: "set",
                    extra: ["group": g, "state": state.rawValue, "by": orNull(who), "note": orNull(note)])
                let set = try DLQGroupStatus.current(auditPath: ctx.auditLogPath, worker: rc.worker)[g]
                if global.json {
                    var o = DLQGroupStatus.json(set)
                    o["group"] = g
                    o["worker"] = rc.worker
                    return try Self.text(o)
                }
                return TerminalText.safe(
                    "group \(g) of \(rc.worker): \(set?.label ?? state.rawValue)" + (note.map { " — \($0)" } ?? "")
                        + " (audit log \(ctx.auditLogPath))")
            }
            let all = try DLQGroupStatus.current(auditPath: ctx.auditLogPath, worker: rc.worker)
            let rows = all.values.sorted { $0.group < $1.group }
            if global.json {
                return try Self.text(rows.map { s -> [String: Any] in
                    var o = DLQGroupStatus.json(s)
                    o["group"] = s.group
                    return o
                })
            }
            var lines = Table.render(
                header: ["GROUP", "STATUS", "SINCE", "SET BY", "NOTE"],
                rows: rows.map { [$0.group, $0.label, $0.at, $0.user, Table.clip($0.note ?? "", 80)] }, rightAligned: [])
            lines = lines.map { TerminalText.safe($0) }
            lines.append("\(rows.count) group\(rows.count == 1 ? "" : "s") with a status (every other group is open)")
            return lines.joined(separator: "\n")
        }

        static func text(_ o: Any) throws -> String {
            let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            return String(decoding: data, as: UTF8.self)
        }

        public func run() async throws { print(try output()) }
    }
}
