import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetWorker

/// Where crm-sync pushes each change. `push` throws `HandlerError` (transient → retry tiers,
/// permanent → DLQ); every call carries `Idempotency-Key: <event id>`.
public protocol CRMConnector: Sendable {
    var name: String { get }
    /// Pushes the customer states in `customers` (already filtered to those the CRM does not
    /// have a newer version of) and `change.payments`.
    func push(_ change: CRMChange, customers: [CustomerSnapshot], outcomeUnknown: Bool) async throws
}

// MARK: sandbox

/// The local default: each customer change as one JSON line (DESIGN §6) appended to a file,
/// fsync'd. The last line for a customer, merchant and currency is its current state: a line
/// for an older version than one already written is skipped (the versions written are read
/// back from the file at start-up), which also makes a repeated push harmless.
public final class SandboxConnector: CRMConnector, @unchecked Sendable {
    public let name = "sandbox"
    public let path: String
    private let written: Locked<[String: Int64]>
    /// The file is written and fsync'd on the writer's own thread, pushes grouped under one fsync.
    private let writer: WriteGroups<Pending>

    public init(path: String) throws {
        self.path = path
        let written = Locked<[String: Int64]>([:])
        self.written = written
        writer = WriteGroups(name: "crm-sandbox") { Self.append($0, path: path, written: written) }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        if let data = FileManager.default.contents(atPath: path) {
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                    let c = o["customer_id"] as? String, let m = o["merchant_id"] as? String,
                    let cur = o["currency"] as? String, let v = (o["version"] as? NSNumber)?.int64Value
                else { continue }
                let k = "\(c)\u{1f}\(m)\u{1f}\(cur)"
                written.withLock { $0[k] = max($0[k] ?? 0, v) }
            }
        } else {
            FileManager.default.createFile(atPath: path, contents: nil)
        }
    }

    /// One JSON object per line, keys sorted, written directly (`JSONSerialization` with sorted
    /// keys was a third of crm-sync's time).
    public static func line(_ s: CustomerSnapshot, eventID: String) -> Data {
        var out: [UInt8] = []
        out.reserveCapacity(320)
        func key(_ k: String) {
            out.append(out.isEmpty ? UInt8(ascii: "{") : UInt8(ascii: ","))
            JSONText.string(k, into: &out)
            out.append(UInt8(ascii: ":"))
        }
        func string(_ k: String, _ v: String?) {
            key(k)
            if let v { JSONText.string(v, into: &out) } else { out.append(contentsOf: "null".utf8) }
        }
        func int(_ k: String, _ v: Int64) {
            key(k)
            out.append(contentsOf: String(v).utf8)
        }
        string("at", RFC3339.format(s.at))
        string("currency", s.currency)
        string("customer_id", s.customerID)
        int("disputed", s.disputed)
        string("event_id", eventID)
        string("last_payment_at", s.lastPaymentAt.map(RFC3339.format))
        string("last_payment_id", s.lastPaymentID)
        string("merchant_id", s.merchantID)
        int("outstanding", s.outstanding)
        int("paid", s.paid)
        int("refunded", s.refunded)
        string("status", s.status)
        int("version", s.version)
        out += [UInt8(ascii: "}"), UInt8(ascii: "\n")]
        return Data(out)
    }

    public func push(_ change: CRMChange, customers: [CustomerSnapshot], outcomeUnknown: Bool) async throws {
        try await writer.submit(Pending(change: change, customers: customers))
    }

    struct Pending: Sendable {
        let change: CRMChange
        let customers: [CustomerSnapshot]
    }

    /// Appends a group of pushes, in arrival order, with one write(2) and one fsync (group commit
    /// of the file): each `push` returns once its lines are on disk, and pushes that arrive while
    /// one fsync runs share the next. A line older than what the file already has for that
    /// customer is left out (one step with the write).
    private static func append(_ group: [Pending], path: String, written: Locked<[String: Int64]>) -> [(any Error)?] {
        var current = written.current
        var out = Data()
        for p in group {
            for s in p.customers where s.version > (current[s.key] ?? 0) {
                out.append(Self.line(s, eventID: p.change.eventID))
                current[s.key] = s.version
            }
        }
        var failure: HandlerError?
        if !out.isEmpty {
            // O_APPEND and one write(2): lines of partitions sharing the file never interleave.
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            if fd < 0 {
                failure = HandlerError.transient("SandboxFile", "cannot open \(path) for writing: errno \(errno)")
            } else {
                let n = out.withUnsafeBytes { raw in systemWrite(fd, raw.baseAddress, raw.count) }
                if n != out.count || fsync(fd) != 0 {
                    failure = HandlerError.transient("SandboxFile", "writing \(path) failed: errno \(errno)")
                }
                close(fd)
            }
        }
        if let failure { return group.map { _ in failure } }
        written.withLock { $0 = current }
        return group.map { _ in nil }
    }
}

// MARK: http

/// How a generic HTTP connector authenticates.
public enum HTTPAuth: Sendable {
    case none
    case bearer(String)
    case basic(user: String, password: String)
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`
    /// over `id.timestamp.body` with the `whsec_` secret's bytes.
    case standardWebhooks(secret: [UInt8])

    public static func read(_ s: ConfigSection) throws(ConfigError) -> HTTPAuth {
        let type = try s.string("type", default: "none")
        switch type {
        case "none": return .none
        case "bearer":
            guard let t = try s.secret("token"), !t.isEmpty else {
                throw ConfigError(key: s.dotted("token"), message: "bearer auth needs token or token_file")
            }
            return .bearer(t)
        case "basic":
            let user = try s.requiredString("username")
            guard let p = try s.secret("password") else {
                throw ConfigError(key: s.dotted("password"), message: "basic auth needs password or password_file")
            }
            return .basic(user: user, password: p)
        case "standard_webhooks":
            guard let secret = try s.secret("secret") else {
                throw ConfigError(key: s.dotted("secret"), message: "standard_webhooks auth needs secret or secret_file (whsec_…)")
            }
            let b64 = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
            guard let key = Data(base64Encoded: b64), !key.isEmpty else {
                throw ConfigError(key: s.dotted("secret"), message: "not a whsec_<base64> secret")
            }
            return .standardWebhooks(secret: Array(key))
        default:
            throw ConfigError(key: s.dotted("type"), message: "unknown auth type '\(type)' (none, bearer, basic, standard_webhooks)")
        }
    }

    func apply(to r: inout URLRequest, id: String, body: Data, now: Date = Date()) {
        switch self {
        case .none: break
        case .bearer(let t): r.setValue("Bearer \(t)", forHTTPHeaderField: "Authorization")
        case .basic(let u, let p):
            r.setValue("Basic " + Data("\(u):\(p)".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        case .standardWebhooks(let secret):
            let ts = String(Int(now.timeIntervalSince1970))
            let signed = Data("\(id).\(ts).".utf8) + body
            let mac = HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: secret))
            r.setValue(id, forHTTPHeaderField: "webhook-id")
            r.setValue(ts, forHTTPHeaderField: "webhook-timestamp")
            r.setValue("v1," + Data(mac).base64EncodedString(), forHTTPHeaderField: "webhook-signature")
        }
    }
}

/// One kind of request of the generic connector: method, URL template, body mapping.
public struct HTTPEndpoint: Sendable {
    public var method: String
    public var url: FieldTemplate
    public var mapping: FieldMapping

    public static func read(_ s: ConfigSection, kind: RecordKind) throws(ConfigError) -> HTTPEndpoint {
        let method = try s.string("method", default: "POST").uppercased()
        guard ["POST", "PUT", "PATCH"].contains(method) else {
            throw ConfigError(key: s.dotted("method"), message: "'\(method)' must be POST, PUT or PATCH")
        }
        let urlText = try s.requiredString("url")
        let template = try FieldTemplate(urlText, kind: kind, key: s.dotted("url"))
        guard let probe = URL(string: urlText.replacingOccurrences(of: "{", with: "").replacingOccurrences(of: "}", with: "")),
            let scheme = probe.scheme, ["http", "https"].contains(scheme), probe.host != nil
        else {
            throw ConfigError(key: s.dotted("url"), message: "'\(urlText)' is not an http(s) URL")
        }
        // Event data only in the path or the query: a field in the scheme, host or port would
        // let an event choose where the request goes.
        if !template.fields.isEmpty {
            let prefix = template.fixedPrefix
            guard let sep = prefix.range(of: "://"), prefix[sep.upperBound...].contains("/") else {
                throw ConfigError(
                    key: s.dotted("url"), message: "'\(urlText)': fields may only appear in the path or query, after the host")
            }
        }
        let mapping = try FieldMapping.read(s, key: "mapping", kind: kind)!
        return HTTPEndpoint(method: method, url: template, mapping: mapping)
    }
}

/// Generic JSON over HTTP(S): a request per customer change (`customers`) and optionally one
/// per payment record (`payments`), bodies built by the configured mappings.
public struct HTTPConnector: CRMConnector {
    public let name = "http"
    public let customers: HTTPEndpoint
    public let payments: HTTPEndpoint?
    public let headers: [(String, String)]
    public let auth: HTTPAuth
    public let transport: HTTPTransport

    public init(customers: HTTPEndpoint, payments: HTTPEndpoint?, headers: [(String, String)], auth: HTTPAuth, transport: HTTPTransport) {
        self.customers = customers
        self.payments = payments
        self.headers = headers
        self.auth = auth
        self.transport = transport
    }

    /// Section `crm-sync.http`: `customers:` and `payments:` ({method, url, mapping}),
    /// `headers:` (mapping), `auth:` ({type: none|bearer|basic|standard_webhooks, …}).
    public static func read(_ s: ConfigSection, transport: HTTPTransport) throws(ConfigError) -> HTTPConnector {
        guard s.has("customers") else {
            throw ConfigError(key: s.dotted("customers"), message: "required: {method, url, mapping}")
        }
        let c = try HTTPEndpoint.read(try s.section("customers"), kind: .customer)
        let p = s.has("payments") ? try HTTPEndpoint.read(try s.section("payments"), kind: .payment) : nil
        let h = try s.section("headers")
        var headers: [(String, String)] = []
        for k in h.keys {
            let lower = k.lowercased()
            guard !["authorization", "idempotency-key", "content-type"].contains(lower) else {
                throw ConfigError(key: h.dotted(k), message: "set by the connector; configure auth instead")
            }
            headers.append((k, try h.string(k) ?? ""))
        }
        let auth = try HTTPAuth.read(try s.section("auth"))
        switch auth {
        case .bearer(let t): transport.redacting([t])
        case .basic(_, let p): transport.redacting([p])
        case .none, .standardWebhooks: break
        }
        // Header values as long as a key (X-Api-Key …) are treated as credentials.
        transport.redacting(headers.map(\.1).filter { $0.count >= 12 })
        return HTTPConnector(customers: c, payments: p, headers: headers, auth: auth, transport: transport)
    }

    func request(_ e: HTTPEndpoint, record: [String: FieldValue], idempotencyKey: String) throws -> URLRequest {
        let body: Data
        let urlText: String
        do {
            body = try JSONSerialization.data(withJSONObject: try e.mapping.render(record), options: [.sortedKeys])
            urlText = try e.url.render(record)
        } catch let m as MappingError {
            throw HandlerError.permanent("Mapping", transport.redact(m.description))
        }
        guard let url = URL(string: urlText) else {
            throw HandlerError.permanent("Mapping", "URL '\(HTTPTransport.describe(URL(string: e.url.text)))' did not render to a URL")
        }
        var r = URLRequest(url: url)
        r.httpMethod = e.method
        r.httpBody = body
        r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        r.setValue(idempotencyKey, forHTTPHeaderField: "Idempotency-Key")
        for (k, v) in headers { r.setValue(v, forHTTPHeaderField: k) }
        auth.apply(to: &r, id: idempotencyKey, body: body)
        return r
    }

    public func push(_ change: CRMChange, customers snapshots: [CustomerSnapshot], outcomeUnknown: Bool) async throws {
        for (i, s) in snapshots.enumerated() {
            let key = i == 0 ? change.eventID : "\(change.eventID):\(s.merchantID):\(s.currency)"
            try await transport.send(try request(customers, record: RecordKind.record(s, change: change), idempotencyKey: key))
        }
        if let payments {
            for p in change.payments {
                // The payment record's own event id: the same record pushed again dedupes.
                try await transport.send(try request(payments, record: RecordKind.record(p), idempotencyKey: p.eventID))
            }
        }
    }
}

// MARK: salesforce

/// Salesforce REST: upsert by external id (`PATCH /services/data/vNN.N/sobjects/<Object>/<ExtIdField>/<id>`)
/// of the customer record and of a payment record per payment; OAuth2 bearer token from the
/// token endpoint (refresh-token or client-credentials grant), fetched again on 401.
/// `customer_key` (template, `{merchant_id}:{customer_id}`) is the external id: merchant +
/// customer, so two merchants' customers with the same id are two records (merchant ids carry
/// no `:`). Set it to `{customer_id}` only for an org that serves one merchant.
public final class SalesforceConnector: CRMConnector, @unchecked Sendable {
    public let name = "salesforce"
    let instanceURL: String
    let apiVersion: String
    let tokenURL: String
    let clientID: String
    let clientSecret: String
    let refreshToken: String?
    let customerObject: String
    let customerExternalField: String
    let customerKey: FieldTemplate
    let customerMapping: FieldMapping
    let paymentObject: String?
    let paymentExternalField: String
    let paymentKey: FieldTemplate
    let paymentMapping: FieldMapping?
    let transport: HTTPTransport
    /// The current access token and the instance URL it came with.
    private let token = Locked<(String, String)?>(nil)

    public init(_ s: ConfigSection, transport: HTTPTransport) throws(ConfigError) {
        self.transport = transport
        instanceURL = try s.requiredString("instance_url").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard URL(string: instanceURL)?.host != nil else {
            throw ConfigError(key: s.dotted("instance_url"), message: "'\(instanceURL)' is not a URL")
        }
        apiVersion = try s.string("api_version", default: "v61.0")
        guard apiVersion.range(of: #"^v[0-9]+\.[0-9]$"#, options: .regularExpression) != nil else {
            throw ConfigError(key: s.dotted("api_version"), message: "'\(apiVersion)' is not like v61.0")
        }
        tokenURL = try s.string("token_url", default: instanceURL + "/services/oauth2/token")
        clientID = try s.requiredString("client_id")
        guard let secret = try s.secret("client_secret") else {
            throw ConfigError(key: s.dotted("client_secret"), message: "required (client_secret or client_secret_file)")
        }
        clientSecret = secret
        refreshToken = try s.secret("refresh_token")
        transport.redacting([clientSecret, refreshToken])
        customerObject = try s.string("customer_object", default: "Account")
        customerExternalField = try s.string("customer_external_id_field", default: "Payfleet_Customer_Id__c")
        customerKey = try FieldTemplate(
            try s.string("customer_key", default: "{merchant_id}:{customer_id}"), kind: .customer,
            key: s.dotted("customer_key"))
        customerMapping = try FieldMapping.read(s, key: "customer_mapping", kind: .customer)!
        let po = try s.string("payment_object")
        paymentObject = (po?.isEmpty ?? true) ? nil : po
        paymentExternalField = try s.string("payment_external_id_field", default: "Payfleet_Event_Id__c")
        paymentKey = try FieldTemplate(
            try s.string("payment_key", default: "{event_id}"), kind: .payment, key: s.dotted("payment_key"))
        paymentMapping = try FieldMapping.read(s, key: "payment_mapping", kind: .payment, required: paymentObject != nil)
        for (k, v) in [("customer_object", customerObject), ("customer_external_id_field", customerExternalField),
                       ("payment_external_id_field", paymentExternalField), ("payment_object", paymentObject ?? "x")]
        where v.range(of: #"^[A-Za-z][A-Za-z0-9_]*$"#, options: .regularExpression) == nil {
            throw ConfigError(key: s.dotted(k), message: "'\(v)' is not a Salesforce API name")
        }
    }

    /// A token from the token endpoint (`grant_type=refresh_token` when a refresh token is
    /// configured, else `client_credentials`).
    func fetchToken() async throws -> (String, String) {
        guard let url = URL(string: tokenURL) else { throw HandlerError.permanent("Config", "token_url is not a URL") }
        var form = ["client_id": clientID, "client_secret": clientSecret]
        if let refreshToken {
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = refreshToken
        } else {
            form["grant_type"] = "client_credentials"
        }
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let body = form.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")" }
            .joined(separator: "&")
        var r = URLRequest(url: url)
        r.httpMethod = "POST"
        r.httpBody = Data(body.utf8)
        r.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        let resp = try await transport.exchange(r)
        guard (200..<300).contains(resp.status) else {
            // The token endpoint's body is not echoed: it could name the credentials.
            if resp.status >= 500 || resp.status == 429 || resp.status == 408 {
                throw HandlerError.transient("OAuth\(resp.status)", "token endpoint answered \(resp.status)")
            }
            throw HandlerError.permanent("OAuth\(resp.status)", "token endpoint \(HTTPTransport.describe(url)) refused the credentials (\(resp.status))")
        }
        guard let o = try? JSONSerialization.jsonObject(with: resp.body) as? [String: Any],
            let t = o["access_token"] as? String
        else {
            throw HandlerError.transient("OAuth", "token endpoint answered without access_token")
        }
        let instance = (o["instance_url"] as? String).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "/")) } ?? instanceURL
        transport.redacting([t])
        return (t, instance)
    }

    func currentToken(refresh: Bool) async throws -> (String, String) {
        if !refresh, let t = token.current { return t }
        let fresh = try await fetchToken()
        token.withLock { $0 = fresh }
        return fresh
    }

    func upsert(object: String, field: String, id: String, body: [String: Any], idempotencyKey: String) async throws {
        let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        var refreshed = false
        while true {
            let (t, instance) = try await currentToken(refresh: false)
            let seg = FieldTemplate.encodeSegment(id)
            guard let url = URL(string: "\(instance)/services/data/\(apiVersion)/sobjects/\(object)/\(field)/\(seg)") else {
                throw HandlerError.permanent("Mapping", transport.redact("external id '\(id)' does not form a URL"))
            }
            var r = URLRequest(url: url)
            r.httpMethod = "PATCH"
            r.httpBody = data
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
            r.setValue("Bearer \(t)", forHTTPHeaderField: "Authorization")
            r.setValue(idempotencyKey, forHTTPHeaderField: "Idempotency-Key")
            let resp = try await transport.exchange(r)
            if resp.status == 401 && !refreshed {
                refreshed = true
                _ = try await currentToken(refresh: true)
                continue
            }
            try transport.check(resp, request: r)
            return
        }
    }

    public func push(_ change: CRMChange, customers: [CustomerSnapshot], outcomeUnknown: Bool) async throws {
        do {
            for (i, s) in customers.enumerated() {
                let record = RecordKind.record(s, change: change)
                let key = i == 0 ? change.eventID : "\(change.eventID):\(s.merchantID):\(s.currency)"
                try await upsert(
                    object: customerObject, field: customerExternalField, id: try customerKey.render(record, encode: false),
                    body: try customerMapping.render(record), idempotencyKey: key)
            }
            if let paymentObject, let paymentMapping {
                for p in change.payments {
                    let record = RecordKind.record(p)
                    try await upsert(
                        object: paymentObject, field: paymentExternalField, id: try paymentKey.render(record, encode: false),
                        body: try paymentMapping.render(record), idempotencyKey: p.eventID)
                }
            }
        } catch let m as MappingError {
            throw HandlerError.permanent("Mapping", transport.redact(m.description))
        }
    }
}

// MARK: hubspot

/// HubSpot CRM v3 objects API with a private-app token: contacts upserted by a unique property
/// (`email` by default, or a custom customer-id property) through
/// `POST /crm/v3/objects/contacts/batch/upsert`, and a record per payment in `payment_object`
/// (`deals` or a custom object such as `p_payments`) upserted by its event-id property.
public struct HubSpotConnector: CRMConnector {
    public let name = "hubspot"
    let baseURL: String
    let token: String
    let contactIDProperty: String
    let contactIDField: String
    let contactMapping: FieldMapping
    let paymentObject: String?
    let paymentIDProperty: String
    let paymentMapping: FieldMapping?
    let transport: HTTPTransport

    public init(_ s: ConfigSection, transport: HTTPTransport) throws(ConfigError) {
        self.transport = transport
        baseURL = try s.string("base_url", default: "https://api.hubapi.com").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard URL(string: baseURL)?.host != nil else {
            throw ConfigError(key: s.dotted("base_url"), message: "'\(baseURL)' is not a URL")
        }
        guard let t = try s.secret("token"), !t.isEmpty else {
            throw ConfigError(key: s.dotted("token"), message: "required: the private app token (token or token_file)")
        }
        token = t
        transport.redacting([t])
        contactIDProperty = try s.string("contact_id_property", default: "email")
        contactIDField = try s.string("contact_id_field", default: "email")
        guard RecordKind.customer.fields[contactIDField] == .string else {
            throw ConfigError(key: s.dotted("contact_id_field"), message: "unknown customer field '\(contactIDField)'")
        }
        contactMapping = try FieldMapping.read(s, key: "contact_mapping", kind: .customer)!
        let po = try s.string("payment_object")
        paymentObject = (po?.isEmpty ?? true) ? nil : po
        paymentIDProperty = try s.string("payment_id_property", default: "payfleet_event_id")
        paymentMapping = try FieldMapping.read(s, key: "payment_mapping", kind: .payment, required: paymentObject != nil)
        for (k, v) in [("contact_id_property", contactIDProperty), ("payment_id_property", paymentIDProperty),
                       ("payment_object", paymentObject ?? "x")]
        where v.range(of: #"^[A-Za-z0-9_]+$"#, options: .regularExpression) == nil {
            throw ConfigError(key: s.dotted(k), message: "'\(v)' is not a HubSpot property or object name")
        }
    }

    func upsert(object: String, idProperty: String, id: String, properties: [String: Any], idempotencyKey: String) async throws {
        guard let url = URL(string: "\(baseURL)/crm/v3/objects/\(object)/batch/upsert") else {
            throw HandlerError.permanent("Config", "base_url does not form a URL")
        }
        let body: [String: Any] = ["inputs": [["idProperty": idProperty, "id": id, "properties": properties]]]
        var r = URLRequest(url: url)
        r.httpMethod = "POST"
        r.httpBody = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        r.setValue(idempotencyKey, forHTTPHeaderField: "Idempotency-Key")
        try await transport.send(r)
    }

    public func push(_ change: CRMChange, customers: [CustomerSnapshot], outcomeUnknown: Bool) async throws {
        do {
            for (i, s) in customers.enumerated() {
                let record = RecordKind.record(s, change: change)
                guard let id = record[contactIDField]?.plain, !id.isEmpty else {
                    throw HandlerError.permanent(
                        "Mapping", "customer \(s.customerID) has no \(contactIDField) to identify the HubSpot contact")
                }
                var props = try contactMapping.render(record)
                props[contactIDProperty] = id
                let key = i == 0 ? change.eventID : "\(change.eventID):\(s.merchantID):\(s.currency)"
                try await upsert(object: "contacts", idProperty: contactIDProperty, id: id, properties: props, idempotencyKey: key)
            }
            if let paymentObject, let paymentMapping {
                for p in change.payments {
                    var props = try paymentMapping.render(RecordKind.record(p))
                    props[paymentIDProperty] = p.eventID
                    try await upsert(
                        object: paymentObject, idProperty: paymentIDProperty, id: p.eventID, properties: props,
                        idempotencyKey: p.eventID)
                }
            }
        } catch let m as MappingError {
            throw HandlerError.permanent("Mapping", transport.redact(m.description))
        }
    }
}

/// write(2), named apart from methods called `write`.
@inline(__always)
func systemWrite(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, buf, count)
}
