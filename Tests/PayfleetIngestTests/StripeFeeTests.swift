import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import PayfleetTestKit
import Testing

/// Issue 19 item 1 (Stripe): the fee of each succeeded charge and refund is fetched from its
/// balance transaction off the request path and accepted as `fee.assessed`.
@Suite struct StripeFeeTests {
    static let key = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

    static func configuration(_ server: LoopbackStripe) -> IngestConfiguration {
        var c = TestIngest.configuration()
        var api = StripeAPIConfiguration(
            apiKey: key, feeStatePath: (c.statePath as NSString).deletingLastPathComponent + "/stripe-fees.sqlite")
        api.baseURL = server.url
        api.backoffMS = 50
        api.timeoutSeconds = 5
        c.stripeAPI = api
        return c
    }

    /// Posts a signed webhook; records an issue with the answer unless it is 202.
    @discardableResult
    static func post(_ client: any TestClientProtocol, _ body: [UInt8]) async throws -> TestResponse {
        let r = try await client.execute(
            uri: "/webhooks/stripe", method: .post, headers: TestIngest.stripeHeaders(body), body: ByteBuffer(bytes: body))
        #expect(r.status == .accepted, "\(r.status): \(String(buffer: r.body))")
        return r
    }

    /// Stripe's published balance transaction, with a fee.
    static func balanceTransaction(id: String, fee: Int64, currency: String = "usd", source: String) -> [String: Any] {
        var bt = TestIngest.object("balance_transaction")
        bt["id"] = id
        bt["fee"] = fee
        bt["amount"] = 100
        bt["net"] = 100 - fee
        bt["currency"] = currency
        bt["source"] = source
        bt["fee_details"] = [["amount": fee, "currency": currency, "description": "Stripe processing fees", "type": "stripe_fee"]]
        return bt
    }

    /// A fetcher over the app's own files (a second connection, as another process would).
    static func fetcher(_ c: IngestConfiguration) async throws -> (StripeFeeFetcher, StripeFeeQueue) {
        let logger = Logger(label: "fee-test")
        let queue = try await StripeFeeQueue(path: c.stripeAPI!.feeStatePath, logger: logger)
        let outbox = try await Outbox(path: c.statePath, logger: logger)
        return (StripeFeeFetcher(queue: queue, api: StripeAPI(configuration: c.stripeAPI!), outbox: outbox, logger: logger), queue)
    }

    @Test("charge.succeeded with a balance transaction id: queued, fetched with the bearer key after a 429, posted once as fee.assessed")
    func chargeFee() async throws {
        let server = LoopbackStripe { req, i in
            guard req.path == "/v1/balance_transactions/txn_1PgaxNB7WZ01zgkWEV3TLf40" else { return nil }
            if i == 0 { return .json(["error": ["type": "rate_limit_error"]], status: 429) }
            return .json(StripeFeeTests.balanceTransaction(id: "txn_1PgaxNB7WZ01zgkWEV3TLf40", fee: 62, source: "ch_1PgafuB7WZ01zgkWXYmPNZs8"))
        }
        try await server.start()
        defer { server.stop() }
        let config = Self.configuration(server)
        try await TestIngest.withApp(config) { client, config in
            let charge = TestIngest.object("charge")
            #expect(charge["balance_transaction"] as? String == "txn_1PgaxNB7WZ01zgkWEV3TLf40")
            let body = TestIngest.stripeEvent(id: "evt_ch_1", type: "charge.succeeded", object: charge)
            #expect(try await Self.post(client, body).status == .accepted)
            // Stripe redelivers: still one request queued.
            #expect(try await Self.post(client, body).status == .accepted)
            #expect(server.requests.isEmpty, "nothing is fetched on the request path")
            let (fetcher, queue) = try await Self.fetcher(config)
            #expect(try await queue.counts() == ["pending": 1])
            try await fetcher.drain()
            #expect(try await queue.row("txn_1PgaxNB7WZ01zgkWEV3TLf40")?.state == "pending")
            try await Task.sleep(for: .milliseconds(150))
            try await fetcher.drain()
            #expect(try await queue.row("txn_1PgaxNB7WZ01zgkWEV3TLf40")?.state == "done")
            #expect(server.requests.count == 2)
            #expect(server.requests.allSatisfy { $0.headers["authorization"] == "Bearer \(Self.key)" })
            let fees = try TestIngest.outbox(config).filter { $0.type == .feeAssessed }
            #expect(fees.count == 1)
            let fee = try #require(fees.first)
            #expect(fee.id == StripeFeeFetcher.feeEventID(balanceTransaction: "txn_1PgaxNB7WZ01zgkWEV3TLf40"))
            #expect(fee.amount == Money(value: 62, currency: Currency(code: "USD")!))
            #expect(fee.payment?.id == "ch_1PgafuB7WZ01zgkWXYmPNZs8")
            #expect(fee.merchantID == "m_acme")
            #expect(fee.metadata["balance_transaction"] == "txn_1PgaxNB7WZ01zgkWEV3TLf40")
            #expect(fee.metadata["net"] == "38")
            // The payment itself carries no fee (the webhook had only the id).
            #expect(try TestIngest.outbox(config).first { $0.type == .paymentSucceeded }?.fee == nil)
            // Fetched again (a crash before the row was marked done): a duplicate in the outbox.
            let again = try await Outbox(path: config.statePath, logger: Logger(label: "t")).accept(
                [.event(fee)], traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            #expect(again == .accepted([(fee.id, true)]))
            // Neither the key nor its tail is in ingest's files.
            for path in [config.statePath, config.stripeAPI!.feeStatePath] {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
                #expect(bytes.range(of: Data(Self.key.utf8)) == nil)
            }
        }
    }

    @Test("a refund's balance transaction is fetched; an expanded one with its fee on the payment is not fetched again")
    func refundAndCarried() async throws {
        let server = LoopbackStripe { req, _ in
            if req.path == "/v1/balance_transactions/txn_refund_1" {
                return .json(StripeFeeTests.balanceTransaction(id: "txn_refund_1", fee: 5, source: "re_1"))
            }
            return nil
        }
        try await server.start()
        defer { server.stop() }
        try await TestIngest.withApp(Self.configuration(server)) { client, config in
            var charge = TestIngest.object("charge")
            charge["id"] = "ch_expanded"
            charge["balance_transaction"] = Self.balanceTransaction(id: "txn_expanded", fee: 45, source: "ch_expanded")
            #expect(try await Self.post(client, TestIngest.stripeEvent(id: "evt_ch_x", type: "charge.succeeded", object: charge)).status == .accepted)
            var refund = TestIngest.object("refund")
            refund["id"] = "re_1"
            refund["charge"] = "ch_expanded"
            refund["status"] = "succeeded"
            refund["balance_transaction"] = "txn_refund_1"
            #expect(try await Self.post(client, TestIngest.stripeEvent(id: "evt_re_1", type: "refund.created", object: refund)).status == .accepted)
            let (fetcher, queue) = try await Self.fetcher(config)
            #expect(try await queue.counts() == ["carried": 1, "pending": 1])
            try await fetcher.drain()
            #expect(server.requests.map(\.path) == ["/v1/balance_transactions/txn_refund_1"])
            let fees = try TestIngest.outbox(config).filter { $0.type == .feeAssessed }
            #expect(fees.map(\.amount.value) == [5])
            #expect(fees.first?.payment?.id == "ch_expanded")
            #expect(fees.first?.metadata["fee_of"] == "refund")
            #expect(try TestIngest.outbox(config).first { $0.type == .paymentSucceeded }?.fee?.value == 45)
        }
    }

    @Test("a permanent refusal (404) marks the row failed without the key in the error; 5xx is retried")
    func failures() async throws {
        let flakyCalls = Locked(0)
        let server = LoopbackStripe { req, _ in
            if req.path == "/v1/balance_transactions/txn_flaky" {
                let n = flakyCalls.withLock { $0 += 1; return $0 }
                return n <= 2 ? .init(status: 503, body: "{}") : .json(StripeFeeTests.balanceTransaction(id: "txn_flaky", fee: 0, source: "ch_f"))
            }
            return nil
        }
        try await server.start()
        defer { server.stop() }
        try await TestIngest.withApp(Self.configuration(server)) { client, config in
            for (id, bt) in [("ch_missing", "txn_missing"), ("ch_f", "txn_flaky")] {
                var charge = TestIngest.object("charge")
                charge["id"] = id
                charge["balance_transaction"] = bt
                #expect(try await Self.post(client, TestIngest.stripeEvent(id: "evt_\(id)", type: "charge.succeeded", object: charge)).status == .accepted)
            }
            let (fetcher, queue) = try await Self.fetcher(config)
            for _ in 0..<20 where try await queue.counts()["pending"] != nil {
                try await fetcher.drain()
                try await Task.sleep(for: .milliseconds(60))
            }
            let missing = try #require(try await queue.row("txn_missing"))
            #expect(missing.state == "failed")
            #expect(missing.lastError?.contains("404") == true)
            #expect(missing.lastError?.contains(Self.key) == false)
            let metrics = IngestMetrics()
            let observed = StripeFeeFetcher(
                queue: queue, api: StripeAPI(configuration: config.stripeAPI!),
                outbox: try await Outbox(path: config.statePath, logger: Logger(label: "t")), metrics: metrics,
                logger: Logger(label: "t"))
            await observed.reportQueue()
            #expect(metrics.text().contains(#"payfleet_ingest_stripe_fees{state="failed"} 1"#), "\(metrics.text())")
            // Two 503s, then a zero fee: done, nothing to post.
            let flaky = try #require(try await queue.row("txn_flaky"))
            #expect(flaky.state == "done" && flaky.attempts == 3 && flaky.eventID == nil)
            #expect(try TestIngest.outbox(config).filter { $0.type == .feeAssessed }.isEmpty)
        }
    }

    @Test("config: stripe.api_key_file is read as a secret; api_base and fee_* keys are known")
    func config() async throws {
        let dir = TestEnvironment.makeTempDir("fee-config")
        try "sk_test_fromfile123\n".write(toFile: dir + "/key", atomically: true, encoding: .utf8)
        let yaml = """
            state_dir: \(dir)
            ingest:
              stripe:
                webhook_secrets: ["whsec_abcdefgh"]
                api_key_file: \(dir)/key
                api_base: http://127.0.0.1:1
                fee_backoff: 2s
            """
        try yaml.write(toFile: dir + "/p.yaml", atomically: true, encoding: .utf8)
        let root = try ConfigSection.load(file: dir + "/p.yaml", environment: [:])
        let c = try IngestConfiguration.read(root: root, section: try root.section("ingest"), merchants: TestIngest.merchants, amqp: nil)
        try root.finish()
        #expect(c.stripeAPI?.apiKey == "sk_test_fromfile123")
        #expect(c.stripeAPI?.baseURL == "http://127.0.0.1:1")
        #expect(c.stripeAPI?.backoffMS == 2000)
        #expect(c.stripeAPI?.feeStatePath == dir + "/stripe-fees.sqlite")
    }
}
