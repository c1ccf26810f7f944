import Foundation
import PayfleetCore
import PayfleetTestKit
import Testing

@testable import PayfleetCRMSync

/// crm-sync's memory of what the CRM has is bounded (two generations of customer states), and a
/// state it forgot is read from `crm_balances.pushed_version` before a push: a retried older
/// change still never goes out over a newer state.
@Suite struct RecentVersionsTests {
    @Test("At most two generations are held; a key written lately is kept; versions only rise")
    func bounded() {
        var r = RecentVersions(generation: 100)
        for i in 0..<10_000 {
            r.raise("k\(i)", to: Int64(i))
            #expect(r.count <= 200)
            // Everything written in the last generation is still there.
            if i >= 100 { #expect(r["k\(i - 99)"] == Int64(i - 99)) }
        }
        #expect(r["k0"] == nil)
        r.raise("k9999", to: 3)
        #expect(r["k9999"] == 9_999)
        // A key of the previous generation raised again keeps its higher value in the current one.
        var s = RecentVersions(generation: 2)
        s.raise("a", to: 5)
        s.raise("b", to: 1)  // rotation: a and b are the previous generation
        s.raise("a", to: 3)
        #expect(s["a"] == 5)
        s.raise("c", to: 1)  // rotation: a and c previous, b forgotten
        #expect(s["a"] == 5 && s["c"] == 1 && s["b"] == nil)
        #expect(RecentVersions(batchSize: 200).generation == 10_000)
        #expect(RecentVersions(batchSize: 5_000).generation == 100_000)
    }

    @Test("A forgotten customer's retried older change is not pushed again; a newer one is")
    func forgottenStateIsReadBack() async throws {
        let path = TestEnvironment.makeTempDir("crm-recent") + "/crm.jsonl"
        let handler = CRMHandler(connector: try SandboxConnector(path: path))
        handler.pushed.withLock { $0 = RecentVersions(generation: 2) }
        let h = try await CRMHarness(handler: handler)
        func lines(_ customer: String) throws -> [Int64] {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            return try text.split(separator: "\n").compactMap { l in
                let o = try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any]
                return o?["customer_id"] as? String == customer ? (o?["version"] as? NSNumber)?.int64Value : nil
            }
        }
        let first = crmEvent("p1", .paymentSucceeded, amount: 1000, customer: "cus_a", payment: "pi_1", at: "2026-11-24T10:00:00Z")
        let second = crmEvent("p2", .paymentSucceeded, amount: 500, customer: "cus_a", payment: "pi_2", at: "2026-11-24T11:00:00Z")
        let outcomes = try await h.harness.apply([first], performEffects: true)
        let older = try #require(outcomes.first?.effect)
        try await h.harness.apply([second], performEffects: true)
        #expect(try lines("cus_a") == [1, 2])
        // Four other customers: cus_a drops out of memory (two rotations of two).
        let others = (1...4).map { crmEvent("o\($0)", .paymentSucceeded, amount: 100, customer: "cus_o\($0)", payment: "pi_o\($0)",
                                            at: "2026-11-24T12:00:00Z") }
        try await h.harness.apply(others, performEffects: true)
        #expect(handler.pushed.withLock { $0[older.customers[0].key] } == nil)
        // The first change again, as a retry would perform it: version 1 < the CRM's 2, not sent.
        try await handler.perform(older, event: first, attempt: 1, outcomeUnknown: false)
        #expect(try lines("cus_a") == [1, 2])
        // The read-back stopped it (the sandbox file also drops a version it already holds; an HTTP
        // CRM would not): memory holds the CRM's version again.
        #expect(handler.pushed.withLock { $0[older.customers[0].key] } == 2)
        // A newer change still goes out.
        let third = crmEvent("p3", .paymentSucceeded, amount: 250, customer: "cus_a", payment: "pi_3", at: "2026-11-24T13:00:00Z")
        try await h.harness.apply([third], performEffects: true)
        #expect(try lines("cus_a") == [1, 2, 3])
    }
}
