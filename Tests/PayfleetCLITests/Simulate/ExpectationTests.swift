import Foundation
import PayfleetCLI
import PayfleetCore
import Testing

/// The simulator's own arithmetic (DESIGN §5a), exact to the minor unit for JPY (exponent 0)
/// and BHD (exponent 3).
@Suite struct ExpectationTests {
    let dilmun = SimFixtures.merchants[3]
    let sakura = SimFixtures.merchants[2]
    let acme = SimFixtures.merchants[0]

    func fact(
        _ n: Int, _ type: PaymentEvent.EventType, _ m: Merchant, _ value: Int64, _ code: String, provider: String = "phonepay",
        customer: String? = "pp-c1", payment: String? = nil, fee: Int64? = nil, invoice: String? = nil,
        outcome: String? = nil, at: String = "2026-11-24T21:30:00Z", email: String? = nil, metadata: [String: String] = [:]
    ) -> PaymentEvent {
        let c = Currency(code: code)!
        return PaymentEvent(
            id: "evt_\(n)", type: type, occurredAt: RFC3339.parse(at)!, source: .init(provider: provider, eventID: "e\(n)"),
            merchantID: m.id, customer: customer.map { .init(id: $0, email: email) }, payment: payment.map { .init(id: $0) },
            amount: Money(value: value, currency: c), fee: fee.map { Money(value: $0, currency: c) }, invoiceID: invoice,
            metadata: metadata.merging(outcome.map { ["outcome": $0] } ?? [:]) { a, _ in a })
    }

    @Test func bahrainiDinarsToTheFils() {
        let facts = [
            fact(1, .invoiceIssued, dilmun, 12_345, "BHD", provider: "billing", invoice: "INV-1"),
            fact(2, .paymentSucceeded, dilmun, 5_001, "BHD", payment: "call-1", fee: 101, invoice: "INV-1", email: "a@example.com"),
            // names only the payment: reaches the customer through it
            fact(3, .paymentRefunded, dilmun, 1_234, "BHD", customer: nil, payment: "call-1", invoice: "INV-1"),
            fact(4, .paymentSucceeded, dilmun, 250_999, "BHD", payment: "call-2", fee: 5_019, at: "2026-11-24T22:30:00Z"),
            fact(5, .paymentDisputed, dilmun, 3_333, "BHD", customer: nil, payment: "call-2", fee: 5_000),
            fact(6, .disputeClosed, dilmun, 3_333, "BHD", customer: nil, payment: "call-2", outcome: "won"),
            fact(7, .payoutPaid, dilmun, 100_000, "BHD", customer: nil),
            fact(8, .paymentFailed, dilmun, 7_777, "BHD", payment: "call-3"),
        ]
        let x = SimExpectation.compute(facts: facts.reversed(), merchants: SimFixtures.merchants)
        func acct(_ a: String) -> Int64? { x.ledger[.init(a, "BHD")] }
        let receivable: Int64 = 12_345 - 5_001 + 1_234
        let clearing: Int64 = (5_001 - 101) - 1_234 + (250_999 - 5_019) - (3_333 + 5_000) + 3_333 - 100_000
        let fees: Int64 = 101 + 5_019 + 5_000
        #expect(acct("Assets:M-dilmun:Receivable:Pp-c1") == receivable)
        #expect(acct("Income:M-dilmun:Sales") == -12_345 - 250_999)
        #expect(acct("Assets:M-dilmun:Clearing:Phonepay") == clearing)
        #expect(acct("Expenses:M-dilmun:PaymentFees") == fees)
        #expect(acct("Expenses:M-dilmun:Disputes") == nil)  // opened and won: zero
        #expect(acct("Assets:M-dilmun:Bank") == 100_000)
        #expect(x.trialBalance["m_dilmun"]?["BHD"] == 0)
        let c = x.customers[.init(customer: "pp-c1", merchant: "m_dilmun", currency: "BHD")]
        #expect(c == .init(outstanding: 8_578, paid: 256_000, refunded: 1_234, disputed: 0))
        // Bahrain is UTC+3 with a 01:00 cut-off: 21:30Z is 00:30 on the 25th, so still the 24th;
        // 22:30Z is 01:30 on the 25th.
        let d24 = x.settlement[.init(merchant: "m_dilmun", currency: "BHD", date: "2026-11-24")]
        let d25 = x.settlement[.init(merchant: "m_dilmun", currency: "BHD", date: "2026-11-25")]
        #expect(d24 == .init(count: 1, gross: 5_001, refunds: 1_234, disputes: 0, fees: 101 + 5_000))
        #expect(d25 == .init(count: 1, gross: 250_999, fees: 5_019))
        #expect(d24?.net == 5_001 - 1_234 - 0 - 5_101)
        #expect(x.receipts == ["evt_2"])
    }

    @Test func yenHaveNoMinorUnit() {
        let facts = [
            fact(1, .invoiceIssued, sakura, 60_080, "JPY", provider: "stripe", customer: "cus_k", invoice: "in_1"),
            fact(2, .paymentSucceeded, sakura, 30_040, "JPY", provider: "stripe", customer: "cus_k", payment: "pi_1",
                 fee: 450, invoice: "in_1", email: "k@example.jp"),
            fact(3, .paymentDisputed, sakura, 30_040, "JPY", provider: "stripe", customer: nil, payment: "pi_1"),
            fact(4, .disputeClosed, sakura, 30_040, "JPY", provider: "stripe", customer: nil, payment: "pi_1", outcome: "lost"),
        ]
        let x = SimExpectation.compute(facts: facts, merchants: SimFixtures.merchants)
        #expect(x.ledger[.init("Assets:M-sakura:Receivable:Cus-k", "JPY")] == 30_040)
        #expect(x.ledger[.init("Assets:M-sakura:Clearing:Stripe", "JPY")] == 30_040 - 450 - 30_040)
        #expect(x.ledger[.init("Expenses:M-sakura:Disputes", "JPY")] == 30_040)
        #expect(x.trialBalance["m_sakura"]?["JPY"] == 0)
        #expect(x.customers[.init(customer: "cus_k", merchant: "m_sakura", currency: "JPY")]
            == .init(outstanding: 30_040, paid: 30_040, refunded: 0, disputed: 30_040))
        // 21:30Z is 06:30 on the 25th in Tokyo.
        let day = x.settlement[.init(merchant: "m_sakura", currency: "JPY", date: "2026-11-25")]
        #expect(day == .init(count: 1, gross: 30_040, refunds: 0, disputes: 30_040, fees: 450))
        #expect(day?.net == -450)
    }

    /// Partial refunds, a failed refund, a reversed payment, a dispute fee, a returned payout
    /// and a late fee, booked as DESIGN §5a's table says (figures worked out by hand).
    @Test func reversalsAndLateFactsUndoWhatTheyName() {
        let facts = [
            fact(1, .paymentSucceeded, acme, 10_000, "GBP", provider: "stripe", customer: "cus_a", payment: "pi_1",
                 at: "2026-11-24T10:00:00Z", email: "a@example.com"),
            // Two partial refunds of one charge: 5.00 and 3.00 are 8.00; the 3.00 fails the next day.
            fact(2, .paymentRefunded, acme, 500, "GBP", provider: "stripe", customer: nil, payment: "pi_1",
                 at: "2026-11-24T11:00:00Z", metadata: ["refund_id": "re_1"]),
            fact(3, .paymentRefunded, acme, 300, "GBP", provider: "stripe", customer: nil, payment: "pi_1",
                 at: "2026-11-24T11:30:00Z", metadata: ["refund_id": "re_2"]),
            fact(4, .refundFailed, acme, 300, "GBP", provider: "stripe", customer: nil, payment: "pi_1",
                 at: "2026-11-25T09:00:00Z", metadata: ["refund_id": "re_2"]),
            // A dispute with Stripe's 20.00 dispute fee.
            fact(5, .paymentDisputed, acme, 2_000, "GBP", provider: "stripe", customer: nil, payment: "pi_1", fee: 2_000,
                 at: "2026-11-24T13:00:00Z"),
            // An invoiced Adyen payment whose capture failed the next day.
            fact(6, .invoiceIssued, acme, 4_000, "GBP", provider: "billing", customer: "shopper-1", invoice: "INV-9",
                 at: "2026-11-24T09:00:00Z"),
            fact(7, .paymentSucceeded, acme, 4_000, "GBP", provider: "adyen", customer: "shopper-1", payment: "PSP1",
                 invoice: "INV-9", at: "2026-11-24T12:00:00Z"),
            fact(8, .paymentReversed, acme, 4_000, "GBP", provider: "adyen", customer: "shopper-1", payment: "PSP1",
                 invoice: "INV-9", at: "2026-11-25T08:00:00Z"),
            // A payout the bank returned.
            fact(9, .payoutPaid, acme, 5_000, "GBP", provider: "stripe", customer: nil, at: "2026-11-24T15:00:00Z"),
            fact(10, .payoutFailed, acme, 5_000, "GBP", provider: "stripe", customer: nil, at: "2026-11-25T15:00:00Z"),
            // A phone payment and a fee learnt the next day: it counts on the payment's day.
            fact(11, .paymentSucceeded, acme, 1_000, "GBP", payment: "call-1", fee: 20, at: "2026-11-24T20:00:00Z"),
            fact(12, .feeAssessed, acme, 150, "GBP", customer: nil, payment: "call-1", at: "2026-11-25T10:00:00Z"),
        ]
        let x = SimExpectation.compute(facts: facts.reversed(), merchants: SimFixtures.merchants)
        func acct(_ a: String) -> Int64? { x.ledger[.init(a, "GBP")] }
        let stripeClearing: Int64 = 10_000 - 500 - 300 + 300 - (2_000 + 2_000) - 5_000 + 5_000
        let fees: Int64 = 2_000 + 20 + 150
        let phoneClearing: Int64 = 1_000 - 20 - 150
        #expect(acct("Assets:M-acme:Clearing:Stripe") == stripeClearing)
        #expect(acct("Income:M-acme:Refunds") == 500)
        #expect(acct("Income:M-acme:Sales") == -10_000 - 4_000 - 1_000)
        #expect(acct("Assets:M-acme:Receivable:Shopper-1") == 4_000)
        #expect(acct("Assets:M-acme:Clearing:Adyen") == nil)
        #expect(acct("Expenses:M-acme:Disputes") == 2_000)
        #expect(acct("Expenses:M-acme:PaymentFees") == fees)
        #expect(acct("Assets:M-acme:Clearing:Phonepay") == phoneClearing)
        #expect(acct("Assets:M-acme:Bank") == nil)
        #expect(x.trialBalance["m_acme"]?["GBP"] == 0)
        #expect(x.customers[.init(customer: "cus_a", merchant: "m_acme", currency: "GBP")]
            == .init(outstanding: 0, paid: 10_000, refunded: 500, disputed: 2_000))
        #expect(x.customers[.init(customer: "shopper-1", merchant: "m_acme", currency: "GBP")]
            == .init(outstanding: 4_000, paid: 0, refunded: 0, disputed: 0))
        #expect(x.customers[.init(customer: "pp-c1", merchant: "m_acme", currency: "GBP")] == .init(paid: 1_000))
        let d24 = x.settlement[.init(merchant: "m_acme", currency: "GBP", date: "2026-11-24")]
        let d25 = x.settlement[.init(merchant: "m_acme", currency: "GBP", date: "2026-11-25")]
        #expect(d24 == .init(count: 3, gross: 15_000, refunds: 800, disputes: 2_000, fees: 2_170))
        #expect(d25 == .init(count: -1, gross: -4_000, refunds: -300, disputes: 0, fees: 0))
        #expect(x.receipts == ["evt_1"])
    }
}
