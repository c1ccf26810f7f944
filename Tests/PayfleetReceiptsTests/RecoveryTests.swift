import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

@testable import PayfleetReceipts

/// receipt-sender's recovery through the runtime's batch step (`HandlerHarness`) on a real state
/// file and the sandbox transport: what a restart finds after a crash between the batch commit
/// and the sends.
@Suite struct ReceiptRecoveryTests {
    static let merchants = EventFactory.merchants.map { Merchant(id: $0, name: $0, timeZone: "Europe/London") }

    static func handler(_ dir: String) throws -> ReceiptHandler {
        let root = try ConfigSection.parse(yaml: "state_dir: \(dir)\nreceipt-sender:\n  locale: en\n  sms_transport: none\n")
        return try ReceiptHandler(section: try root.section("receipt-sender"), root: root, merchants: merchants, logger: Logger(label: "test"))
    }

    /// Sandbox email file → inode (a resend renames a new file over the old name).
    static func mails(_ dir: String) -> [String: Int] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/mail")) ?? []).filter { !$0.hasPrefix(".") }
        var out: [String: Int] = [:]
        for n in names {
            let a = try? FileManager.default.attributesOfItem(atPath: dir + "/mail/" + n)
            out[n] = (a?[.systemFileNumber] as? NSNumber)?.intValue ?? -1
        }
        return out
    }

    @Test("Journaled but never sent (a crash after the commit): the redelivery sends each once; the sent ones are not sent again")
    func crashAfterCommitBeforeSend() async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-recover")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let events = (0..<40).map { EventFactory.payment($0, prefix: "rcv", type: .paymentSucceeded) }
        let sent = Array(events[0..<25])
        let unsent = Array(events[25...])
        let path = dir + "/receipt-sender.sqlite"

        do {
            let h = try Self.handler(dir)
            let store = try await Store(path: path, migrations: HandlerHarness<ReceiptHandler>.migrations(h), durability: .normal)
            let harness = try await HandlerHarness(handler: h, store: store)
            let first = try await harness.run(sent, performEffects: true)
            #expect(first.compactMap(\.effect).count == sent.count && first.compactMap(\.failure).isEmpty)
            // Applied and committed; the process dies before any of these sends.
            let second = try await harness.run(unsent, performEffects: false)
            #expect(second.compactMap(\.effect).count == unsent.count)
        }
        let before = Self.mails(dir)
        #expect(before.count == sent.count, "one email per receipt sent before the crash")

        // The restart: every event redelivered (the acks never reached the broker).
        let h = try Self.handler(dir)
        let store = try await Store(path: path, migrations: HandlerHarness<ReceiptHandler>.migrations(h), durability: .normal)
        let harness = try await HandlerHarness(handler: h, store: store)
        let again = try await harness.run(events, performEffects: true)
        #expect(again.filter(\.isNew).isEmpty, "no event applied anew")
        #expect(again.compactMap(\.failure).isEmpty, "no receipt flagged or failed: \(again.compactMap(\.failure).prefix(3))")
        #expect(again.compactMap(\.effect).count == unsent.count, "only the unsent receipts performed")
        let after = Self.mails(dir)
        #expect(after.count == events.count, "each receipt sent once: \(after.count) emails for \(events.count)")
        #expect(before.allSatisfy { after[$0.key] == $0.value }, "no email sent before the crash was sent again")
        let conn = try SQLiteConnection(path: path, readOnly: true)
        #expect(try conn.queryOne("SELECT count(*) FROM receipt_deliveries WHERE state = 'sent'")?.int(0) == Int64(events.count))
        #expect(try conn.queryOne("SELECT count(*) FROM effect_journal WHERE state <> 'done'")?.int(0) == 0)
    }
}
