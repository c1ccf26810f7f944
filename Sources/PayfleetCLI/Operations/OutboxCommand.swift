import ArgumentParser
import Foundation
import Logging
import PayfleetCore
import PayfleetIngest

/// `payfleet outbox parked | release`: the accepted events ingest's relay could not publish
/// because the broker refused them (unroutable, refused, or a message that breaks the
/// connection). They wait in `ingest.sqlite` with their own retry; nothing is dropped.
public struct OutboxCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "outbox", abstract: "Events ingest accepted but the broker keeps refusing.",
        subcommands: [Parked.self, Release.self])
    public init() {}

    /// `ingest.state_file`, else `<state_dir>/ingest.sqlite`.
    static func statePath(_ global: GlobalOptions, override: String?) throws -> String {
        if let override { return override }
        let root = try ConfigSection.load(file: global.configPath, environment: ProcessInfo.processInfo.environment)
        return try IngestConfiguration.statePath(root: root, section: try root.section("ingest"))
    }

    static func open(_ path: String) async throws -> Outbox {
        guard FileManager.default.fileExists(atPath: path) else { throw CLIFailure("no ingest state file at \(path)") }
        var logger = Logger(label: "payfleet.cli")
        logger.logLevel = .error
        return try await Outbox(path: path, logger: logger)
    }

    public struct Parked: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "List parked events (refused at least \(Outbox.parkAfterAttempts) times): id, type, attempts, the broker's refusal.")
        @OptionGroup public var global: GlobalOptions
        @Option(name: .customLong("state-file"), help: "ingest's SQLite file (else from the configuration).")
        public var stateFile: String?
        public init() {}

        public func output() async throws -> String {
            let rows = try await OutboxCommand.open(try OutboxCommand.statePath(global, override: stateFile)).parked()
            if global.json {
                let objects: [[String: Any]] = rows.map {
                    ["id": $0.id, "type": $0.type, "attempts": $0.attempts, "last_error": TerminalText.safe($0.lastError)]
                }
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                return String(decoding: data, as: UTF8.self)
            }
            if rows.isEmpty { return "no parked events" }
            return (["ID\tTYPE\tATTEMPTS\tLAST ERROR"] + rows.map {
                "\(TerminalText.safe($0.id))\t\($0.type)\t\($0.attempts)\t\(TerminalText.safe($0.lastError))"
            }).joined(separator: "\n")
        }

        public func run() async throws { print(try await output()) }
    }

    public struct Release: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Make waiting events due now (after fixing the binding or limit that refused them); recorded in the audit log.")
        @OptionGroup public var global: GlobalOptions
        @Option(name: .customLong("state-file"), help: "ingest's SQLite file (else from the configuration).")
        public var stateFile: String?
        @Argument(help: "Canonical event ids; none with --all.") public var ids: [String] = []
        @Flag(help: "Every waiting event.") public var all = false
        public init() {}

        public func validate() throws {
            if all == !ids.isEmpty { throw ValidationError("name event ids or pass --all (not both)") }
        }

        public func output() async throws -> String {
            let outbox = try await OutboxCommand.open(try OutboxCommand.statePath(global, override: stateFile))
            let n = try await outbox.release(ids: all ? nil : ids)
            if let ctx = try? CLIContext.load(global) {
                try AuditLog(path: ctx.auditLogPath).record(
                    action: "outbox.release", worker: "ingest", outcome: "released \(n)", ids: ids)
            }
            return global.json ? "{\"released\": \(n)}" : "released \(n) event(s); the relay publishes them next"
        }

        public func run() async throws { print(try await output()) }
    }
}
