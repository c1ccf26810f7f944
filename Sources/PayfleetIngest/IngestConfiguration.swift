import Foundation
import PayfleetAMQP
import PayfleetCore

/// Settings of the `ingest` process, read from the `ingest:` section of `config/payfleet.yaml`.
///
/// Keys (all optional unless noted):
/// - `host` (string, `127.0.0.1`), `port` (int, 8080; 0 = any free port)
/// - `body_limit` (int bytes, 1048576): larger bodies answer 413
/// - `max_depth` (int, 32): JSON nesting limit (400 beyond it)
/// - `state_file` (string, `<state_dir>/ingest.sqlite`): the outbox
/// - `relay_batch` (int, 500): rows published per confirm round
/// - `retention` (duration, `35d`): sent outbox rows, records of unpublished events and API
///   idempotency keys older than this are pruned (in chunks, once a `prune_interval`, default
///   `1m`); unsent rows never are. Keep it at least the workers' `processed_retention` and
///   longer than any provider's retry horizon: an event redelivered after it is applied again
/// - `benchmark_no_outbox` (bool, false): answer 202 without committing — only to measure the
///   HTTP/verification ceiling in a benchmark; never in production (nothing is kept or published)
/// - `stripe.webhook_secrets` (list of `whsec_…`) or `stripe.webhook_secrets_file` (one per line);
///   `stripe.tolerance` (duration, 300s); `stripe.default_merchant` (merchant id for events
///   without a Connect `account`)
/// - `stripe.api_key_file` (or `stripe.api_key`) and the other `stripe.api_*` / `stripe.fee_*`
///   keys of `StripeAPIConfiguration`: with a key, the fee of each succeeded charge and refund is
///   fetched from its balance transaction and posted as `fee.assessed`
/// - `adyen.hmac_key` / `adyen.hmac_key_file` (hex, secret); `adyen.capture` (`auto` | `manual`, auto)
/// - `standard_webhooks` (list of `{source, secret | secret_file, tolerance}`), secrets `whsec_<base64>`
/// - `api_keys` (list of `{sha256, source, merchants, types}`): SHA-256 hex of the bearer key,
///   the `source.provider` it may send as, merchant ids (`"*"` = any), event types (absent = any)
public struct IngestConfiguration: Sendable {
    public enum Capture: String, Sendable { case auto, manual }

    public struct APIKey: Sendable {
        public var sha256: String
        public var source: String
        public var merchants: Set<String>
        public var types: Set<String>?
        public init(sha256: String, source: String, merchants: Set<String>, types: Set<String>? = nil) {
            self.sha256 = sha256.lowercased()
            self.source = source
            self.merchants = merchants
            self.types = types
        }
    }

    public var host = "127.0.0.1"
    public var port = 8080
    public var bodyLimit = 1 << 20
    public var maxDepth = 32
    public var statePath: String
    public var relayBatch = 500
    public var retentionSeconds: Int64 = 35 * 86_400
    public var pruneIntervalSeconds = 60
    public var benchmarkNoOutbox = false
    public var stripeSecrets: [String] = []
    public var stripeToleranceSeconds = 300
    public var stripeDefaultMerchant: String?
    /// Stripe's REST API (fees of balance transactions); nil without `stripe.api_key`.
    public var stripeAPI: StripeAPIConfiguration?
    public var adyenHMACKeyHex: String?
    public var adyenCapture: Capture = .auto
    /// source name → `whsec_` secrets
    public var standardWebhookSecrets: [String: [String]] = [:]
    public var standardToleranceSeconds = 300
    /// source name → tolerance in seconds (default `standardToleranceSeconds`)
    public var standardTolerances: [String: Int] = [:]
    /// Seconds a keep-alive connection may stay idle before ingest closes it.
    public var idleTimeoutSeconds = 30
    /// Seconds a request body may take to arrive (slow senders answer 408).
    public var bodyTimeoutSeconds = 15
    public var apiKeys: [APIKey] = []
    public var merchants: [Merchant] = []
    /// nil: no relay (unit tests); events stay in the outbox.
    public var amqp: AMQPConfiguration?

    public init(statePath: String) { self.statePath = statePath }

    /// `ingest.state_file`, else `<state_dir>/ingest.sqlite` (the outbox and the dedupe table).
    public static func statePath(root: ConfigSection, section s: ConfigSection) throws(ConfigError) -> String {
        try s.string("state_file", default: (try root.stateDir() as NSString).appendingPathComponent("ingest.sqlite"))
    }

    /// Reads `ingest:` plus the shared `broker:`, `state_dir` and `merchants:` (passed in).
    public static func read(
        root: ConfigSection, section s: ConfigSection, merchants: [Merchant], amqp: AMQPConfiguration?
    ) throws(ConfigError) -> IngestConfiguration {
        let stateDir = try root.stateDir()
        var c = IngestConfiguration(statePath: try statePath(root: root, section: s))
        c.host = try s.string("host", default: c.host)
        c.port = try s.int("port", default: 8080, range: 0...65535)
        c.bodyLimit = try s.int("body_limit", default: c.bodyLimit, range: 1024...(64 << 20))
        c.maxDepth = try s.int("max_depth", default: 32, range: 4...512)
        c.relayBatch = try s.int("relay_batch", default: 500, range: 1...5000)
        c.benchmarkNoOutbox = try s.bool("benchmark_no_outbox", default: false)
        c.retentionSeconds = Int64(try s.durationMS("retention", default: 35 * 86_400_000) / 1000)
        guard c.retentionSeconds >= 86_400 else { throw ConfigError(key: s.dotted("retention"), message: "must be at least 1d") }
        c.pruneIntervalSeconds = try s.durationMS("prune_interval", default: 60_000) / 1000
        guard c.pruneIntervalSeconds >= 1 else { throw ConfigError(key: s.dotted("prune_interval"), message: "must be at least 1s") }
        c.idleTimeoutSeconds = try s.durationMS("idle_timeout", default: 30_000) / 1000
        c.bodyTimeoutSeconds = try s.durationMS("body_timeout", default: 15_000) / 1000
        guard c.idleTimeoutSeconds >= 1 else { throw ConfigError(key: s.dotted("idle_timeout"), message: "must be at least 1s") }
        guard c.bodyTimeoutSeconds >= 1 else { throw ConfigError(key: s.dotted("body_timeout"), message: "must be at least 1s") }
        c.merchants = merchants
        c.amqp = amqp

        let stripe = try s.section("stripe")
        if let list = try stripe.stringList("webhook_secrets") {
            // An empty secret would let anyone sign: HMAC with an empty key is public.
            for (i, secret) in list.enumerated() where secret.trimmingCharacters(in: .whitespaces).count < 8 {
                throw ConfigError(key: stripe.dotted("webhook_secrets") + "[\(i)]", message: "must not be empty (at least 8 characters)")
            }
            c.stripeSecrets = list
        } else if let text = try stripe.secret("webhook_secrets") {
            c.stripeSecrets = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
            for secret in c.stripeSecrets where secret.count < 8 {
                throw ConfigError(key: stripe.dotted("webhook_secrets"), message: "a secret shorter than 8 characters")
            }
        }
        c.stripeToleranceSeconds = try stripe.durationMS("tolerance", default: 300_000) / 1000
        c.stripeDefaultMerchant = try stripe.string("default_merchant")
        c.stripeAPI = try StripeAPIConfiguration.read(stripe, stateDir: stateDir)
        if let d = c.stripeDefaultMerchant, !merchants.contains(where: { $0.id == d }) {
            throw ConfigError(key: stripe.dotted("default_merchant"), message: "no merchant '\(d)' under merchants:")
        }

        let adyen = try s.section("adyen")
        if let key = try adyen.secret("hmac_key") {
            guard Hex.decode(key) != nil, !key.isEmpty else {
                throw ConfigError(key: adyen.dotted("hmac_key"), message: "must be a hexadecimal key")
            }
            c.adyenHMACKeyHex = key
        }
        let capture = try adyen.string("capture", default: "auto")
        guard let cap = Capture(rawValue: capture) else {
            throw ConfigError(key: adyen.dotted("capture"), message: "'\(capture)' is not auto or manual")
        }
        c.adyenCapture = cap

        for sw in try s.sectionList("standard_webhooks") {
            let source = try sw.requiredString("source")
            guard !PaymentEvent.reservedSources.contains(source.lowercased()) else {
                throw ConfigError(key: sw.dotted("source"), message: "'\(source)' is reserved for its own route")
            }
            guard let secret = try sw.secret("secret") else {
                throw ConfigError(key: sw.dotted("secret"), message: "required value missing")
            }
            guard StandardWebhooks.key(fromSecret: secret) != nil else {
                throw ConfigError(key: sw.dotted("secret"), message: "must be whsec_ followed by base64")
            }
            c.standardWebhookSecrets[source, default: []].append(secret)
            c.standardTolerances[source] = try sw.durationMS("tolerance", default: 300_000) / 1000
        }

        for k in try s.sectionList("api_keys") {
            let hash = try k.requiredString("sha256").lowercased()
            guard hash.count == 64, Hex.decode(hash) != nil else {
                throw ConfigError(key: k.dotted("sha256"), message: "must be 64 hex digits (SHA-256 of the key)")
            }
            let merchantsList = try k.stringList("merchants") ?? []
            guard !merchantsList.isEmpty else {
                throw ConfigError(key: k.dotted("merchants"), message: "list the merchant ids (or \"*\")")
            }
            for (i, m) in merchantsList.enumerated() where m != "*" && !merchants.contains(where: { $0.id == m }) {
                throw ConfigError(key: k.dotted("merchants") + "[\(i)]", message: "no merchant '\(m)' under merchants:")
            }
            let types = try k.stringList("types")
            for (i, t) in (types ?? []).enumerated() where PaymentEvent.EventType(rawValue: t) == nil {
                throw ConfigError(key: k.dotted("types") + "[\(i)]", message: "'\(t)' is not an event type")
            }
            let source = try k.requiredString("source")
            guard !PaymentEvent.reservedSources.contains(source.lowercased()), !source.isEmpty else {
                throw ConfigError(key: k.dotted("source"), message: "'\(source)' is reserved for its own route")
            }
            c.apiKeys.append(APIKey(
                sha256: hash, source: source, merchants: Set(merchantsList),
                types: types.map(Set.init)))
        }
        return c
    }
}
