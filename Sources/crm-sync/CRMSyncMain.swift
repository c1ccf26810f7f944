import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetWorker

/// `crm-sync`: the shared worker runtime with the CRM handler (DESIGN §5a, §6).
@main
struct CRMSyncMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = WorkerMain.usage(
        .crmSync,
        summary: """
            Per-customer payment history and outstanding balance, pushed to the configured CRM connector
            (DESIGN §5a): consumes payment events from its RabbitMQ queue into crm-sync[.pN].sqlite.
            """)

    static func main() async {
        WorkerMain.exitOnHelp(usage)
        let code = await WorkerMain.run(.crmSync) { section, root, _, logger in
            try CRMHandler(section: section, root: root, logger: logger)
        }
        exit(code)
    }
}
