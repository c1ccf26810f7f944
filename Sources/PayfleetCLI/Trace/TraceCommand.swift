import ArgumentParser
import Foundation

/// `payfleet trace ID`: everything the fleet did with an event, a payment, an invoice or a
/// provider event, in time order (see `FleetTrace`). Read-only; indexed lookups only.
public struct TraceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Follow an event, payment, invoice or provider event id through ingest and every worker.",
        discussion: """
            ID is a canonical event id (evt_…), a payment id, an invoice id or a provider's event id. \
            Reads ingest's and every worker partition's SQLite file read-only, by index. \
            --json: {"query", "matched_as", "events": [...], "steps": [...], "sources": [...]} (docs/operations.md).
            """)
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Canonical event id, payment id, invoice id or provider event id.") public var id: String
    public init() {}

    /// What `run` prints.
    public func output() throws -> String {
        let report = try FleetTrace.sources(configPath: global.configPath).trace(id)
        if global.json {
            let data = try JSONSerialization.data(
                withJSONObject: report.jsonObject, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            return String(decoding: data, as: UTF8.self)
        }
        return report.text
    }

    public func run() async throws {
        do { print(try output()) } catch let e as CLIFailure { throw e } catch { throw CLIFailure("trace: \(error)") }
    }
}
