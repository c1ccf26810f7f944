import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import Testing

extension WorkerProcess {
    /// One `crm-sync` process under test; `sectionYAML` lines go into its `crm-sync:` section.
    static func crm(prefix: String, sectionYAML: [String] = ["crm_file: {dir}/crm.jsonl"], _ body: (WorkerProcess) async throws -> Void)
        async throws
    {
        var o = Options.worker("crm-sync", prefix: prefix)
        o.sectionYAML = sectionYAML
        try await with(o, body)
    }

    var crmFile: String { dir + "/crm.jsonl" }

    /// Effects performed and recorded (journal state 'done').
    func effectsDone() throws -> Int { try count("effect_journal", where: "state = 'done'") }
}

/// The real `crm-sync` process against the private broker (issue 5, "what must be shown" 3 and 4).
@Suite(.serialized) struct CRMFleetTests {
    static let adminToken = "adm-0123456789abcdef0123456789abcdef"

    @Test("crm-sync: 1,500 shuffled mixed events with duplicates → balances in SQLite, in the sandbox CRM file and on GET /customers/{id}?merchant= equal the independently computed ones")
    func shuffledStream() async throws {
        try await WorkerProcess.crm(
            prefix: "crm", sectionYAML: ["crm_file: {dir}/crm.jsonl", "admin_token_file: {dir}/admin-token"]
        ) { fleet in
            try "\(Self.adminToken)\n".write(toFile: fleet.dir + "/admin-token", atomically: true, encoding: .utf8)
            let stream = CRMStream(total: 1_500, seed: 2026, prefix: String(fleet.name.suffix(6)))
            try await fleet.declare()
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(stream.events, via: pub)
            try fleet.start()
            let done = try await eventually(timeout: .seconds(180)) {
                try fleet.count("crm_events") >= stream.uniqueCount && fleet.count("effect_journal", where: "state <> 'done'") == 0
                    && fleet.count("processed") >= stream.uniqueCount
            }
            #expect(done, "log: \(fleet.process?.log.suffix(2000) ?? "")")
            #expect(try await eventually(timeout: .seconds(30)) { try await fleet.depth(fleet.queue) == 0 })
            #expect(try fleet.count("crm_events") == stream.uniqueCount)

            // SQLite state.
            let db = try #require(try fleet.database())
            #expect(CRMHarness.figures(db) == stream.expected)
            // The sandbox CRM: the last line per customer/merchant/currency is its state.
            let (sandbox, lines, grow) = try sandboxFigures(fleet.crmFile)
            #expect(sandbox == stream.expected)
            #expect(grow, "each customer's versions only grow down the file")
            #expect(lines >= stream.expected.count)

            // The read API for a few customers of a merchant, and an unknown one.
            var perCustomer: [String: [String: Int64]] = [:]  // "merchant|customer" → currency → outstanding
            for (k, f) in stream.expected {
                let parts = k.split(separator: "|").map(String.init)
                perCustomer[parts[1] + "|" + parts[0], default: [:]][parts[2]] = f.outstanding
            }
            for key in perCustomer.keys.sorted().prefix(5) {
                let mc = key.split(separator: "|").map(String.init)
                let answer = await adminGET(
                    fleet.adminURL + "/customers/\(mc[1])?merchant=\(mc[0])", token: Self.adminToken)
                #expect(answer?.status == 200)
                #expect(answer?.headers["cache-control"] == "no-store")
                let customer = key
                let doc = try #require(try JSONSerialization.jsonObject(with: Data((answer?.body ?? "").utf8)) as? [String: Any])
                let outstanding = try #require(doc["outstanding"] as? [String: Any])
                #expect(outstanding.mapValues { ($0 as? NSNumber)?.int64Value ?? -1 } == perCustomer[customer]!)
                let history = try #require(doc["payments"] as? [[String: Any]])
                let times = history.compactMap { $0["occurred_at"] as? String }
                #expect(times == times.sorted(by: >), "history newest first")
                // No card data (the events carry brand visa, last4 4242).
                #expect(!(answer?.body ?? "").contains("visa") && !(answer?.body ?? "").contains("last4"))
            }
            let unknown = await adminGET(fleet.adminURL + "/customers/cus_nobody?merchant=m_acme", token: Self.adminToken)
            #expect(unknown?.status == 404)
            let err = try JSONSerialization.jsonObject(with: Data((unknown?.body ?? "").utf8)) as? [String: Any]
            #expect((err?["error"] as? [String: Any])?["code"] as? String == "not_found")

            // Everything again: nothing changes, nothing new is pushed.
            try await fleet.publish(stream.events, via: pub)
            pub.close()
            #expect(try await eventually(timeout: .seconds(60)) { try await fleet.depth(fleet.queue) == 0 })
            try await Task.sleep(for: .milliseconds(300))
            #expect(try sandboxFigures(fleet.crmFile).lines == lines)
            #expect(CRMHarness.figures(db) == stream.expected)
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)

            fleet.process?.signal(SIGTERM)
            #expect(await fleet.process?.wait(timeout: .seconds(20)) == 0)
        }
    }
}
