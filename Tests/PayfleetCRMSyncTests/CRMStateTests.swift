import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetTestKit
import Testing

/// Customer state (DESIGN §5a): balances converge whatever the order; older events never
/// overwrite newer state; the read API's document.
@Suite struct CRMStateTests {
    static func handler() throws -> CRMHandler {
        CRMHandler(connector: try SandboxConnector(path: TestEnvironment.makeTempDir("crm-unit") + "/crm.jsonl"))
    }

    @Test("A refund and a dispute that arrive before their payment reach the customer through it")
    func refundBeforePayment() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        let refund = crmEvent("r1", .paymentRefunded, amount: 300, customer: nil, payment: "pi_9", invoice: "inv_9",
                              at: "2026-11-24T12:00:00Z")
        let dispute = crmEvent("d1", .paymentDisputed, amount: 1000, customer: nil, payment: "pi_9", at: "2026-11-24T13:00:00Z")
        // Nothing to push yet: the customer is unknown.
        #expect(try await h.apply([refund, dispute]).isEmpty)
        #expect(try await h.figures().isEmpty)
        let invoice = crmEvent("i1", .invoiceIssued, amount: 1000, customer: "cus_9", payment: nil, invoice: "inv_9",
                               at: "2026-11-24T09:00:00Z")
        let payment = crmEvent("p1", .paymentSucceeded, amount: 1000, customer: "cus_9", payment: "pi_9", invoice: "inv_9",
                               at: "2026-11-24T10:00:00Z")
        let changes = try await h.apply([invoice, payment])
        #expect(changes.count == 2)
        // The waiting events are pushed as payment records once their customer is known: the
        // refund names the invoice (reached with the invoice), the dispute only the payment.
        #expect(changes[0].payments.map(\.eventID) == ["r1"])
        #expect(Set(changes[1].payments.map(\.eventID)) == ["p1", "d1"])
        let f = try await h.figures()
        #expect(f[CRMStream.key("cus_9", "m_acme", "GBP")] == Figures(outstanding: 300, paid: 1000, refunded: 300, disputed: 1000))
        #expect(changes[1].customers.first?.status == "disputed")
        // The dispute is won: disputed drops back, the balance does not move.
        let won = crmEvent("c1", .disputeClosed, amount: 1000, customer: nil, payment: "pi_9", at: "2026-11-25T09:00:00Z",
                           metadata: ["outcome": "won"])
        let c = try await h.apply([won])
        #expect(c.first?.customers.first?.disputed == 0)
        #expect(c.first?.customers.first?.status == "owing")
        #expect(c.first?.customers.first?.outstanding == 300)
    }

    @Test("An older event arriving late never overwrites the profile or the last payment")
    func olderNeverOverwrites() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("new", .paymentSucceeded, amount: 500, customer: "cus_1", payment: "pi_new", at: "2026-11-24T12:00:00Z",
                     name: "Ada King", email: "ada.king@example.com")
        ])
        let late = try await h.apply([
            crmEvent("old", .paymentSucceeded, amount: 700, customer: "cus_1", payment: "pi_old", at: "2026-11-20T12:00:00Z",
                     name: "Ada Lovelace", email: "ada@example.com")
        ])
        let s = try #require(late.first?.customers.first)
        #expect(s.name == "Ada King")
        #expect(s.email == "ada.king@example.com")
        #expect(s.lastPaymentID == "pi_new")
        #expect(s.lastPaymentAmount == 500)
        #expect(s.paid == 1200)
        #expect(s.version == 2)
    }

    @Test("3,000 mixed events: in order, shuffled and redelivered give the figures computed from the stories")
    func streamConverges() async throws {
        let stream = CRMStream(total: 3_000, seed: 99, prefix: "u")
        for t in [PaymentEvent.EventType.invoiceIssued, .paymentSucceeded, .paymentRefunded, .paymentDisputed, .disputeClosed,
                  .paymentFailed] {
            #expect((stream.typeCounts[t] ?? 0) > 20, "\(t.rawValue) appears in the stream")
        }
        let expected = stream.expected
        let a = try await CRMHarness(handler: try Self.handler())
        try await a.apply(stream.events.sorted { $0.occurredAt < $1.occurredAt })
        #expect(try await a.figures() == expected)

        let b = try await CRMHarness(handler: try Self.handler())
        try await b.apply(stream.events, batch: 97)
        #expect(try await b.figures() == expected)
        #expect(try await b.apply(stream.events).isEmpty)
        #expect(try await b.figures() == expected)
        // Nothing is left waiting for its customer.
        let pending = try await b.store.withConnection { db in try db.queryOne("SELECT COUNT(*) FROM crm_events WHERE customer_id IS NULL")?.int(0) }
        #expect(pending == 0)
    }

    @Test("The customer document: balance per currency, open invoices, history newest first, no card data; unknown → nil")
    func customerDocument() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("i1", .invoiceIssued, amount: 5000, customer: "cus_7", payment: nil, invoice: "inv_1", at: "2026-11-01T09:00:00Z"),
            crmEvent("i2", .invoiceIssued, amount: 2000, customer: "cus_7", payment: nil, invoice: "inv_2", at: "2026-11-02T09:00:00Z"),
            crmEvent("p1", .paymentSucceeded, amount: 5000, customer: "cus_7", payment: "pi_1", invoice: "inv_1", at: "2026-11-03T09:00:00Z"),
            crmEvent("p2", .paymentSucceeded, amount: 1500, customer: "cus_7", payment: "pi_2", invoice: "inv_2", at: "2026-11-04T09:00:00Z"),
            crmEvent("p3", .paymentSucceeded, amount: 1000, currency: "JPY", customer: "cus_7", payment: "pi_3", at: "2026-11-05T09:00:00Z"),
            crmEvent("f1", .paymentFailed, amount: 999, customer: "cus_7", payment: "pi_4", at: "2026-11-06T09:00:00Z"),
        ])
        let doc = try #require(try await h.customerJSON("cus_7"))
        #expect(doc["customer_id"] as? String == "cus_7")
        #expect(doc["name"] as? String == "Ada Lovelace")
        let outstanding = try #require(doc["outstanding"] as? [String: Any])
        #expect((outstanding["GBP"] as? NSNumber)?.int64Value == 500)
        #expect((outstanding["JPY"] as? NSNumber)?.int64Value == 0)
        let invoices = try #require(doc["open_invoices"] as? [[String: Any]])
        #expect(invoices.count == 1)
        #expect(invoices.first?["invoice_id"] as? String == "inv_2")
        #expect((invoices.first?["due"] as? NSNumber)?.int64Value == 500)
        let history = try #require(doc["payments"] as? [[String: Any]])
        #expect(history.map { $0["event_id"] as? String } == ["f1", "p3", "p2", "p1"])
        let text = String(decoding: try JSONSerialization.data(withJSONObject: doc), as: UTF8.self)
        #expect(!text.contains("4242") && !text.contains("visa") && !text.contains("last4"))
        #expect(try await h.customerJSON("cus_unknown") == nil)
    }
}
