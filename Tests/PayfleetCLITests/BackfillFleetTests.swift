import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetTestKit
import Testing

@testable import PayfleetCLI

/// Issue 19, "what must be shown" 1: a dev fleet (ingest and the four workers as processes on
/// the private broker, the repository's configuration) takes simulated traffic; ingest is
/// stopped for the middle third, so those deliveries fail as a provider's do once it gives up;
/// then `payfleet backfill stripe` against a loopback Stripe Events API (a real HTTP server that
/// serves every Stripe event of the traffic and checks the bearer key) recovers what was
/// missed, and the simulator's comparison (ledger and trial balance, CRM, receipts, settlement)
/// agrees with everything the providers reported.
///
/// Expected figures come from what the test sent and which requests ingest answered: the
/// events missed are the Stripe events none of whose requests was answered; the events the
/// backfill must recover are those of them that report a fact no answered request reported (a
/// missed `charge.succeeded` whose `payment_intent.succeeded` arrived is a duplicate: one fact,
/// DESIGN §2); each worker must have processed each fact of its routing keys exactly once.
/// Adyen, Standard Webhooks and the phone platform's API have no events API: their requests of
/// the outage are sent again after it, as those providers retry for days.
@Suite(.serialized)
struct BackfillFleetTests {
    static let key = "rk_test_fleetBackfill0042"

    /// Sends the plan's deliveries at `indices` (plan order) and returns each one's result by
    /// plan index. A delivery that waits for another one outside `indices` does not wait: that
    /// one was sent (and answered, or failed) before.
    static func send(
        _ plan: SimPlan, _ indices: [Int], channels: SimChannels, url: String, attempts: Int = 6
    ) async -> [Int: SimSender.Result] {
        let local = Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($0.element, $0.offset) })
        let batch = indices.map { i -> SimDelivery in
            var d = plan.deliveries[i]
            d.waitFor = d.waitFor.flatMap { local[$0] }
            return d
        }
        let results = await SimSender.send(batch, channels: channels, baseURL: url, rate: nil, concurrency: 8, attempts: attempts)
        return Dictionary(uniqueKeysWithValues: zip(indices, results).map { ($0, $1) })
    }

    /// Sum of a metric's samples on a worker's admin port (nil when nothing answers).
    static func metric(_ name: String, port: Int) async -> Int? {
        guard let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
            let (data, _) = try? await URLSession.shared.data(from: url)
        else { return nil }
        var total = 0
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n")
        where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            if let v = line.split(separator: " ").last, let n = Double(v) { total += Int(n) }
        }
        return total
    }

    @Test("Ingest stopped for a third of the traffic: backfill recovers every missed Stripe event, nothing twice, and the books agree")
    func backfillAfterOutage() async throws {
        let events = Locked<[[String: Any]]>([])
        let server = LoopbackStripe(LoopbackStripe.eventsAPI(key: Self.key, events: { events.current }))
        try await server.start()
        defer { server.stop() }
        let fleet = ProcessFleet("backfill")
        try fleet.useStripeAPI(server, key: Self.key)
        try await fleet.run { try await run($0, server: server, events: events) }
    }

    func run(_ fleet: ProcessFleet, server: LoopbackStripe, events: Locked<[[String: Any]]>) async throws {
        var global = GlobalOptions()
        global.config = fleet.config
        let config = try SimConfig.load(global, apiKey: DevCommand.sandboxAPIKey, ingestURL: fleet.ingestURL)
        let runID = "bf" + String(fleet.stem.split(separator: "-").last!).filter(\.isNumber).prefix(8)
        var generator = SimGenerator(seed: 19, runID: runID, now: Date(), merchants: config.merchants, channels: config.channels)
        let plan = generator.generate(count: 300)
        let n = plan.deliveries.count
        let outage = (n / 3)..<(2 * n / 3)

        // Every Stripe event of the traffic, as Stripe's Events API holds it (once per event id).
        func stripeID(_ d: SimDelivery) -> String? {
            guard d.route == .stripe, let o = try? JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any] else { return nil }
            return o["id"] as? String
        }
        var served: [String] = []
        var stripeEvents: [[String: Any]] = []
        for d in plan.deliveries {
            guard let id = stripeID(d), !served.contains(id),
                let o = try JSONSerialization.jsonObject(with: Data(d.body)) as? [String: Any]
            else { continue }
            served.append(id)
            stripeEvents.append(o)
        }
        events.withLock { $0 = stripeEvents }

        var reader = SimFleetReader(config: config, global: global)
        let ledgerBaseline = reader.ledgerBalances()
        let byMerchant = Dictionary(config.merchants.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let dates = plan.facts.values.compactMap { f in byMerchant[f.merchantID]?.businessDay(for: f.occurredAt) }
        let days = (dates.min() ?? "0000-00-00")...(dates.max() ?? "0000-00-00")
        let settlementBaseline = reader.settlementTotals(days: days)

        // 1. The first third, ingest up.
        let first = await Self.send(plan, Array(0..<outage.lowerBound), channels: config.channels, url: fleet.ingestURL)
        let firstRefused = first.filter { !(200..<300).contains($0.value.status) }
        #expect(firstRefused.isEmpty, "\(firstRefused.prefix(3))")

        // 2. Ingest stopped: the middle third fails (connection refused); the provider gives up.
        let ingest = try #require(fleet.processes["ingest"])
        ingest.signal(SIGTERM)
        #expect(await ingest.wait(timeout: .seconds(30)) == 0, "ingest did not stop cleanly: \(ingest.log.suffix(2000))")
        try? FileManager.default.removeItem(atPath: fleet.dir + "/ingest.ready")
        let down = await Self.send(plan, Array(outage), channels: config.channels, url: fleet.ingestURL, attempts: 1)
        #expect(down.values.allSatisfy { $0.status == 0 }, "a request was answered while ingest was stopped")

        // 3. Ingest back: the last third, and the outage's requests of providers without an events API again.
        try fleet.start("ingest")
        let up = await eventually(timeout: .seconds(60)) { fleet.port("ingest") != nil }
        if !up { throw TestFailure("ingest did not restart: \(fleet.processes["ingest"]?.log ?? "")") }
        fleet.ingestURL = "http://127.0.0.1:\(fleet.port("ingest")!)"
        let resent = outage.filter { plan.deliveries[$0].route != .stripe }
        let last = await Self.send(
            plan, resent + Array(outage.upperBound..<n), channels: config.channels, url: fleet.ingestURL)
        let lastRefused = last.filter { !(200..<300).contains($0.value.status) }
        #expect(lastRefused.isEmpty, "\(lastRefused.prefix(3))")

        // What ingest missed, from what was sent and answered.
        var answered = Set<Int>()
        for (i, r) in first.merging(last, uniquingKeysWith: { a, _ in a }) where (200..<300).contains(r.status) { answered.insert(i) }
        var knownFacts = Set<String>()
        var deliveredEvents = Set<String>()
        for i in answered {
            knownFacts.formUnion(plan.deliveries[i].factIDs)
            if let id = stripeID(plan.deliveries[i]) { deliveredEvents.insert(id) }
        }
        let missedEvents = Set(served).subtracting(deliveredEvents)
        // The first request of each missed event, fed oldest first (equal times: in the order sent).
        var missedIndex: [String: Int] = [:]
        for (i, d) in plan.deliveries.enumerated() {
            if let id = stripeID(d), missedEvents.contains(id), missedIndex[id] == nil { missedIndex[id] = i }
        }
        let created = { (i: Int) -> Int64 in
            ((try? JSONSerialization.jsonObject(with: Data(plan.deliveries[i].body)) as? [String: Any])?["created"] as? NSNumber)?
                .int64Value ?? 0
        }
        let backfilled = missedIndex.values.sorted { (created($0), $0) < (created($1), $1) }
        let newFacts = Set(backfilled.map { plan.deliveries[$0].factID }).subtracting(knownFacts)
        #expect(!missedEvents.isEmpty && !newFacts.isEmpty, "the outage must have lost Stripe events")

        // 4. The backfill: a dry run lists, the run recovers, a second run finds only duplicates.
        let minCreated = stripeEvents.compactMap { ($0["created"] as? NSNumber)?.int64Value }.min() ?? 0
        let since = RFC3339.format(Date(timeIntervalSince1970: TimeInterval(minCreated)))
        let dry = try await CLIRun.run(
            ["backfill", "stripe", "--since", since, "--dry-run", "--json", "--config", fleet.config, "--ingest-url", fleet.ingestURL], environment: [:], dir: fleet.dir)
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryJSON = try #require(dry.json as? [String: Any], "\(dry.stdout.prefix(500)) \(dry.stderr)")
        #expect(dryJSON["listed"] as? Int == served.count)
        #expect(dryJSON["pages"] as? Int == (served.count + 99) / 100)
        let run = try await CLIRun.run(
            ["backfill", "stripe", "--since", since, "--json", "--config", fleet.config, "--ingest-url", fleet.ingestURL], environment: [:], dir: fleet.dir)
        #expect(run.status == 0, "\(run.stderr)")
        let runJSON = try #require(run.json as? [String: Any], "\(run.stdout.prefix(500)) \(run.stderr)")
        let recovered = runJSON["accepted"] as? Int ?? -1
        let duplicates = runJSON["duplicate"] as? Int ?? -1
        #expect(runJSON["listed"] as? Int == served.count)
        #expect(recovered == newFacts.count, "recovered \(recovered), missed facts \(newFacts.count)")
        #expect(duplicates == served.count - newFacts.count)
        #expect(runJSON["failed"] as? Int == 0)
        let outcomes = Dictionary(
            ((runJSON["events"] as? [[String: Any]]) ?? []).map { ($0["id"] as? String ?? "", $0["outcome"] as? String ?? "") },
            uniquingKeysWith: { a, _ in a })
        let acceptedIDs = Set(outcomes.filter { $0.value == "accepted" }.keys)
        #expect(acceptedIDs.isSubset(of: missedEvents), "the backfill accepted an event ingest had: \(acceptedIDs.subtracting(missedEvents).prefix(3))")
        #expect(deliveredEvents.allSatisfy { outcomes[$0] == "duplicate" })
        let again = try await CLIRun.run(
            ["backfill", "stripe", "--since", since, "--json", "--config", fleet.config, "--ingest-url", fleet.ingestURL], environment: [:], dir: fleet.dir)
        let againJSON = try #require(again.json as? [String: Any], "\(again.stdout.prefix(500)) \(again.stderr)")
        #expect(againJSON["accepted"] as? Int == 0)
        #expect(againJSON["duplicate"] as? Int == served.count)
        let pages = server.requests.filter { $0.path == "/v1/events" }
        #expect(pages.allSatisfy { $0.headers["authorization"] == "Bearer \(Self.key)" })
        #expect(pages.allSatisfy { $0.parameters["created[gte]"] == String(minCreated) })

        // 5. The books: every fact once, as the first request that reached ingest reported it.
        var seen = Set<String>()
        var facts: [PaymentEvent] = []
        let arrival = first.keys.filter { answered.contains($0) }.sorted() + resent + Array(outage.upperBound..<n) + backfilled
        for i in arrival {
            let d = plan.deliveries[i]
            for (k, id) in d.factIDs.enumerated() {
                guard seen.insert(id).inserted, let f = k == 0 ? (d.reported ?? plan.facts[id]) : plan.facts[id] else { continue }
                facts.append(f)
            }
        }
        #expect(facts.count == knownFacts.count + newFacts.count)
        let expected = SimExpectation.compute(facts: facts, merchants: config.merchants)
        var runCustomers = Set<String>()
        for f in plan.facts.values { if let c = f.customer?.id { runCustomers.insert(c) } }
        var checks: [SimCheck] = []
        let deadline = ContinuousClock.now + .seconds(120)
        while true {
            checks = [
                reader.ledgerCheck(baseline: ledgerBaseline, expected: expected),
                reader.crmCheck(expected: expected, runCustomers: runCustomers),
                reader.receiptsCheck(expected: expected, runEvents: plan.allFactIDs),
                reader.settlementCheck(baseline: settlementBaseline, expected: expected, days: days),
            ]
            if checks.allSatisfy({ $0.status == .agree }) || ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        for c in checks {
            #expect(c.status == .agree, "\(c.name): \(c.summary) \(c.differences.prefix(5))")
        }

        // Each worker processed each fact of its routing keys once (none twice).
        var processedLine: [String] = []
        for spec in WorkerIdentity.fleet {
            let want = facts.filter { spec.routingKeys.contains($0.type.rawValue) }.count
            let port = try #require(fleet.port(spec.name))
            var got: Int?
            _ = await eventually(timeout: .seconds(30)) {
                got = await Self.metric("payfleet_processed_total", port: port)
                return got == want
            }
            let skipped = await Self.metric("payfleet_duplicates_skipped_total", port: port) ?? 0
            let effects = await Self.metric("payfleet_effects_performed_total", port: port) ?? 0
            #expect(got == want, "\(spec.name) processed \(got ?? -1), sent \(want)")
            processedLine.append("\(spec.name) \(got ?? -1)/\(want) (duplicates skipped \(skipped), effects \(effects))")
        }
        print(
            """
            backfill fleet: \(n) requests, \(first.count) before the outage, \(outage.count) while ingest was stopped \
            (\(outage.count - resent.count) Stripe, lost; \(resent.count) others, sent again), \(n - outage.upperBound) after; \
            \(knownFacts.count) facts reached ingest live
            backfill: \(served.count) Stripe events listed in \(runJSON["pages"] ?? "?") pages; ingest missed \(missedEvents.count) events \
            (\(newFacts.count) facts no other request reported); recovered \(recovered), duplicates \(duplicates), failed \
            \(runJSON["failed"] ?? "?"); second run: \(againJSON["accepted"] ?? "?") recovered, \(againJSON["duplicate"] ?? "?") duplicates
            processed (fleet/sent): \(processedLine.joined(separator: "; "))
            checks: \(checks.map { "\($0.name) \($0.status.rawValue): \($0.summary)" }.joined(separator: "; "))
            """)
    }
}
