import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PayfleetAMQP
import PayfleetCore
import PayfleetIngest
import PayfleetStore
import PayfleetTestKit
import Crypto

/// Shared settings, fixtures and helpers of the ingest tests.
enum TestIngest {
    static let stripeSecret = "whsec_test_current_secret"
    static let stripeOldSecret = "whsec_test_previous_secret"
    static let adyenKey = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
    static let standardSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static let apiKey = "pf_test_phone_key"
    static let billingKey = "pf_test_billing_key"

    static let merchants = [
        Merchant(id: "m_acme", stripeAccount: "acct_1Acme", adyenMerchantAccount: "AcmeLtdECOM"),
        Merchant(id: "m_globex", stripeAccount: "acct_1Globex", adyenMerchantAccount: "GlobexECOM"),
    ]

    static func sha256Hex(_ s: String) -> String {
        SHA256.hash(data: Array(s.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func configuration(amqp: AMQPConfiguration? = nil, capture: IngestConfiguration.Capture = .auto)
        -> IngestConfiguration
    {
        var c = IngestConfiguration(statePath: TestEnvironment.makeTempDir("ingest") + "/ingest.sqlite")
        c.port = 0
        c.bodyLimit = 64 * 1024
        c.merchants = merchants
        c.stripeSecrets = [stripeSecret, stripeOldSecret]
        c.stripeDefaultMerchant = "m_acme"
        c.adyenHMACKeyHex = adyenKey
        c.adyenCapture = capture
        c.standardWebhookSecrets = ["billing": [standardSecret]]
        c.apiKeys = [
            .init(sha256: sha256Hex(apiKey), source: "phone", merchants: ["m_acme"]),
            .init(sha256: sha256Hex(billingKey), source: "billing", merchants: ["*"], types: ["invoice.issued"]),
        ]
        c.amqp = amqp
        return c
    }

    static func withApp(
        _ config: IngestConfiguration = configuration(),
        _ body: @escaping @Sendable (any TestClientProtocol, IngestConfiguration) async throws -> Void
    ) async throws {
        let app = try await buildApplication(configuration: config, logger: Logger(label: "ingest-test"))
        try await app.test(.router) { client in try await body(client, config) }
    }

    /// Published-to-be events in the outbox, in order.
    static func outbox(_ config: IngestConfiguration) throws -> [PaymentEvent] {
        let db = try SQLiteConnection(path: config.statePath, readOnly: true)
        return try db.query("SELECT body FROM outbox ORDER BY seq").map { row in
            try EventCodec.decoder().decode(PaymentEvent.self, from: Data(row.blob(0) ?? []))
        }
    }

    static func outboxBodies(_ config: IngestConfiguration) throws -> [String] {
        let db = try SQLiteConnection(path: config.statePath, readOnly: true)
        return try db.query("SELECT body FROM outbox ORDER BY seq").map { String(decoding: $0.blob(0) ?? [], as: UTF8.self) }
    }

    static func recordedCount(_ config: IngestConfiguration) throws -> Int {
        let db = try SQLiteConnection(path: config.statePath, readOnly: true)
        return Int(try db.queryOne("SELECT count(*) FROM recorded")?.int(0) ?? 0)
    }

    // MARK: Stripe fixtures (Stripe's published API objects)

    nonisolated(unsafe) static let fixtures: [String: Any] = {
        let url = Bundle.module.url(forResource: "stripe-objects", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()

    static func object(_ name: String) -> [String: Any] { fixtures[name] as! [String: Any] }

    /// A Stripe Event (the fixture's envelope) carrying `object`.
    static func stripeEvent(id: String, type: String, object: [String: Any], account: String? = nil) -> [UInt8] {
        var e = self.object("event")
        e["id"] = id
        e["type"] = type
        e["created"] = 1_732_443_300
        e["data"] = ["object": object]
        if let account { e["account"] = account }
        return Array(try! JSONSerialization.data(withJSONObject: e, options: [.sortedKeys]))
    }

    static func stripeHeaders(_ body: [UInt8], secret: String = stripeSecret, at t: Int64 = Int64(Date().timeIntervalSince1970))
        -> HTTPFields
    {
        [HTTPField.Name("Stripe-Signature")!: StripeSignature.sign(payload: body, secret: secret, timestamp: t),
         .contentType: "application/json"]
    }

    // MARK: Adyen

    static func adyenItem(
        psp: String, code: String, success: Bool = true, value: Int64 = 1000, currency: String = "EUR",
        original: String? = nil, reference: String = "order-1", account: String = "AcmeLtdECOM",
        extra: [String: String] = [:], key: String = adyenKey
    ) -> [String: Any] {
        var item: [String: Any] = [
            "pspReference": psp, "eventCode": code, "success": success ? "true" : "false",
            "merchantAccountCode": account, "merchantReference": reference,
            "amount": ["value": value, "currency": currency], "eventDate": "2026-11-24T10:15:00+01:00",
            "paymentMethod": "visa",
        ]
        if let original { item["originalReference"] = original }
        var additional: [String: Any] = ["cardSummary": "1111", "shopperReference": "cus_ada"]
        for (k, v) in extra { additional[k] = v }
        item["additionalData"] = additional
        additional["hmacSignature"] = AdyenHMAC.sign(item, keyHex: key)!
        item["additionalData"] = additional
        return item
    }

    static func adyenBody(_ items: [[String: Any]]) -> [UInt8] {
        let n: [String: Any] = ["live": "false", "notificationItems": items.map { ["NotificationRequestItem": $0] }]
        return Array(try! JSONSerialization.data(withJSONObject: n, options: [.sortedKeys]))
    }

    // MARK: Canonical

    static func canonical(
        eventID: String = "call-1", provider: String = "phone", merchant: String = "m_acme", type: String = "payment.succeeded",
        metadata: [String: String] = [:], currency: String = "GBP", id: String? = nil
    ) -> [UInt8] {
        // DESIGN §2: integrators (the phone platform, the billing system) send no `id`.
        var e: [String: Any] = [
            "schema": "payfleet.event/v1", "type": type, "occurred_at": "2026-11-24T10:15:00Z",
            "source": ["provider": provider, "event_id": eventID], "merchant_id": merchant,
            "customer": ["id": "cus_123", "name": "Ada Lovelace"],
            "payment": ["id": "pay_\(eventID)", "channel": "phone", "method": "card", "card": ["brand": "visa", "last4": "4242"]],
            "amount": ["value": 1999, "currency": currency], "invoice_id": "inv_77", "metadata": metadata,
        ]
        if let id { e["id"] = id }
        return Array(try! JSONSerialization.data(withJSONObject: e, options: [.sortedKeys]))
    }

    static func json(_ r: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView))) as? [String: Any] ?? [:]
    }

    static func errorCode(_ r: TestResponse) -> String? { (json(r)["error"] as? [String: Any])?["code"] as? String }
    static func errorMessage(_ r: TestResponse) -> String { (json(r)["error"] as? [String: Any])?["message"] as? String ?? "" }

    /// Runs python3 with `script`; nil (skip) when python3 or the provider package is missing.
    static func python(_ script: String, needs module: String) -> String? {
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", "import \(module)"]
        check.standardError = FileHandle.nullDevice
        check.standardOutput = FileHandle.nullDevice
        guard (try? check.run()) != nil else { return nil }
        check.waitUntilExit()
        guard check.terminationStatus == 0 else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        let out = Pipe()
        p.standardOutput = out
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
