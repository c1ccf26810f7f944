import ArgumentParser

/// `payfleet`: the operator's command line (DESIGN §6).
public struct PayfleetCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "payfleet", abstract: "Operate the Payfleet fleet.",
        subcommands: [
            StatusCommand.self, DLQCommand.self, TopologyCommand.self, LedgerCommand.self, SettlementCommand.self,
            SimulateCommand.self, DevCommand.self, OutboxCommand.self, BackfillCommand.self, TraceCommand.self,
            PartitionsCommand.self, ConsoleCommand.self,
        ])
    public init() {}
}
