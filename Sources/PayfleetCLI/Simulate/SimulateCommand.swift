import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore

/// `payfleet simulate (--rate R --duration S | --count N) [--seed S]`: realistic sandbox
/// traffic signed like the real providers, into ingest; then what was sent beside what the
/// fleet shows, and whether they agree (DESIGN §6).
public struct SimulateCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Send realistic signed sandbox traffic to ingest and check the fleet agrees with it.")

    @OptionGroup public var global: GlobalOptions
    @Option(help: "Requests per second (with --duration).") public var rate: Double?
    @Option(help: "How long to send at --rate (seconds, or 30s / 2m).") public var duration: String?
    @Option(help: "Send exactly this many requests, as fast as --concurrency allows (or at --rate).") public var count: Int?
    @Option(help: "Seed of the traffic generator: the same seed and run id give the same traffic.") public var seed: UInt64 = 1
    @Option(name: .customLong("run-id"), help: "Prefix of every id this run creates ([a-z0-9], up to 12; default: from the clock).")
    public var runID: String?
    @Option(name: .customLong("ingest-url"), help: "Ingest's base URL (default: from the ingest section of the config).")
    public var ingestURL: String?
    @Option(name: .customLong("api-key"), help: "The phone platform's API key (its SHA-256 must be in ingest.api_keys).")
    public var apiKey = "pf_sandbox_phone_key"
    @Option(help: "Requests in flight at most.") public var concurrency = 8
    @Option(name: .customLong("settle-timeout"), help: "How long to wait for the fleet to catch up (e.g. 60s).")
    public var settleTimeout = "60s"
    @Option(name: .customLong("stripe-outage"),
            help: "Withhold the Stripe webhooks among requests FROM up to TO (FROM:TO), then backfill them from a loopback Stripe Events API.")
    public var stripeOutage: String?

    public init() {}

    public func validate() throws {
        switch (rate, duration, count) {
        case (.some(let r), .some(let d), nil):
            guard r > 0, r <= 100_000 else { throw ValidationError("--rate: must be between 0 and 100000 requests per second") }
            guard let ms = Self.seconds(d), ms > 0 else { throw ValidationError("--duration: '\(d)' is not a positive duration") }
        case (_, nil, .some(let n)):
            guard n > 0, n <= 1_000_000 else { throw ValidationError("--count: must be between 1 and 1000000") }
            if let r = rate, r <= 0 { throw ValidationError("--rate: must be positive") }
        default:
            throw ValidationError("give --rate R --duration S, or --count N")
        }
        guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency: must be between 1 and 256") }
        guard Self.seconds(settleTimeout) != nil else { throw ValidationError("--settle-timeout: '\(settleTimeout)' is not a duration") }
        if let id = runID {
            guard !id.isEmpty, id.count <= 12, id.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber) }) else {
                throw ValidationError("--run-id: '\(id)' must be 1–12 characters of [a-z0-9]")
            }
        }
        if let o = stripeOutage, SimStripeOutage.parse(o) == nil {
            throw ValidationError("--stripe-outage: '\(o)' is not FROM:TO (request numbers, 0 ≤ FROM < TO)")
        }
        if let u = ingestURL, URL(string: u)?.scheme?.hasPrefix("http") != true {
            throw ValidationError("--ingest-url: '\(u)' is not an http(s) URL")
        }
    }

    /// Seconds in `s` ("90", "30s", "2m", "500ms").
    static func seconds(_ s: String) -> Double? {
        if let v = Double(s), v >= 0 { return v }
        return ConfigSection.parseDurationMS(s).map { Double($0) / 1000 }
    }

    public var requestCount: Int {
        if let count { return count }
        return max(1, Int(((rate ?? 0) * (Self.seconds(duration ?? "0") ?? 0)).rounded()))
    }

    public func run() async throws {
        let report = try await execute()
        print(report.text)
        if !report.agree { throw ExitCode(1) }
    }

    /// The run's outcome: the text printed (human or `--json`) and whether all checks agree.
    public struct Report: Sendable {
        public var text: String
        public var agree: Bool
        public var checks: [SimCheck]
        public var accepted: Int
        public var rejected: Int
    }

    public func execute() async throws -> Report {
        let config = try SimConfig.load(global, apiKey: apiKey, ingestURL: ingestURL)
        let run = runID ?? Self.clockRunID()
        var generator = SimGenerator(seed: seed, runID: run, now: Date(), merchants: config.merchants, channels: config.channels)
        if generator.usableMerchants.isEmpty {
            throw CLIFailure("\(config.configPath): no merchant with currencies and a configured channel (Stripe account, Adyen merchant account or API key scope)")
        }
        let plan = generator.generate(count: requestCount)

        if let problem = await SimSender.preflight(config.ingestURL) {
            throw CLIFailure("ingest at \(config.ingestURL) \(problem) (start the fleet with `payfleet dev up`, or pass --ingest-url)")
        }
        var reader = SimFleetReader(config: config, global: global)
        let ledgerBaseline = reader.ledgerBalances()
        let byID = Dictionary(config.merchants.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let dates = plan.facts.values.compactMap { f in byID[f.merchantID]?.businessDay(for: f.occurredAt) }
        let days = (dates.min() ?? "0000-00-00")...(dates.max() ?? "0000-00-00")
        let settlementBaseline = reader.settlementTotals(days: days)

        let outage = stripeOutage.flatMap(SimStripeOutage.parse).map(SimStripeOutage.init(range:))
        let withheld = Set(plan.deliveries.indices.filter { outage?.withholds($0, plan) ?? false })
        let started = ContinuousClock.now
        let results = await SimSender.send(
            plan.deliveries, channels: config.channels, baseURL: config.ingestURL, rate: rate, concurrency: concurrency,
            skip: withheld)
        let elapsed = ContinuousClock.now - started
        var accepted = Set<Int>()
        var rejections: [String] = []
        for (i, r) in results.enumerated() where !withheld.contains(i) {
            if (200..<300).contains(r.status) {
                accepted.insert(i)
            } else {
                rejections.append("\(plan.deliveries[i].label) → \(r.status == 0 ? "no answer" : String(r.status)): \(r.body.prefix(200))")
            }
        }
        let backfill = try await outage?.backfill(plan, channels: config.channels, ingestURL: config.ingestURL)
        let facts = backfill.map { plan.deliveredFacts(order: accepted.sorted() + $0.fed) } ?? plan.deliveredFacts(accepted: accepted)
        let expected = SimExpectation.compute(facts: facts, merchants: config.merchants)
        let runEvents = plan.allFactIDs
        var runCustomers = Set<String>()
        for f in plan.facts.values { if let c = f.customer?.id { runCustomers.insert(c) } }

        // Wait (bounded) until every running worker shows what was sent.
        let timeout = Self.seconds(settleTimeout) ?? 60
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var checks: [SimCheck] = []
        while true {
            checks = [
                reader.ledgerCheck(baseline: ledgerBaseline, expected: expected),
                reader.crmCheck(expected: expected, runCustomers: runCustomers),
                reader.receiptsCheck(expected: expected, runEvents: runEvents),
                reader.settlementCheck(baseline: settlementBaseline, expected: expected, days: days),
            ]
            let pending = checks.contains { $0.status == .disagree }
            if !pending || ContinuousClock.now >= deadline { break }
            try? await Task.sleep(for: .milliseconds(250))
        }
        let ran = checks.filter { $0.status != .notRunning }
        var problems = checks.filter { $0.status == .disagree }.map { "\($0.name): \($0.summary)" }
        if !rejections.isEmpty { problems.insert("ingest rejected \(rejections.count) requests", at: 0) }
        if let b = backfill, b.failed > 0 { problems.insert("backfill could not feed \(b.failed) events", at: 0) }
        if ran.isEmpty { problems.append("nothing to compare: no worker output found") }
        let agree = problems.isEmpty

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var stats = Stats(plan: plan, facts: facts, accepted: accepted.count, rejected: rejections.count, seconds: seconds)
        stats.receipts = expected.receipts.count
        let text: String
        if global.json {
            var sent = stats.json
            sent["rejections"] = Array(rejections.prefix(20))
            var object: [String: Any] = [
                "run_id": run, "seed": NSNumber(value: seed), "ingest_url": config.ingestURL, "sent": sent,
                "checks": checks.map(\.json), "agree": agree,
                "result": agree ? "all agree" : "DISAGREE: " + problems.joined(separator: "; "),
            ]
            if let b = backfill { object["stripe_outage"] = b.json }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            text = String(decoding: data, as: UTF8.self)
        } else {
            var lines = ["payfleet simulate: run \(run), seed \(seed), \(config.merchants.count) merchants"]
            lines += stats.lines(url: config.ingestURL)
            if let b = backfill { lines.append(b.line) }
            for r in rejections.prefix(5) { lines.append("  rejected: \(r)") }
            for c in checks {
                lines.append("")
                if c.status == .notRunning {
                    lines.append("\(c.name): \(c.summary)")
                    continue
                }
                let width = max(34, (c.rows.map(\.0.count).max() ?? 0) + 2)
                func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
                func lpad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
                lines.append("\(pad("\(c.name) (\(c.worker))", width))  \(lpad("SENT", 18))  \(lpad("FLEET", 18))")
                for r in c.rows {
                    lines.append("\(pad("  " + r.0, width))  \(lpad(r.1, 18))  \(lpad(r.2, 18))\(r.1 == r.2 ? "" : "  ≠")")
                }
                lines.append("  => \(c.status == .agree ? "agree" : "DISAGREE"): \(c.summary)")
                for d in c.differences.prefix(10) { lines.append("     \(d)") }
                if c.differences.count > 10 { lines.append("     … \(c.differences.count - 10) more") }
            }
            lines.append("")
            lines.append(stats.countsLine)
            lines.append(agree ? "all agree" : "DISAGREE: " + problems.joined(separator: "; "))
            text = lines.joined(separator: "\n")
        }
        return Report(text: text, agree: agree, checks: checks, accepted: accepted.count, rejected: rejections.count)
    }

    static func clockRunID() -> String {
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        var t = UInt64(Date().timeIntervalSince1970 * 10)
        var out = ""
        for _ in 0..<7 {
            out = String(alphabet[Int(t % 32)]) + out
            t /= 32
        }
        return out
    }

    /// Figures of what was sent.
    struct Stats {
        var requests: Int
        var events: Int
        var retries: Int
        var twins: Int
        var batches: Int
        var outOfOrder: Int
        var accepted: Int
        var rejected: Int
        var seconds: Double
        /// Email receipts due, refunds booked (accepted `payment.refunded`), dispute fees booked
        /// (accepted `payment.disputed` with a fee), reversals (`refund.failed`, `payment.reversed`,
        /// `payout.failed`) and late fees (`fee.assessed`).
        var receipts = 0
        var refundsBooked = 0
        var disputeFeesBooked = 0
        var reversals = 0
        var lateFees = 0
        var byRoute: [String: Int] = [:]
        var byType: [String: Int] = [:]
        var currencies: Set<String> = []
        var merchants: Set<String> = []

        init(plan: SimPlan, facts: [PaymentEvent], accepted: Int, rejected: Int, seconds: Double) {
            requests = plan.deliveries.count
            events = facts.count
            retries = plan.deliveries.filter(\.isRetry).count
            twins = plan.deliveries.filter { $0.isTwin && !$0.isRetry }.count
            batches = plan.deliveries.filter { !$0.moreFactIDs.isEmpty && !$0.isRetry }.count
            outOfOrder = plan.outOfOrder
            self.accepted = accepted
            self.rejected = rejected
            self.seconds = seconds
            for d in plan.deliveries { byRoute[d.route.rawValue, default: 0] += 1 }
            for f in facts {
                switch f.type {
                case .paymentRefunded: refundsBooked += 1
                case .paymentDisputed where (f.fee?.value ?? 0) > 0: disputeFeesBooked += 1
                case .refundFailed, .paymentReversed, .payoutFailed: reversals += 1
                case .feeAssessed: lateFees += 1
                default: break
                }
                byType[f.type.rawValue, default: 0] += 1
                currencies.insert(f.amount.currency.code)
                merchants.insert(f.merchantID)
            }
        }

        var json: [String: Any] {
            [
                "requests": requests, "events": events, "retries": retries, "second_notifications": twins, "adyen_batches": batches,
                "out_of_order": outOfOrder, "accepted": accepted, "rejected": rejected,
                "seconds": (seconds * 1000).rounded() / 1000, "by_route": byRoute, "by_type": byType,
                "currencies": currencies.sorted(), "merchants": merchants.sorted(),
                "counts": countsJSON,
            ]
        }

        var countsJSON: [String: Int] {
            [
                "deliveries": accepted, "receipts": receipts, "refunds_booked": refundsBooked,
                "dispute_fees_booked": disputeFeesBooked, "reversals": reversals, "late_fees": lateFees,
            ]
        }

        /// The one-line summary of what the fleet should have done.
        var countsLine: String {
            "counts: \(accepted) deliveries, \(receipts) receipts, \(refundsBooked) refunds booked, "
                + "\(disputeFeesBooked) dispute fees booked, \(reversals) reversals, \(lateFees) late fees"
        }

        func lines(url: String) -> [String] {
            let rate = seconds > 0 ? Double(requests) / seconds : 0
            return [
                "sent \(requests) requests to \(url) in \(String(format: "%.1f", seconds)) s (\(String(format: "%.0f", rate))/s): \(accepted) accepted, \(rejected) rejected",
                "  \(events) distinct events, \(retries) provider retries (duplicates), \(twins) second notifications of one fact (charge.succeeded, refund.created), \(batches) Adyen batches of two, \(outOfOrder) out-of-order deliveries",
                "  by route: " + byRoute.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "),
                "  by type: " + byType.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "),
                "  merchants: \(merchants.sorted().joined(separator: ", ")); currencies: \(currencies.sorted().joined(separator: ", "))",
            ]
        }
    }
}

/// Sends the requests at a rate (or as fast as allowed) with bounded concurrency, retrying
/// transport errors, 429 and 5xx answers as providers do.
enum SimSender {
    struct Result: Sendable {
        var status: Int
        var body: String
        var attempts: Int
    }

    static func send(
        _ deliveries: [SimDelivery], channels: SimChannels, baseURL: String, rate: Double?, concurrency: Int, attempts: Int = 6,
        skip: Set<Int> = []
    ) async -> [Result] {
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 15
        config.httpMaximumConnectionsPerHost = concurrency
        let session = SessionBox(session: URLSession(configuration: config))
        let nextIndex = Locked(0)
        let results = Locked([Result?](repeating: nil, count: deliveries.count))
        let start = ContinuousClock.now
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<min(concurrency, max(1, deliveries.count)) {
                group.addTask {
                    while true {
                        let i = nextIndex.withLock { n -> Int in
                            defer { n += 1 }
                            return n
                        }
                        guard i < deliveries.count else { return }
                        if skip.contains(i) {
                            results.withLock { $0[i] = Result(status: 0, body: "withheld", attempts: 0) }
                            continue
                        }
                        // The second notification of a fact goes once the first is answered.
                        if let w = deliveries[i].waitFor {
                            while results.withLock({ $0[w] == nil }) { try? await Task.sleep(for: .milliseconds(2)) }
                        }
                        if let rate {
                            let slot = start + .milliseconds(Int(Double(i) / rate * 1000))
                            if slot > ContinuousClock.now { try? await Task.sleep(until: slot, clock: .continuous) }
                        }
                        let r = await deliver(deliveries[i], channels: channels, base: base, session: session, attempts: attempts)
                        results.withLock { $0[i] = r }
                    }
                }
            }
        }
        session.session.finishTasksAndInvalidate()
        return results.current.map { $0 ?? Result(status: 0, body: "not sent", attempts: 0) }
    }

    /// URLSession is thread-safe; the box lets the sending tasks share one.
    struct SessionBox: @unchecked Sendable { let session: URLSession }

    /// Nil when ingest answers `GET /healthz`, else what went wrong.
    static func preflight(_ baseURL: String) async -> String? {
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        guard let url = URL(string: base + "/healthz") else { return "is not a valid URL" }
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 5
        let session = URLSession(configuration: config)
        defer { session.finishTasksAndInvalidate() }
        do {
            let (_, response) = try await session.data(from: url)
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            return status == 200 ? nil : "answers GET /healthz with \(status)"
        } catch {
            return "does not answer: \(error.localizedDescription)"
        }
    }

    static func deliver(_ d: SimDelivery, channels: SimChannels, base: String, session: SessionBox, attempts: Int = 6) async -> Result {
        var last = Result(status: 0, body: "", attempts: 0)
        for attempt in 1...max(1, attempts) {
            var req = URLRequest(url: URL(string: base + d.path)!)
            req.httpMethod = "POST"
            req.httpBody = Data(d.body)
            for (k, v) in d.headers(channels: channels, now: Date()) { req.setValue(v, forHTTPHeaderField: k) }
            do {
                let (data, response) = try await session.session.data(for: req)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                last = Result(status: status, body: String(decoding: data.prefix(500), as: UTF8.self), attempts: attempt)
                if status != 429 && status < 500 { return last }
            } catch {
                last = Result(status: 0, body: "\(error)", attempts: attempt)
            }
            if attempt == attempts { break }
            try? await Task.sleep(for: .milliseconds(100 << min(attempt, 5)))
        }
        return last
    }
}
