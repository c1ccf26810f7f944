import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import PayfleetTestKit
import Testing

/// Collects every log line ingest writes, to check that no card number reaches a log.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return lines.joined(separator: "\n") }
}

struct CapturingLogHandler: LogHandler {
    let sink: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        sink.append("\(event.level) \(event.message) \(metadata.merging(event.metadata ?? [:]) { $1 })")
    }
}

final class CorpusResults: @unchecked Sendable {
    private let lock = NSLock()
    private var classes: [String: Int] = [:]
    private var answers = ""
    func set(_ c: [String: Int], _ a: String) { lock.lock(); classes = c; answers = a; lock.unlock() }
    func get() -> ([String: Int], String) { lock.lock(); defer { lock.unlock() }; return (classes, answers) }
}

/// A generated hostile corpus (issue 15): 10,000 requests over the four routes, hostile cases
/// mixed with valid traffic, through ingest and its relay into a real broker. Asserts no 5xx,
/// every valid event published exactly once, and no card number in any file, log line,
/// message or answer.
@Suite(.serialized) struct HostileCorpusTests {
    static let cards = ["4111111111111111", "4242 4242 4242 4242", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]

    @Test func tenThousandHostileAndValidRequests() async throws {
        let amqp = try AMQPConfiguration(url: TestEnvironment.amqpURL)
        let queue = TestEnvironment.uniqueName("ingest-corpus")
        let s = try await AMQPSession.connect(amqp)
        try await s.declare { d in
            try d.exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic"))
            try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")]))
            try d.bind(BindingSpec(source: Topology.eventsExchange, destination: queue, destinationType: .queue, routingKey: "#"))
        }
        await s.close()
        let log = CapturedLog()
        let logger = Logger(label: "ingest-corpus") { _ in CapturingLogHandler(sink: log) }
        let config = TestIngest.configuration(amqp: amqp)
        let total = Int(ProcessInfo.processInfo.environment["PAYFLEET_CORPUS_REQUESTS"] ?? "10000") ?? 10_000
        let results = CorpusResults()
        let app = try await buildApplication(configuration: config, logger: logger)
        try await app.test(.router) { client in
            var rng = SplitMix64(seed: 15_2026)
            var classes: [String: Int] = [:]
            var answers = ""
            defer { results.set(classes, answers) }
            for n in 0..<total {
                let (uri, headers, body, label) = Self.request(n, &rng)
                let r = try await client.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(bytes: body))
                classes["\(label) \(r.status.code)", default: 0] += 1
                #expect(r.status.code < 500, "\(label): \(r.status.code) \(String(buffer: r.body))")
                answers += String(buffer: r.body)
            }
            // The relay drains everything accepted.
            let deadline = ContinuousClock.now + .seconds(120)
            var pending = -1
            while ContinuousClock.now < deadline {
                pending = try Self.pendingRows(config)
                if pending == 0 { break }
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(pending == 0)
        }
        let (classes, answers) = results.get()
        let published = try TestIngest.outbox(config).count
        let c = try await AMQPSession.connect(amqp)
        var ids = Set<String>()
        var bodies = ""
        var fetched = 0
        while let m = try await c.get(queue: queue) {
            fetched += 1
            ids.insert(m.message.messageID ?? "")
            bodies += String(decoding: m.message.body, as: UTF8.self)
            for (_, v) in m.message.headers { bodies += " \(v.stringValue ?? "")" }
        }
        _ = try? await c.declare { try $0.delete(queue: queue) }
        await c.close()
        print("hostile corpus: \(total) requests; answers per route and status: \(classes.sorted { $0.key < $1.key })")
        print("hostile corpus: \(published) events accepted, \(fetched) messages published, \(ids.count) distinct")
        #expect(published > total / 10)
        // Every accepted event is published; the relay is at least once (a confirm that times out
        // under load is republished, consumers dedupe by id), so a few copies may arrive twice.
        #expect(ids.count == published)
        #expect(fetched >= published && fetched - published <= max(5, published / 100), "\(fetched - published) republished")
        // No card number anywhere: files, messages, answers, logs.
        let dir = (config.statePath as NSString).deletingLastPathComponent
        var files = Data()
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
            files.append(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)))
        }
        for card in Self.cards {
            let digits = card.filter(\.isNumber)
            #expect(files.range(of: Data(card.utf8)) == nil && files.range(of: Data(digits.utf8)) == nil, "\(card) in a file")
            #expect(!bodies.contains(card) && !bodies.contains(digits), "\(card) in a message")
            #expect(!answers.contains(card) && !answers.contains(digits), "\(card) in an answer")
            #expect(!log.text.contains(card) && !log.text.contains(digits), "\(card) in the log")
        }
    }

    static func pendingRows(_ config: IngestConfiguration) throws -> Int {
        let db = try SQLiteConnection(path: config.statePath, readOnly: true)
        return Int(try db.queryOne("SELECT count(*) FROM outbox WHERE sent_at IS NULL")?.int(0) ?? -1)
    }

    /// One request of the corpus: route, headers, body and a label for the counts.
    static func request(_ n: Int, _ rng: inout SplitMix64) -> (String, HTTPFields, [UInt8], String) {
        let card = cards[Int(rng.next() % UInt64(cards.count))]
        let hostile = rng.next() % 3 != 0  // two thirds hostile
        let kind = Int(rng.next() % 12)
        switch n % 4 {
        case 0:  // Stripe
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            payout["id"] = "po_c\(n)"
            payout["amount"] = 100 + n
            var raw: [UInt8]
            if hostile {
                switch kind {
                case 0: payout["metadata"] = ["note": "card \(card) 12/25"]
                case 1: payout["metadata"] = [card: "x"]
                case 2: payout["metadata"] = ["source": "tok_\(card.filter(\.isNumber))"]
                case 3: payout["description"] = "ref 1 \(card.filter(\.isNumber))"
                case 4: payout["amount"] = 1_000_000_000_000_001
                case 5: payout["currency"] = "xxx"
                default: payout["statement_descriptor"] = card
                }
                raw = TestIngest.stripeEvent(id: "evt_c\(n)", type: "payout.paid", object: payout)
                if kind == 6 {
                    let t = String(decoding: raw, as: UTF8.self)
                    raw = Array(t.replacingOccurrences(of: "\"metadata\":{", with: "\"metadata\":{\"a\":\"\(card)\",\"a\":\"x\",").utf8)
                }
                if kind == 7 {
                    return ("/webhooks/stripe", TestIngest.stripeHeaders(raw, at: Int64.min), raw, "stripe")
                }
                if kind == 8 { return ("/webhooks/stripe", TestIngest.stripeHeaders(raw, secret: "whsec_wrong_secret"), raw, "stripe") }
            } else {
                raw = TestIngest.stripeEvent(id: "evt_c\(n)", type: "payout.paid", object: payout)
            }
            return ("/webhooks/stripe", TestIngest.stripeHeaders(raw), raw, "stripe")
        case 1:  // Adyen
            var extra: [String: String] = [:]
            var reference = "order-\(n)"
            var value = Int64(500 + n)
            if hostile {
                switch kind {
                case 0: extra["metadata.note"] = card
                case 1: reference = "ref \(card) end"
                case 2: extra["shopperEmail"] = "a\u{0}b@example.com"
                case 3: value = Int64.max
                case 4: extra["metadata.\(card)"] = "x"
                default: extra["shopperReference"] = String(repeating: "s", count: 300)
                }
            }
            var item = TestIngest.adyenItem(psp: "PSPC\(n)", code: "AUTHORISATION", value: value, reference: reference, extra: extra)
            if hostile && kind == 9 { item["merchantReference"] = "tampered" }  // signature no longer verifies
            return ("/webhooks/adyen", [.contentType: "application/json"], TestIngest.adyenBody([item]), "adyen")
        case 2:  // Standard Webhooks (billing)
            var fields: [String: Any] = [:]
            if hostile {
                switch kind {
                case 0: fields["reference"] = "\(card) 123"
                case 1: fields["metadata"] = [card: "x"]
                case 2: fields["type"] = "settlement.day_closed"
                case 3: fields["occurred_at"] = "1970-01-01T00:00:00Z"
                case 4: fields["customer"] = ["id": String(repeating: "c", count: 5000)]
                case 5: fields["amount"] = ["value": -1, "currency": "GBP"]
                default: fields["customer"] = ["id": "cus_\u{0}\(n)"]
                }
            }
            let body = canonical(n, provider: "billing", fields)
            let ts = hostile && kind == 7 ? Int64.max : Int64(Date().timeIntervalSince1970)
            let id = "msg_c\(n)"
            var path = "/webhooks/standard/billing"
            if hostile && kind == 8 { path = "/webhooks/standard/unknown\(n)" }
            let h: HTTPFields = [
                HTTPField.Name("webhook-id")!: id, HTTPField.Name("webhook-timestamp")!: String(ts),
                HTTPField.Name("webhook-signature")!:
                    StandardWebhooks.sign(id: id, timestamp: ts, payload: body, secret: TestIngest.standardSecret),
            ]
            return (path, h, body, "standard")
        default:  // Canonical API (phone)
            var fields: [String: Any] = [:]
            var idem = "idem-c\(n)"
            var h: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(TestIngest.apiKey)"]
            if hostile {
                switch kind {
                case 0: fields["reference"] = "ref 1 \(card)"
                case 1: idem = card
                case 2: h[HTTPField.Name("traceparent")!] = "00-\(card.filter(\.isNumber))\(String(repeating: "1", count: 32 - card.filter(\.isNumber).count))-1111111111111111-01"
                case 3: fields["fee"] = ["value": 5000, "currency": "GBP"]
                case 4: fields["metadata"] = Dictionary(uniqueKeysWithValues: (0..<60).map { ("k\($0)", "v") })
                case 5: fields["payment"] = ["id": "p\(n)", "card": ["last4": card]]
                case 6: fields["merchant_id"] = "m_globex"
                default: fields["occurred_at"] = "2999-01-01T00:00:00Z"
                }
            }
            h[HTTPField.Name("Idempotency-Key")!] = idem
            var body = canonical(n, provider: "phone", fields)
            if hostile && kind == 8 {
                let t = String(decoding: body, as: UTF8.self)
                body = Array(("{\"reference\":\"\(card)\"," + t.dropFirst()).utf8)
            }
            if hostile && kind == 9 { body = Array(String(repeating: "[", count: 100).utf8) }
            return ("/v1/events", h, body, "api")
        }
    }

    static func canonical(_ n: Int, provider: String, _ fields: [String: Any]) -> [UInt8] {
        var e = (try! JSONSerialization.jsonObject(with: Data(TestIngest.canonical(eventID: "c\(n)", provider: provider))))
            as! [String: Any]
        for (k, v) in fields { e[k] = v }
        return Array(try! JSONSerialization.data(withJSONObject: e, options: [.sortedKeys]))
    }
}
