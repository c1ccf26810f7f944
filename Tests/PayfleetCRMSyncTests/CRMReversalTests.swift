import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// Issue 14 item 5 (CRM side) and issue 15 items 5, 6 and 10: reversals undo their original in
/// any order, every money sum is checked, customers are keyed by merchant + customer. Every
/// expected figure below is worked out by hand from the events listed next to it.
@Suite struct CRMReversalTests {
    static func handler() throws -> CRMHandler {
        CRMHandler(connector: try SandboxConnector(path: TestEnvironment.makeTempDir("crm-rev") + "/crm.jsonl"))
    }

    /// invoice 100.00 → payment 100.00 (names it) → refund re_1 30.00 (names it) → refund re_1 fails.
    @Test("refund.failed after its refund: refunded and outstanding go back to what they were before the refund")
    func refundFailedAfterRefund() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("i1", .invoiceIssued, amount: 10_000, customer: "cus_1", payment: nil, invoice: "inv_1",
                     at: "2026-11-24T09:00:00Z"),
            crmEvent("p1", .paymentSucceeded, amount: 10_000, customer: "cus_1", payment: "pi_1", invoice: "inv_1",
                     at: "2026-11-24T10:00:00Z"),
            refundEvent("r1", refund: "re_1", amount: 3_000, invoice: "inv_1"),
        ])
        // 10000 − 10000 + 3000 = 3000 outstanding, 3000 refunded.
        #expect(try await h.figures("cus_1") == Figures(outstanding: 3_000, paid: 10_000, refunded: 3_000, disputed: 0))
        let change = try #require(try await h.applyOne(refundFailedEvent("rf1", refund: "re_1", amount: 3_000)))
        // The refund no longer counts: 10000 − 10000 = 0 outstanding, 0 refunded.
        let s = try #require(change.customers.first)
        #expect(change.customers.count == 1)
        #expect((s.customerID, s.merchantID, s.currency) == ("cus_1", "m_acme", "GBP"))
        #expect((s.outstanding, s.paid, s.refunded, s.disputed) == (0, 10_000, 0, 0))
        #expect(s.status == "settled")
        // The CRM learns of the failed refund as a payment record too.
        #expect(change.payments.map(\.eventID) == ["rf1"])
        #expect(change.payments.first?.type == "refund.failed")
        #expect(try await h.figures("cus_1") == Figures(outstanding: 0, paid: 10_000, refunded: 0, disputed: 0))
        // The history says what happened.
        let doc = try #require(try await h.customerJSON("cus_1"))
        let history = try #require(doc["payments"] as? [[String: Any]])
        let refund = try #require(history.first { $0["event_id"] as? String == "r1" })
        #expect(refund["reversed"] as? Bool == true)
        let failed = try #require(history.first { $0["event_id"] as? String == "rf1" })
        #expect(failed["matched"] as? Bool == true)
        #expect((doc["open_invoices"] as? [[String: Any]])?.isEmpty == true)
    }

    /// The out-of-order case: the failure first, then (twice, under two event ids, as Stripe's
    /// `refund.failed` and `charge.refund.updated` may) — and the refund last.
    @Test("refund.failed before its refund, and twice: the refund is born cancelled; nothing lost, nothing undone twice")
    func refundFailedBeforeRefund() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("p1", .paymentSucceeded, amount: 8_000, customer: "cus_1", payment: "pi_1", at: "2026-11-24T10:00:00Z")
        ])
        let early = try #require(try await h.applyOne(refundFailedEvent("rf1", refund: "re_1", amount: 500)))
        // Nothing to undo yet: the figures stand (paid 8000), the failure is recorded, unmatched.
        #expect(early.customers.first?.paid == 8_000)
        #expect(early.customers.first?.refunded == 0)
        _ = try await h.applyOne(refundFailedEvent("rf1b", refund: "re_1", amount: 500, at: "2026-11-25T12:00:01Z"))
        var doc = try #require(try await h.customerJSON("cus_1"))
        var history = try #require(doc["payments"] as? [[String: Any]])
        #expect(history.first { $0["event_id"] as? String == "rf1" }?["matched"] as? Bool == false)
        // The refund arrives: it counts zero. Another refund of the payment (re_2, 200) counts.
        _ = try await h.applyOne(refundEvent("r1", refund: "re_1", amount: 500))
        _ = try await h.applyOne(refundEvent("r2", refund: "re_2", amount: 200, at: "2026-11-24T12:30:00Z"))
        // paid 8000; refunded: re_1 cancelled (0) + re_2 200 = 200. No invoice: outstanding 0.
        #expect(try await h.figures("cus_1") == Figures(outstanding: 0, paid: 8_000, refunded: 200, disputed: 0))
        doc = try #require(try await h.customerJSON("cus_1"))
        history = try #require(doc["payments"] as? [[String: Any]])
        #expect(history.first { $0["event_id"] as? String == "rf1" }?["matched"] as? Bool == true)
        #expect(history.first { $0["event_id"] as? String == "r1" }?["reversed"] as? Bool == true)
        #expect(history.first { $0["event_id"] as? String == "r2" }?["reversed"] == nil)
    }

    /// Five events in all 120 orders: invoice 100.00; payment 100.00 naming it; refund re_1 30.00
    /// naming it; re_1 fails; refund re_2 10.00 naming it.
    /// By hand: outstanding = 10000 − 10000 + 1000 = 1000; paid 10000; refunded 1000.
    @Test("Every arrival order of a story with a failed refund gives the same figures")
    func everyOrderConverges() async throws {
        let story = [
            crmEvent("i1", .invoiceIssued, amount: 10_000, customer: "cus_1", payment: nil, invoice: "inv_1",
                     at: "2026-11-24T09:00:00Z"),
            crmEvent("p1", .paymentSucceeded, amount: 10_000, customer: "cus_1", payment: "pi_1", invoice: "inv_1",
                     at: "2026-11-24T10:00:00Z"),
            refundEvent("r1", refund: "re_1", amount: 3_000, invoice: "inv_1"),
            refundFailedEvent("rf1", refund: "re_1", amount: 3_000),
            refundEvent("r2", refund: "re_2", amount: 1_000, invoice: "inv_1", at: "2026-11-26T12:00:00Z"),
        ]
        func permutations(_ a: [Int]) -> [[Int]] {
            if a.count <= 1 { return [a] }
            return a.indices.flatMap { i -> [[Int]] in
                var rest = a
                let x = rest.remove(at: i)
                return permutations(rest).map { [x] + $0 }
            }
        }
        let orders = permutations(Array(0..<5))
        #expect(orders.count == 120)
        let expected = Figures(outstanding: 1_000, paid: 10_000, refunded: 1_000, disputed: 0)
        var wrong: [[Int]] = []
        for order in orders {
            let h = try await CRMHarness(handler: try Self.handler())
            for i in order { _ = try await h.applyOne(story[i]) }
            if try await h.figures("cus_1") != expected { wrong.append(order) }
        }
        #expect(wrong.isEmpty, "orders with other figures: \(wrong.prefix(5))")
    }

    /// Payments pi_a 50.00 (newest) and pi_b 70.00, no invoice; an invoiced one, pi_c 40.00 on inv_c 40.00.
    @Test("payment.reversed lowers paid (and gives back to outstanding what an invoiced payment took), in either order")
    func paymentReversed() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("pb", .paymentSucceeded, amount: 7_000, customer: "cus_1", payment: "pi_b", at: "2026-11-24T09:00:00Z"),
            crmEvent("pa", .paymentSucceeded, amount: 5_000, customer: "cus_1", payment: "pi_a", at: "2026-11-24T11:00:00Z"),
        ])
        #expect(try await h.figures("cus_1")?.paid == 12_000)
        let c = try #require(try await h.applyOne(reversedEvent("ra", payment: "pi_a", amount: 5_000)))
        let s = try #require(c.customers.first)
        // 12000 − 5000 = 7000; the last payment is pi_b again.
        #expect(s.paid == 7_000)
        #expect(s.lastPaymentID == "pi_b")
        #expect(s.lastPaymentAmount == 7_000)

        // Reversal first, invoiced payment second: outstanding 4000 − 0 = 4000, paid stays 7000.
        _ = try await h.applyOne(
            crmEvent("ic", .invoiceIssued, amount: 4_000, customer: "cus_1", payment: nil, invoice: "inv_c",
                     at: "2026-11-24T12:00:00Z"))
        _ = try await h.applyOne(reversedEvent("rc", payment: "pi_c", amount: 4_000))
        _ = try await h.applyOne(
            crmEvent("pc", .paymentSucceeded, amount: 4_000, customer: "cus_1", payment: "pi_c", invoice: "inv_c",
                     at: "2026-11-24T13:00:00Z"))
        #expect(try await h.figures("cus_1") == Figures(outstanding: 4_000, paid: 7_000, refunded: 0, disputed: 0))
        let doc = try #require(try await h.customerJSON("cus_1"))
        let open = try #require(doc["open_invoices"] as? [[String: Any]])
        #expect(open.count == 1)
        #expect((open.first?["due"] as? NSNumber)?.int64Value == 4_000)
    }

    @Test("Payouts and provider fees change no customer; an event dated more than a day ahead is refused (permanent)")
    func noCustomerEffectAndFutureDates() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("p1", .paymentSucceeded, amount: 1_000, customer: "cus_1", payment: "pi_1", at: "2026-11-24T10:00:00Z",
                     name: "Ada Lovelace", email: "ada@example.com")
        ])
        for (id, type) in [("po", PaymentEvent.EventType.payoutFailed), ("fa", .feeAssessed), ("pp", .payoutPaid)] {
            #expect(try await h.applyOne(crmEvent(id, type, amount: 300, customer: nil, payment: "pi_1")) == nil)
        }
        let rows = try await h.store.withConnection { db in try db.queryOne("SELECT COUNT(*) FROM crm_events")?.int(0) }
        #expect(rows == 1)
        // Year 9999: it would win "newest profile" forever.
        await #expect(throws: HandlerError.self) {
            _ = try await h.applyOne(
                crmEvent("future", .paymentSucceeded, amount: 1, customer: "cus_1", payment: "pi_9", at: "9999-01-01T00:00:00Z",
                         name: "Mallory", email: "mallory@example.com"))
        }
        do {
            _ = try await h.applyOne(
                crmEvent("future", .paymentSucceeded, amount: 1, customer: "cus_1", payment: "pi_9", at: "9999-01-01T00:00:00Z"))
        } catch let e as HandlerError {
            #expect(e.kind == .permanent)
            #expect(e.errorClass == "InvalidEvent")
            #expect(e.message.contains("occurred_at"))
        }
        let doc = try #require(try await h.customerJSON("cus_1"))
        #expect(doc["email"] as? String == "ada@example.com")
        #expect(try await h.figures("cus_1")?.paid == 1_000)
    }

    /// Int64.max = 9223372036854775807.
    @Test("A sum that would overflow is a permanent AmountOverflow; the customer's state stays, later events still book")
    func checkedSums() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        _ = try await h.applyOne(
            crmEvent("big", .paymentSucceeded, amount: Int64.max, customer: "cus_big", payment: "pi_big",
                     at: "2026-11-24T10:00:00Z"))
        #expect(try await h.figures("cus_big")?.paid == Int64.max)
        do {
            _ = try await h.applyOne(
                crmEvent("one", .paymentSucceeded, amount: 1, customer: "cus_big", payment: "pi_one", at: "2026-11-24T11:00:00Z"))
            Issue.record("an overflowing sum was booked")
        } catch let e as HandlerError {
            #expect(e.kind == .permanent)
            #expect(e.errorClass == "AmountOverflow")
            #expect(e.message.contains("paid"))
        }
        // Nothing of the refused event was kept; the key is not poisoned: a refund of 5 books.
        let kept = try await h.store.withConnection { db in
            try db.queryOne("SELECT COUNT(*) FROM crm_events WHERE event_id = 'one'")?.int(0)
        }
        #expect(kept == 0)
        _ = try await h.applyOne(refundEvent("r", refund: "re_big", amount: 5, payment: "pi_big"))
        #expect(try await h.figures("cus_big") == Figures(outstanding: 0, paid: Int64.max, refunded: 5, disputed: 0))
        // Disputed: Int64.max then 1 more overflows too; invoices (outstanding) likewise.
        _ = try await h.applyOne(
            crmEvent("d1", .paymentDisputed, amount: Int64.max, customer: nil, payment: "pi_big", at: "2026-11-24T12:00:00Z"))
        await #expect(throws: HandlerError.self) {
            _ = try await h.applyOne(
                crmEvent("d2", .paymentDisputed, amount: 1, customer: nil, payment: "pi_big", at: "2026-11-24T13:00:00Z"))
        }
        _ = try await h.applyOne(
            crmEvent("i1", .invoiceIssued, amount: Int64.max, customer: "cus_big", payment: nil, invoice: "inv_1",
                     at: "2026-11-24T14:00:00Z"))
        await #expect(throws: HandlerError.self) {
            _ = try await h.applyOne(
                crmEvent("i2", .invoiceIssued, amount: 1, customer: "cus_big", payment: nil, invoice: "inv_2",
                         at: "2026-11-24T15:00:00Z"))
        }
        // The document shows the huge figures (no crash): 9223372036854775807 in paid and outstanding.
        let data = try #require(try await h.store.withConnection { db in
            try CustomerView.json(db, merchant: "m_acme", customer: "cus_big")
        })
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"paid\":9223372036854775807"), "\(text)")
        #expect(text.contains("\"outstanding\":9223372036854775807"), "\(text)")
        #expect(text.contains("\"due\":9223372036854775807"), "\(text)")
    }

    /// Merchants m_a and m_b both have a customer "42".
    @Test("Customers are merchant + customer: the same id at two merchants never shares a profile or a balance")
    func merchantIsolation() async throws {
        let h = try await CRMHarness(handler: try Self.handler())
        try await h.apply([
            crmEvent("a1", .paymentSucceeded, merchant: "m_a", amount: 1_000, customer: "42", payment: "pi_a1",
                     at: "2026-11-24T10:00:00Z", name: "Ada Lovelace", email: "ada@a.example"),
        ])
        // m_b's event is newer and names another person: m_a's customer must not change.
        let c = try #require(try await h.applyOne(
            crmEvent("b1", .paymentSucceeded, merchant: "m_b", amount: 2_500, customer: "42", payment: "pi_b1",
                     at: "2026-11-25T10:00:00Z", name: "Mallory", email: "mallory@b.example")))
        #expect(c.customers.count == 1)
        #expect(c.customers.first?.merchantID == "m_b")
        #expect(c.customers.first?.email == "mallory@b.example")
        // m_b's refund names m_b's payment id pi_a1 — an id that only m_a has: it reaches no one.
        #expect(try await h.applyOne(refundEvent("b2", refund: "re_x", amount: 100, payment: "pi_a1", merchant: "m_b")) == nil)
        let a = try #require(try await h.customerJSON("42", merchant: "m_a"))
        let b = try #require(try await h.customerJSON("42", merchant: "m_b"))
        #expect(a["email"] as? String == "ada@a.example")
        #expect(a["name"] as? String == "Ada Lovelace")
        #expect(b["email"] as? String == "mallory@b.example")
        #expect(((a["outstanding"] as? [String: Any])?["GBP"] as? NSNumber)?.int64Value == 0)
        #expect(((a["balances"] as? [[String: Any]])?.first?["paid"] as? NSNumber)?.int64Value == 1_000)
        #expect(((b["balances"] as? [[String: Any]])?.first?["paid"] as? NSNumber)?.int64Value == 2_500)
        #expect((a["payments"] as? [[String: Any]])?.map { $0["event_id"] as? String } == ["a1"])
        #expect(try await h.figures("42", merchant: "m_a") == Figures(outstanding: 0, paid: 1_000, refunded: 0, disputed: 0))
        #expect(try await h.figures("42", merchant: "m_b") == Figures(outstanding: 0, paid: 2_500, refunded: 0, disputed: 0))
        #expect(try await h.customerJSON("42", merchant: "m_c") == nil)
    }

    /// A crm-sync database written by the previous schema (crm.1 only), then opened by this one.
    @Test("Migration crm.2: profiles move to their merchant; a customer id two merchants shared loses its merged profile, never leaks it")
    func migrationFromCRM1() async throws {
        let dir = TestEnvironment.makeTempDir("crm-mig")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/crm-sync.sqlite"
        do {
            let old = try await Store(path: path, migrations: [CRMSchema.migrations[0]], durability: .normal)
            try await old.write { db in
                // cus_solo: only m_a. cus_42: m_a and m_b (the merged profile came from m_b's event).
                for (id, m, c, pid) in [("e1", "m_a", "cus_solo", "pi_1"), ("e2", "m_a", "cus_42", "pi_2"),
                                        ("e3", "m_b", "cus_42", "pi_3")] {
                    try db.execute(
                        """
                        INSERT INTO crm_events (event_id, type, merchant_id, customer_id, own_customer, payment_id, currency,
                            amount, occurred_at) VALUES (?, 'payment.succeeded', ?, ?, 1, ?, 'GBP', 1000, 1764000000000)
                        """, [.text(id), .text(m), .text(c), .text(pid)])
                    try db.execute(
                        """
                        INSERT INTO crm_balances (customer_id, merchant_id, currency, outstanding, paid, refunded, disputed,
                            status, version, updated_at) VALUES (?, ?, 'GBP', 0, 1000, 0, 0, 'settled', 1, 0)
                        ON CONFLICT DO NOTHING
                        """, [.text(c), .text(m)])
                }
                try db.execute(
                    "INSERT INTO crm_customers VALUES ('cus_solo', 'Solo', 'solo@a.example', NULL, 1764000000000, 'e1')")
                try db.execute(
                    "INSERT INTO crm_customers VALUES ('cus_42', 'Merged', 'merged@b.example', '+447700900123', 1764000000000, 'e3')")
            }
        }
        let h = try Self.handler()
        let store = try await Store(path: path, migrations: h.migrations, durability: .normal)
        let rows = try await store.withConnection { db in
            try db.query("SELECT merchant_id, customer_id, name, email, phone, profile_event FROM crm_customers ORDER BY 1, 2")
                .map { [$0.string(0), $0.string(1), $0.string(2), $0.string(3), $0.string(4), $0.string(5)] }
        }
        #expect(rows == [
            ["m_a", "cus_42", nil, nil, nil, "crm.2:shared"],
            ["m_a", "cus_solo", "Solo", "solo@a.example", nil, "e1"],
            ["m_b", "cus_42", nil, nil, nil, "crm.2:shared"],
        ])
        #expect(try await store.withConnection { db in try CRMState.sharedProfilesCleared(db) } == 2)
        // Balances untouched; the next m_b event refills m_b's profile only.
        let change = try await store.write { db in
            try h.apply(
                crmEvent("e4", .paymentSucceeded, merchant: "m_b", amount: 500, customer: "cus_42", payment: "pi_4",
                         at: "2026-11-26T10:00:00Z", name: "Bea", email: "bea@b.example"), db: db)
        }
        #expect(change?.customers.first?.email == "bea@b.example")
        #expect(change?.customers.first?.paid == 1_500)
        let a = try await store.withConnection { db in
            try db.queryOne("SELECT email FROM crm_customers WHERE merchant_id = 'm_a' AND customer_id = 'cus_42'")?.string(0)
        }
        #expect(a == nil)
    }
}
