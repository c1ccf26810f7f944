import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

@testable import PayfleetReceipts

/// The real `receipt-sender` process, the private broker and a real SMTP server (aiosmtpd) on
/// loopback: no receipt for reversals and fees (issue 14 item 5), strict address literals
/// (issue 15 item 15), SMTP replies redacted in errors and `/readyz` (issue 15 item 14).
@Suite(.serialized) struct ReceiptSafetyIntegrationTests {
    @Test("refund.failed, payment.reversed, payout.failed, fee.assessed get no receipt; a@[1.2.3.4\\r\\nX-Injected: 1] is refused; a 550 reply is redacted")
    func reversalsLiteralsAndRedaction() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-safety")
        let sink = SMTPSink(dir: dir)
        try await sink.start()
        defer { sink.kill() }
        try await WorkerProcess.receipts(prefix: "rcpt-safety", section: ReceiptIntegrationTests.smtpSection(sink.port)) { fleet in
            try await fleet.declare()
            let p = "safe\(UInt32.random(in: 0...UInt32.max))"
            var reversals: [PaymentEvent] = []
            for (i, type) in [PaymentEvent.EventType.refundFailed, .paymentReversed, .payoutFailed, .feeAssessed].enumerated() {
                var e = receiptEvent(10 + i, prefix: p, currency: "GBP", amount: 1999, phone: "+447700900123", type: type)
                e.metadata["refund_id"] = "re_\(p)_\(i)"
                reversals.append(e)
            }
            let literal = receiptEvent(1, prefix: p, currency: "GBP", amount: 2500, email: "ada@[127.0.0.1]")
            let plain = receiptEvent(2, prefix: p, currency: "GBP", amount: 3500)
            let injected = receiptEvent(3, prefix: p, currency: "GBP", amount: 4500, email: "a@[1.2.3.4\r\nX-Injected: 1]")
            let rejected = receiptEvent(4, prefix: p, currency: "GBP", amount: 5500, email: "reject-me@example.com")
            let pub = fleet.publisher()
            try await fleet.publish(reversals + [literal, plain, injected, rejected], via: pub)
            pub.close()
            try fleet.start()
            let settled = await eventually(timeout: .seconds(60)) {
                let dead = ((try? await fleet.deadLetters()) ?? []).count
                return sink.count == 2 && dead == 2 && (try? fleet.count("receipts")) == 7
            }
            #expect(settled, "\(fleet.process?.log.suffix(3000) ?? "")")

            // Exactly the two valid payments were mailed; the literal reached RCPT TO intact.
            let messages = try sink.messages()
            #expect(Set(messages.flatMap { ($0["rcpt_tos"] as? [String]) ?? [] }) == ["ada@[127.0.0.1]", "ada@example.com"])
            for raw in try sink.raw() { #expect(!raw.contains("X-Injected")) }
            // No receipt of any kind for the four reversal / fee types: recorded, counted.
            let ids = reversals.map { "'\($0.id)'" }.joined(separator: ",")
            #expect(try fleet.count("receipts", where: "event_id IN (\(ids)) AND status = 'disabled'") == 4)
            #expect(try fleet.count("receipt_deliveries", where: "event_id IN (\(ids))") == 0)
            let skipped = await fleet.metrics().split(separator: "\n").first {
                $0.hasPrefix("payfleet_receipts_skipped_total") && $0.contains("no_receipt_for_type")
            }
            #expect(skipped?.hasSuffix(" 4") == true, "\(skipped ?? "none")")

            let errors = try await fleet.deadLetters().map {
                ($0.messageID ?? "", $0.headers[PayfleetHeaders.error]?.stringValue ?? "")
            }
            let inj = try #require(errors.first { $0.0 == injected.id })
            #expect(inj.1.hasPrefix("InvalidAddress"), "\(inj.1)")
            #expect(!inj.1.contains("X-Injected"))
            let rej = try #require(errors.first { $0.0 == rejected.id })
            #expect(rej.1.hasPrefix("SMTP550: 550"), "\(rej.1)")
            #expect(rej.1.contains("Recipient address rejected"), "\(rej.1)")
            #expect(rej.1.contains("[email]"), "\(rej.1)")
            #expect(!rej.1.contains("reject-me@example.com"), "\(rej.1)")
            let journal = try fleet.database()?.queryOne(
                "SELECT last_error FROM receipt_deliveries WHERE event_id = ?", [.text(rejected.id)])?.string(0) ?? ""
            #expect(journal.contains("550") && !journal.contains("reject-me@"), "\(journal)")
            let ready = await fleet.admin("/readyz")?.body ?? ""
            #expect(!ready.contains("reject-me@") && !ready.contains("ada@"), "\(ready)")
            let metrics = await fleet.metrics()
            #expect(!metrics.contains("@") && !metrics.contains("Ada") && !metrics.contains("7700"))
        }
    }
}
