import Foundation
@testable import PayfleetCLI
import PayfleetCore
import Testing

/// The CRM and receipt checks read the sandbox outputs of DESIGN §6 (crm_file JSON lines, the
/// mail directory's `.eml` files): agree, disagree with the reason, or "not running".
@Suite struct FleetReaderTests {
    func reader(_ dir: String) throws -> SimFleetReader {
        let config = SimConfig(
            merchants: SimFixtures.merchants, channels: SimFixtures.channels, ingestURL: "http://127.0.0.1:1",
            stateDir: dir, crmFile: dir + "/crm.jsonl", mailDir: dir + "/mail", configPath: dir + "/payfleet.yaml")
        return SimFleetReader(config: config, global: try GlobalOptions.parse(["--config", dir + "/payfleet.yaml"]))
    }

    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sim-reader-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func expectation() -> SimExpectation {
        let m = SimFixtures.merchants[3]
        let bhd = Currency(code: "BHD")!
        let facts = [
            PaymentEvent(id: "evt_INV", type: .invoiceIssued, occurredAt: SimFixtures.now, source: .init(provider: "billing", eventID: "b1"),
                         merchantID: m.id, customer: .init(id: "pp-c1"), amount: Money(value: 12_345, currency: bhd), invoiceID: "INV-1"),
            PaymentEvent(id: "evt_PAY", type: .paymentSucceeded, occurredAt: SimFixtures.now, source: .init(provider: "phonepay", eventID: "p1"),
                         merchantID: m.id, customer: .init(id: "pp-c1", email: "c1@example.com"), payment: .init(id: "call-1"),
                         amount: Money(value: 2_000, currency: bhd), invoiceID: "INV-1"),
            PaymentEvent(id: "evt_REF", type: .paymentRefunded, occurredAt: SimFixtures.now, source: .init(provider: "phonepay", eventID: "p2"),
                         merchantID: m.id, customer: .init(id: "pp-c1", email: "c1@example.com"), payment: .init(id: "call-1"),
                         amount: Money(value: 500, currency: bhd)),
        ]
        return SimExpectation.compute(facts: facts, merchants: SimFixtures.merchants)
    }

    @Test func crmBalancesAreTheLastLinePerCustomerAndCurrency() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try reader(dir)
        let x = expectation()
        #expect(r.crmCheck(expected: x, runCustomers: ["pp-c1"]).summary == "not running: crm-sync (no \(dir)/crm.jsonl)")
        let lines = [
            #"{"event_id":"evt_INV","customer_id":"pp-c1","merchant_id":"m_dilmun","currency":"BHD","outstanding":12345,"paid":0,"refunded":0,"disputed":0,"at":"2026-11-24T10:00:00Z"}"#,
            #"{"event_id":"evt_X","customer_id":"someone-else","merchant_id":"m_dilmun","currency":"BHD","outstanding":1,"paid":0,"refunded":0,"disputed":0,"at":"2026-11-24T10:00:00Z"}"#,
            #"{"event_id":"evt_REF","customer_id":"pp-c1","merchant_id":"m_dilmun","currency":"BHD","outstanding":10345,"paid":2000,"refunded":500,"disputed":0,"at":"2026-11-24T10:00:02Z"}"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/crm.jsonl", atomically: true, encoding: .utf8)
        let ok = r.crmCheck(expected: x, runCustomers: ["pp-c1"])
        #expect(ok.status == .agree, "\(ok.differences)")
        let wrong = lines + [
            #"{"event_id":"evt_Y","customer_id":"pp-c1","merchant_id":"m_dilmun","currency":"BHD","outstanding":10346,"paid":2000,"refunded":500,"disputed":0,"at":"2026-11-24T10:00:03Z"}"#
        ]
        try (wrong.joined(separator: "\n") + "\n").write(toFile: dir + "/crm.jsonl", atomically: true, encoding: .utf8)
        let bad = r.crmCheck(expected: x, runCustomers: ["pp-c1"])
        #expect(bad.status == .disagree)
        #expect(bad.differences == ["pp-c1 m_dilmun BHD: sent outstanding 10345 paid 2000 refunded 500 disputed 0; fleet outstanding 10346 paid 2000 refunded 500 disputed 0"])
        _ = r.receiptsCheck(expected: x, runEvents: [])
    }

    @Test func receiptsAreOneMessagePerEventWithAnEmail() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try reader(dir)
        let x = expectation()
        #expect(x.receipts == ["evt_PAY", "evt_REF"])
        let run: Set<String> = ["evt_INV", "evt_PAY", "evt_REF"]
        #expect(r.receiptsCheck(expected: x, runEvents: run).status == .notRunning)
        try FileManager.default.createDirectory(atPath: dir + "/mail", withIntermediateDirectories: true)
        func write(_ name: String, _ event: String, messageIDOnly: Bool = false) throws {
            let header = messageIDOnly ? "Message-ID: <receipt.\(event)@payfleet.test>" : "X-Payfleet-Event-ID: \(event)"
            try "From: receipts@payfleet.test\r\nTo: c1@example.com\r\n\(header)\r\nSubject: Receipt\r\n\r\nBody X-Payfleet-Event-ID: evt_INV\r\n"
                .write(toFile: dir + "/mail/\(name)", atomically: true, encoding: .utf8)
        }
        try write("a.eml", "evt_PAY")
        var check = r.receiptsCheck(expected: x, runEvents: run)
        #expect(check.status == .disagree)
        #expect(check.differences == ["1 receipts not sent, e.g. evt_REF"])
        try write("b.eml", "evt_REF")
        try write("c.sms.json", "evt_REF")
        check = r.receiptsCheck(expected: x, runEvents: run)
        #expect(check.status == .agree, "\(check.differences)")
        try write("d.eml", "evt_REF")
        check = r.receiptsCheck(expected: x, runEvents: run)
        #expect(check.differences == ["1 events with more than one receipt, e.g. evt_REF"])
        #expect(SimFleetReader.eventID(ofMessage: "Message-ID: <r.evt_01JD0000000000000000000000@x>\r\n\r\nbody") == "evt_01JD0000000000000000000000")
    }
}

@Suite struct SettlementCheckTests {
    @Test func settlementComparesTheChangeOfEachDay() {
        let x = FleetReaderTests().expectation()
        let key = SimExpectation.DayKey(merchant: "m_dilmun", currency: "BHD", date: SimFixtures.merchants[3].businessDay(for: SimFixtures.now))
        #expect(x.settlement[key] == .init(count: 1, gross: 2_000, refunds: 500))
        let before = SimExpectation.DayTotals(count: 4, gross: 10_000, refunds: 1, disputes: 2, fees: 3)
        let other = SimExpectation.DayKey(merchant: "m_acme", currency: "GBP", date: "2026-11-17")
        let same = SimExpectation.DayTotals(count: 9, gross: 9)
        let ok = SimFleetReader.settlementCheck(
            now: [key: before + x.settlement[key]!, other: same], baseline: [key: before, other: same], expected: x)
        #expect(ok.status == .agree, "\(ok.differences)")
        let bad = SimFleetReader.settlementCheck(
            now: [key: before + x.settlement[key]!, other: SimExpectation.DayTotals(count: 10, gross: 19)],
            baseline: [key: before, other: same], expected: x)
        #expect(bad.status == .disagree)
        #expect(bad.differences.count == 1)
        #expect(bad.differences.first?.hasPrefix("m_acme GBP 2026-11-17: sent count 0 gross 0.00 GBP") == true)
    }

    /// A ledger that keeps customer ids with `-` apart (a digest after `--`) names the same
    /// receivable the expectation does; other accounts are left alone.
    @Test func receivablesWithADigestSuffixAreTheCustomersPlainAccount() {
        let suffixed = SimExpectation.AccountKey("Assets:M-acme:Receivable:Pp-x1--0123456789ABCDEF", "GBP")
        #expect(SimFleetReader.plainReceivable(suffixed) == .init("Assets:M-acme:Receivable:Pp-x1", "GBP"))
        for plain in ["Assets:M-acme:Receivable:Cus-x1", "Assets:M-acme:Clearing:Stripe", "Assets:M-acme:Receivable:Pp--x"] {
            #expect(SimFleetReader.plainReceivable(.init(plain, "GBP")) == .init(plain, "GBP"))
        }
    }
}
