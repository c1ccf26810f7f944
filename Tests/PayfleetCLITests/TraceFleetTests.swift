import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing
import Yams

@testable import PayfleetCLI

/// `payfleet trace` on a real fleet: ingest and the four workers as processes on the private
/// broker, the repository's configuration (sandbox CRM and receipts), a payment, its refund and
/// its dispute sent to `/v1/events`. Expected values come from DESIGN §5a (the chart), the
/// sandbox outputs (the `.eml` files, `crm.jsonl`) and what the test sent — not from the trace.
@Suite(.serialized)
struct TraceFleetTests {
    static let workers = ProcessFleet.workers

    @Test("A payment, its refund and its dispute: every effect in the trace, by payment, event, provider event and invoice id")
    func paymentRefundDispute() async throws {
        try await ProcessFleet("trace").run { try await run($0) }
    }

    func run(_ fleet: ProcessFleet) async throws {
        let tag = fleet.tag
        let payment = "pi_trace\(tag)", invoice = "inv_trace\(tag)", customer = "cus_trace\(tag)"
        let occurred = Date().addingTimeInterval(-60)
        func event(_ type: String, _ sourceID: String, amount: Int64, fee: Int64?, extra: [String: Any] = [:]) -> [String: Any] {
            ProcessFleet.phoneEvent(
                type, sourceID, occurredAt: occurred, customer: customer, payment: payment, amount: amount, fee: fee, extra: extra)
        }
        let paid = try await fleet.send(
            event("payment.succeeded", "pp_pay_\(tag)", amount: 1999, fee: 45, extra: ["invoice_id": invoice]), key: "k1-\(tag)")
        let refunded = try await fleet.send(
            event("payment.refunded", "pp_ref_\(tag)", amount: 500, fee: nil, extra: ["metadata": ["refund_id": "re_\(tag)"]]),
            key: "k2-\(tag)")
        let disputed = try await fleet.send(event("payment.disputed", "pp_dis_\(tag)", amount: 1999, fee: 1500), key: "k3-\(tag)")
        let ids = [paid, refunded, disputed]
        // Processed by every worker bound to its type (DESIGN §4 / the topology): receipt-sender
        // takes only payments and refunds.
        let expectedWorkers: [String: Set<String>] = [
            paid: Set(Self.workers), refunded: Set(Self.workers),
            disputed: ["crm-sync", "ledger-writer", "settlement-aggregator"],
        ]
        var report: [String: Any] = [:]
        let settled = await eventually(timeout: .seconds(90), every: .milliseconds(500)) {
            guard let r = try? await fleet.trace(payment) else { return false }
            report = r
            let steps = r["steps"] as? [[String: Any]] ?? []
            let done = ids.allSatisfy { id in
                Set(steps.filter { $0["event_id"] as? String == id && $0["step"] as? String == "processed" }
                    .compactMap { $0["process"] as? String }) == expectedWorkers[id]
            }
            let pushes = steps.filter { $0["step"] as? String == "crm_push" }
            let receipts = steps.filter { $0["step"] as? String == "receipt" }
            return done && pushes.count == 3 && pushes.allSatisfy { ($0["details"] as? [String: Any])?["status"] as? String == "done" }
                && receipts.count == 4
                && receipts.allSatisfy { ($0["details"] as? [String: Any])?["outcome"] as? String == "sent" }
        }
        #expect(settled, "the fleet did not finish the three events: \(report)")
        print(try await CLIRun.run(["trace", payment, "--config", fleet.config], environment: [:], dir: fleet.dir).stdout)

        #expect(report["query"] as? String == payment)
        #expect(report["matched_as"] as? [String] == ["payment_id"])
        let events = try #require(report["events"] as? [[String: Any]])
        #expect(events.compactMap { $0["id"] as? String }.sorted() == ids.sorted())
        let byID = Dictionary(uniqueKeysWithValues: events.map { ($0["id"] as! String, $0) })
        #expect(byID[paid]?["type"] as? String == "payment.succeeded")
        #expect(byID[refunded]?["type"] as? String == "payment.refunded")
        #expect(byID[disputed]?["type"] as? String == "payment.disputed")
        #expect(byID[refunded]?["provider_event_id"] as? String == "pp_ref_\(tag)")
        #expect((byID[paid]?["amount"] as? [String: Any])?["value"] as? Int == 1999)
        #expect(byID[paid]?["invoice_id"] as? String == invoice)

        let steps = try #require(report["steps"] as? [[String: Any]])
        func of(_ id: String, _ step: String) -> [[String: Any]] {
            steps.filter { $0["event_id"] as? String == id && $0["step"] as? String == step }
        }
        func details(_ s: [String: Any]) -> [String: Any] { s["details"] as? [String: Any] ?? [:] }
        // Time order, and for each event: accepted, then published, then the workers.
        let times = steps.compactMap { $0["at_ms"] as? Int }
        #expect(times == times.sorted())
        for id in ids {
            let names = steps.filter { $0["event_id"] as? String == id }.compactMap { $0["step"] as? String }
            #expect(names.first == "accepted", "\(id): \(names)")
            #expect(names.dropFirst().first == "published", "\(id): \(names)")
            #expect(of(id, "accepted").first.map(details)?["route"] as? String == "phonepay (/v1/events or /webhooks/standard/phonepay)")
            #expect(of(id, "published").first.map(details)?["confirmed"] as? Bool == true)
            for p in of(id, "processed") {
                #expect(p["partition"] as? Int == 0)
                #expect((p["file"] as? String)?.hasPrefix(fleet.state + "/\(fleet.stem)-") == true, "\(p)")
            }
        }

        // CRM: pushed once per event with the event id as Idempotency-Key (DESIGN §5). The
        // sandbox connector's file ends with the customer's newest state, the dispute's (each
        // event raises the customer's version; pushes grouped under one fsync may arrive out of
        // order, and a line older than one already written is left out).
        let crmLines = (try String(contentsOfFile: fleet.state + "/crm.jsonl", encoding: .utf8)).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        for id in ids {
            let push = try #require(of(id, "crm_push").first)
            #expect(push["process"] as? String == "crm-sync")
            #expect((details(push)["idempotency_keys"] as? [String])?.first == id)
        }
        let ours = crmLines.filter { ids.contains($0["event_id"] as? String ?? "") }
        #expect(!ours.isEmpty, "no CRM line for \(ids)")
        #expect(ours.last?["event_id"] as? String == disputed, "\(ours)")

        // Receipts: an email and an SMS for the payment and for the refund, none for the dispute
        // (receipt-sender.types), each Message-ID the one in the sandbox's .eml / SMS file.
        let mail = fleet.state + "/mail"
        let files = try FileManager.default.contentsOfDirectory(atPath: mail).map { mail + "/" + $0 }
        let emlIDs = Set(files.filter { $0.hasSuffix(".eml") }.compactMap { path -> String? in
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            return text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("message-id:") }
                .map { String($0.dropFirst("message-id:".count)).trimmingCharacters(in: .whitespaces) }
        })
        let smsIDs = Set(files.filter { $0.hasSuffix(".json") }.compactMap { path -> String? in
            (FileManager.default.contents(atPath: path).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] })?[
                "message_id"] as? String
        })
        for id in [paid, refunded] {
            let receipts = of(id, "receipt").map(details)
            #expect(Set(receipts.compactMap { $0["channel"] as? String }) == ["email", "sms"])
            for r in receipts {
                #expect(r["transport"] as? String == "sandbox")
                let mid = try #require(r["message_id"] as? String)
                #expect((r["channel"] as? String == "email" ? emlIDs : smsIDs).contains(mid), "\(mid) not in \(emlIDs) / \(smsIDs)")
            }
        }
        #expect(of(disputed, "receipt").isEmpty)

        // Ledger (DESIGN §5a, merchant m_acme → M-acme, provider phonepay → Phonepay, customer
        // cus_trace… → Cus-trace…): debit positive.
        let m = "M-acme", p = "Phonepay", c = "Cus-trace\(tag)"
        func postings(_ id: String) -> [String: Int] {
            var out: [String: Int] = [:]
            for t in of(id, "ledger_transaction") {
                for p in details(t)["postings"] as? [[String: Any]] ?? [] {
                    out[p["account"] as! String, default: 0] += p["amount"] as! Int
                    #expect(p["currency"] as? String == "GBP")
                }
            }
            return out
        }
        #expect(postings(paid) == [
            "Assets:\(m):Clearing:\(p)": 1954, "Expenses:\(m):PaymentFees": 45, "Assets:\(m):Receivable:\(c)": -1999,
        ])
        #expect(postings(refunded) == ["Income:\(m):Refunds": 500, "Assets:\(m):Clearing:\(p)": -500])
        #expect(postings(disputed) == [
            "Expenses:\(m):Disputes": 1999, "Expenses:\(m):PaymentFees": 1500, "Assets:\(m):Clearing:\(p)": -3499,
        ])
        #expect(of(paid, "ledger_transaction").first.map(details)?["txid"] as? String != nil)

        // Settlement: the business day of occurred_at in Europe/London (cut-off 00:00), open
        // (grace 2 h), so counted in the day's totals, not as an adjustment.
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "Europe/London")!
        let d = cal.dateComponents([.year, .month, .day], from: occurred)
        let day = String(format: "%04d-%02d-%02d", d.year!, d.month!, d.day!)
        for id in ids {
            let s = try #require(of(id, "settlement").first.map(details), "no settlement step for \(id)")
            #expect(s["business_day"] as? String == day)
            #expect(s["counted_as"] as? String == "day_total")
            #expect(s["late"] as? Bool == false)
        }

        // The same events by other ids: the canonical id, the provider's event id, the invoice.
        let one = try await fleet.trace(refunded)
        #expect(one["matched_as"] as? [String] == ["event_id"])
        #expect((one["events"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [refunded])
        let provider = try await fleet.trace("pp_dis_\(tag)")
        #expect(provider["matched_as"] as? [String] == ["provider_event_id"])
        #expect((provider["events"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [disputed])
        let byInvoice = try await fleet.trace(invoice)
        #expect((byInvoice["matched_as"] as? [String])?.contains("invoice_id") == true)
        #expect(Set((byInvoice["events"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []) == Set(ids))

        // The gauges behind the business alerts, on the real processes' /metrics.
        func metrics(_ name: String) async -> String {
            guard let port = fleet.port(name), let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
                let (data, _) = try? await URLSession.shared.data(from: url)
            else { return "" }
            return String(decoding: data, as: UTF8.self)
        }
        for w in Self.workers {
            #expect(await metrics(w).contains("payfleet_event_lag_seconds{"), "\(w) has no event lag gauge")
        }
        #expect(await metrics("settlement-aggregator").contains(#"payfleet_settlement_day_overdue_seconds{merchant="m_acme"} 0"#))

        // An id the fleet never saw: a one-line failure naming it, exit non-zero.
        let none = try await CLIRun.run(["trace", "pi_never_\(tag)", "--config", fleet.config], environment: [:], dir: fleet.dir)
        #expect(none.status != 0)
        #expect(none.stderr.contains("pi_never_\(tag)"), "\(none.stderr)")
    }
}

