import Foundation
import PayfleetCore
import PayfleetReceipts
import PayfleetWorker

/// `receipt-sender`: the shared worker runtime with the receipt handler (email / SMS receipts).
@main
struct ReceiptSenderMain {
    /// `--help` answers before any configuration is read (DESIGN §1: usage and exit 0).
    static let usage = WorkerMain.usage(
        .receiptSender,
        summary: """
            Email and SMS receipts, exactly once per payment.succeeded / payment.refunded: consumes
            payment events from its RabbitMQ queue; state in receipt-sender[.pN].sqlite.
            """)

    static func main() async {
        WorkerMain.exitOnHelp(usage)
        let code = await WorkerMain.run(.receiptSender) { section, root, merchants, logger in
            try ReceiptHandler(section: section, root: root, merchants: merchants, logger: logger)
        }
        exit(code)
    }
}
