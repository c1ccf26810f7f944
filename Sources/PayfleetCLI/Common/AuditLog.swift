import Foundation
import PayfleetCore

/// An append-only JSON-lines file, each line written with one `write(2)` on an `O_APPEND`
/// descriptor and `fsync`'d before the call returns: the audit log and the DLQ archives.
/// A line is either wholly there after a crash or not at all (the next reader skips a torn
/// last line); concurrent writers never interleave within a line.
public final class JSONLines {
    public let path: String
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty, !FileManager.default.fileExists(atPath: dir) {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw CLIFailure("cannot create directory '\(dir)' for \(path): \(error.localizedDescription)")
            }
        }
        let existed = FileManager.default.fileExists(atPath: path)
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw CLIFailure("cannot open '\(path)' for appending: \(String(cString: strerror(errno)))") }
        if !existed {
            // Every operator appends (group payfleet-ops, set-gid directory), whatever the umask.
            fchmod(fd, 0o660)
            JSONLines.syncDirectory(of: path)
        }
    }

    deinit { close(fd) }

    /// Appends the objects as lines and fsyncs; returns once they are on disk.
    public func append(_ objects: [[String: Any]]) throws {
        guard !objects.isEmpty else { return }
        var bytes: [UInt8] = []
        for o in objects {
            let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])
            bytes += data
            bytes.append(UInt8(ascii: "\n"))
        }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CLIFailure("writing '\(path)': \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        guard fsync(fd) == 0 else { throw CLIFailure("fsync of '\(path)': \(String(cString: strerror(errno)))") }
    }

    public func append(_ object: [String: Any]) throws { try append([object]) }

    /// A new file's name is durable only once its directory is synced.
    static func syncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { return }
        _ = fsync(dfd)
        close(dfd)
    }

    /// Reads every complete line as a JSON object (a torn last line is skipped).
    public static func read(_ path: String) throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.split(separator: UInt8(ascii: "\n")).compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0))) as? [String: Any]
        }
    }
}

/// The operator's audit trail (`cli.audit_log`, default `<state_dir>/audit.jsonl`): one line
/// per replay, edit and purge — who (OS user), when, which worker, the command line, the ids
/// and, for edits, what changed.
public struct AuditLog {
    public let file: JSONLines
    let argv: [String]

    public init(path: String, argv: [String] = CommandLine.arguments) throws {
        file = try JSONLines(path: path)
        self.argv = argv
    }

    /// The OS user running the command (`$SUDO_USER` kept: the person behind the sudo).
    public static var user: String {
        let env = ProcessInfo.processInfo.environment
        var name = "uid \(getuid())"
        if let pw = getpwuid(getuid()), let n = pw.pointee.pw_name { name = String(cString: n) }
        if let sudo = env["SUDO_USER"], !sudo.isEmpty { return "\(sudo) (as \(name))" }
        return name
    }

    /// Set by `payfleet console` around an action it runs: the line then records the
    /// equivalent command and the console's operator (`via`, `console_operator`).
    @TaskLocal public static var console: ConsoleAuditContext?

    public func record(action: String, worker: String, outcome: String, ids: [String] = [], extra: [String: Any] = [:]) throws {
        var o: [String: Any] = [
            "at": RFC3339.format(Date()), "user": AuditLog.user, "host": ProcessInfo.processInfo.hostName,
            "pid": Int(getpid()), "command": argv.dropFirst().joined(separator: " "), "action": action,
            "worker": worker, "outcome": outcome, "ids": ids, "count": ids.count,
        ]
        if let c = AuditLog.console {
            o["command"] = c.command
            o["via"] = "console"
            o["console_operator"] = c.operatorName
        }
        for (k, v) in extra { o[k] = v }
        try file.append(o)
    }
}

/// A JSON value or null.
func orNull<T>(_ value: T?) -> Any { value.map { $0 as Any } ?? NSNull() }
