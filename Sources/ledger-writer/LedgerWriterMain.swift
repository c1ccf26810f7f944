import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetWorker

/// `ledger-writer`: the shared worker runtime with the ledger handler (DESIGN §5a).
@main
struct LedgerWriterMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = WorkerMain.usage(
        .ledgerWriter,
        summary: """
            Immutable, balanced double-entry postings in integer minor units (DESIGN §5a): consumes
            payment events from its RabbitMQ queue into ledger-writer[.pN].sqlite.
            """)

    static func main() async {
        WorkerMain.exitOnHelp(usage)
        let code = await WorkerMain.run(.ledgerWriter) { section, _, merchants, logger in
            try LedgerHandler(section: section, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
