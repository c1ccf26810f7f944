import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus

/// The `crm-sync` handler: customer state in SQLite (`CRMState`), each change pushed through the
/// configured connector as the runtime's journaled effect, and
/// `GET /customers/{id}?merchant={merchant}` on the admin port (bearer token required).
///
/// Configuration (section `crm-sync`, besides the runtime's keys):
/// - `admin_token_file` (path, none): the bearer token that `GET /customers/…` requires
///   (DESIGN §1, `AdminToken`); without it customer data is not served (403)
/// - `connector`: `sandbox` (default), `http`, `salesforce` or `hubspot`
/// - `crm_file`: the sandbox's JSON-lines file, default `<state_dir>/crm.jsonl`
/// - `timeout` (duration, 10s): HTTP timeout per call
/// - `max_retry_after` (duration, 30s): the longest `Retry-After` pause honoured before a call
/// - `http:`, `salesforce:`, `hubspot:`: the connector's own settings and field mappings
///   (see `HTTPConnector`, `SalesforceConnector`, `HubSpotConnector`, `FieldMapping`)
public struct CRMHandler: WorkerHandler {
    public typealias Effect = CRMChange

    public let connector: any CRMConnector
    public let adminToken: AdminToken
    let logger: Logger
    /// The newest version of each customer state the CRM is known to have (this process, the
    /// customers seen lately: `RecentVersions` says why forgetting the others is safe).
    let pushed: Locked<RecentVersions>
    /// The worker's store (set by `attach`): where a customer state `pushed` does not hold is read.
    let store = Locked<Store?>(nil)
    let gate = KeyGate()
    /// Whether the start-up checks on the database ran (the first `apply`).
    let checkedStore = Locked(false)

    public init(
        connector: any CRMConnector, adminToken: AdminToken = AdminToken(token: nil, key: "crm-sync.admin_token_file"),
        logger: Logger = Logger(label: "payfleet.crm-sync"),
        batchSize: Int = RuntimeConfiguration.defaultBatchSize
    ) {
        self.connector = connector
        self.adminToken = adminToken
        self.logger = logger
        pushed = Locked(RecentVersions(batchSize: batchSize))
    }

    /// Builds the handler from `crm-sync:` (and `state_dir` of the root).
    public init(section s: ConfigSection, root: ConfigSection, logger: Logger) throws(ConfigError) {
        let kind = try s.string("connector", default: "sandbox")
        // The worker's own directory (`<section>.state_dir`) where production gives each process one.
        let stateDir = try s.string("state_dir", default: try root.stateDir())
        let file = try s.string("crm_file", default: (stateDir as NSString).appendingPathComponent("crm.jsonl"))
        let timeout = try s.durationMS("timeout", default: 10_000)
        guard timeout > 0 else { throw ConfigError(key: s.dotted("timeout"), message: "must be positive") }
        let maxRetryAfter = try s.durationMS("max_retry_after", default: 30_000)
        let transport = HTTPTransport(timeout: Double(timeout) / 1000, maxRetryAfter: Double(maxRetryAfter) / 1000)
        let connector: any CRMConnector
        switch kind {
        case "sandbox":
            do { connector = try SandboxConnector(path: file) } catch {
                throw ConfigError(key: s.dotted("crm_file"), message: "cannot create '\(file)': \(error)")
            }
        case "http": connector = try HTTPConnector.read(try s.section("http"), transport: transport)
        case "salesforce": connector = try SalesforceConnector(try s.section("salesforce"), transport: transport)
        case "hubspot": connector = try HubSpotConnector(try s.section("hubspot"), transport: transport)
        default:
            throw ConfigError(key: s.dotted("connector"), message: "unknown connector '\(kind)' (sandbox, http, salesforce, hubspot)")
        }
        // Settings of connectors not chosen may stay in the file (switching back and forth).
        s.ignore(["http", "salesforce", "hubspot"])
        let token = try AdminToken.read(s)
        if !token.isConfigured {
            logger.notice(
                "GET /customers is disabled: no admin token", metadata: [LogKey.configKey: "\(token.key)"])
        }
        if let http = connector as? HTTPConnector, !http.customers.url.fields.contains("merchant_id") {
            // Two merchants may use the same customer id: a CRM keyed by customer id alone
            // merges them. Not refused (one CRM per merchant is a valid set-up), but said.
            logger.warning(
                "the customers URL has no {merchant_id}: customers of different merchants with the same id share a CRM record",
                metadata: [LogKey.configKey: "\(s.dotted("http"))"])
        }
        self.init(connector: connector, adminToken: token, logger: logger, batchSize: try RuntimeConfiguration.batchSize(s))
    }

    public var migrations: [Migration] { CRMSchema.migrations }

    /// The sandbox connector appends to a local file (its writes grouped under one fsync): a
    /// whole batch at once. A CRM's API gets `effect_concurrency` (8) calls at a time.
    public var localEffectConcurrency: Int? { connector is SandboxConnector ? 256 : nil }

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> CRMChange? {
        if !checkedStore.current {
            checkedStore.withLock { $0 = true }
            let shared = try CRMState.sharedProfilesCleared(db)
            if shared > 0 {
                logger.warning(
                    "customer profiles shared by several merchants before migration crm.2 were cleared; each refills from its merchant's next event",
                    metadata: [LogKey.crmProfilesCleared: "\(shared)"])
            }
        }
        if CRMState.noCustomerEffect.contains(event.type) {
            // Not bound to crm-sync; arrives only by a replay. Acknowledged, said, not booked.
            logger.info(
                "event changes no customer; acknowledged without a CRM change",
                metadata: [LogKey.eventID: "\(event.id)", LogKey.eventType: "\(event.type.rawValue)"])
            return nil
        }
        guard let change = try CRMState.apply(event, db: db) else { return nil }
        // Seed what the CRM already has from the database for a state not held (new in this
        // process, or forgotten by `RecentVersions`); afterwards this process's pushes raise it.
        try seed(change.customers, db: db)
        return change
    }

    public func attach(store: Store, registry: PrometheusCollectorRegistry) async throws {
        self.store.withLock { $0 = store }
    }

    /// What the CRM has of each state `pushed` does not hold (new in this process, or forgotten),
    /// from `crm_balances.pushed_version`.
    func seed(_ states: [CustomerSnapshot], db: SQLiteConnection) throws {
        for s in states where pushed.withLock({ $0[s.key] }) == nil {
            let v = try db.queryOne(
                "SELECT pushed_version FROM crm_balances WHERE customer_id = ? AND merchant_id = ? AND currency = ?",
                [.text(s.customerID), .text(s.merchantID), .text(s.currency)])?.int(0) ?? 0
            pushed.withLock { $0.raise(s.key, to: v) }
        }
    }

    public func perform(_ change: CRMChange, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws {
        // One push at a time per customer, so an older state never lands after a newer one.
        let keys = Array(Set(change.customers.map(\.customerKey))).sorted()
        await gate.acquire(keys)
        do {
            // A redelivered or retried change reaches here without an `apply`: a state this
            // process does not hold (restarted, or forgotten) is read first, so an older state
            // never goes out over a newer one the CRM already has.
            if change.customers.contains(where: { s in pushed.withLock { $0[s.key] } == nil }), let store = store.current {
                let states = change.customers
                try await store.withConnection { db in try seed(states, db: db) }
            }
            let fresh = change.customers.filter { s in s.version > (pushed.withLock { $0[s.key] } ?? 0) }
            if !fresh.isEmpty || !change.payments.isEmpty {
                try await connector.push(change, customers: fresh, outcomeUnknown: outcomeUnknown)
            }
            pushed.withLock { m in for s in fresh { m.raise(s.key, to: s.version) } }
        } catch {
            await gate.release(keys)
            throw error
        }
        await gate.release(keys)
    }

    public func completed(_ change: CRMChange, event: PaymentEvent, db: SQLiteConnection) throws {
        try CRMState.markPushed(db, change.customers)
    }

    /// `GET /customers/{id}?merchant={merchant}`: one merchant's customer (a customer id alone
    /// names nobody: two merchants may use the same one). Bearer token first, then the merchant.
    public func adminRoutes(_ router: Router<BasicRequestContext>, store: Store) {
        let token = adminToken
        router.get("/customers/:id") { request, context -> Response in
            if let refusal = token.refusal(request) { return refusal }
            // The router hands the path segment over still percent-encoded (`cus%201%2Fx`).
            guard let id = (context.parameters.get("id") ?? "").removingPercentEncoding, !id.isEmpty else {
                return Self.json(.badRequest, ["error": ["code": "invalid_id", "message": "the customer id is not percent-encoded UTF-8"]])
            }
            guard let merchant = request.uri.queryParameters.get("merchant"), !merchant.isEmpty else {
                return Self.json(
                    .badRequest,
                    ["error": ["code": "merchant_required", "message": "query parameter merchant is required: /customers/{id}?merchant={merchant}"]])
            }
            let doc: Data?
            do {
                doc = try await store.withConnection { db in try CustomerView.json(db, merchant: merchant, customer: id) }
            } catch {
                return Self.json(.serviceUnavailable, ["error": ["code": "unavailable", "message": "database: \(error)"]])
            }
            guard let doc else {
                return Self.json(.notFound, ["error": ["code": "not_found", "message": "no such customer of this merchant"]])
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: doc)))
        }
    }

    static func json(_ status: HTTPResponse.Status, _ o: [String: Any]) -> Response {
        let d = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: d)))
    }
}

/// Mutual exclusion per key for async work (keys taken in sorted order: no deadlock).
actor KeyGate {
    private var busy = Set<String>()
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    func acquire(_ keys: [String]) async {
        for k in keys {
            while busy.contains(k) {
                await withCheckedContinuation { c in waiters[k, default: []].append(c) }
            }
            busy.insert(k)
        }
    }

    func release(_ keys: [String]) {
        for k in keys {
            busy.remove(k)
            if var w = waiters[k], !w.isEmpty {
                let c = w.removeFirst()
                waiters[k] = w.isEmpty ? nil : w
                c.resume()
            }
        }
    }
}
