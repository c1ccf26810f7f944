import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import PayfleetCRMSync
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// Builds crm-sync's handler from YAML the way the worker does (then unknown keys are errors).
func crmHandler(_ yaml: String) throws -> CRMHandler {
    let root = try ConfigSection.parse(yaml: yaml)
    let h = try CRMHandler(section: try root.section("crm-sync"), root: root, logger: Logger(label: "test"))
    root.ignore(["state_dir"])
    try root.finish()
    return h
}

/// Issue 5, "what must be shown" 1: what each connector sends, recorded by a real HTTP server.
@Suite(.serialized) struct ConnectorTests {
    static func httpYAML(_ url: String, auth: String = "{type: bearer, token: sekret-token}") -> String {
        """
        state_dir: /tmp/crm-unused
        crm-sync:
          connector: http
          timeout: 5s
          http:
            auth: \(auth)
            headers: {X-Source: payfleet}
            customers:
              method: PUT
              url: "\(url)/api/customers/{customer_id}/balances/{currency}"
              mapping:
                - {target: externalId, source: customer_id}
                - {target: balance.amount, source: outstanding, transform: money}
                - {target: balance.minor, source: outstanding, transform: minor}
                - {target: balance.currency, source: currency}
                - {target: lastPaymentDate, source: last_payment_at, transform: date, timezone: Asia/Tokyo, format: "yyyy-MM-dd HH:mm"}
                - {target: standing, source: status, transform: lookup, lookup: {owing: Open, settled: Closed}, default: Review}
                - {target: origin, constant: payfleet}
                - {target: contact.email, source: email, transform: upper}
                - {target: contact.phone, source: phone, omit_null: true}
                - {target: contact.name, source: name}
            payments:
              method: POST
              url: "\(url)/api/payments"
              mapping:
                - {target: id, source: event_id}
                - {target: amount, source: amount, transform: money}
                - {target: kind, source: type}
                - {target: invoice, source: invoice_id}
        """
    }

    /// Applies events and performs their effects the way the runtime does.
    static func run(_ handler: CRMHandler, _ events: [PaymentEvent]) async throws {
        let h = try await CRMHarness(handler: handler)
        let changes = try await h.apply(events)
        for c in changes {
            let e = events.first { $0.id == c.eventID }!
            try await handler.perform(c, event: e, attempt: 1, outcomeUnknown: false)
        }
    }

    static let bhdEvents = [
        crmEvent("evt_inv", .invoiceIssued, amount: 12_345, currency: "BHD", customer: "cus_1", payment: nil, invoice: "inv_1",
                 at: "2026-11-24T09:00:00Z"),
        crmEvent("evt_pay", .paymentSucceeded, amount: 5_000, currency: "BHD", customer: "cus_1", payment: "pi_1", invoice: "inv_1",
                 at: "2026-11-24T15:30:00Z"),
    ]

    @Test("http: method, URL template, headers, bearer auth, Idempotency-Key and the mapping's output field by field")
    func httpShape() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        try await Self.run(try crmHandler(Self.httpYAML(crm.url)), Self.bhdEvents)
        let reqs = crm.requests
        #expect(reqs.map { "\($0.method) \($0.path)" } == [
            "PUT /api/customers/cus_1/balances/BHD", "PUT /api/customers/cus_1/balances/BHD", "POST /api/payments",
        ])
        let put = reqs[1]
        #expect(put.headers["authorization"] == "Bearer sekret-token")
        #expect(put.headers["idempotency-key"] == "evt_pay")
        #expect(put.headers["x-source"] == "payfleet")
        #expect(put.headers["content-type"] == "application/json")
        let body = try #require(put.json)
        #expect(body["externalId"] as? String == "cus_1")
        let balance = try #require(body["balance"] as? [String: Any])
        #expect(balance["amount"] as? String == "7.345")  // BHD: three decimals
        #expect((balance["minor"] as? NSNumber)?.int64Value == 7_345)
        #expect(balance["currency"] as? String == "BHD")
        #expect(body["lastPaymentDate"] as? String == "2026-11-25 00:30")  // Tokyo time
        #expect(body["standing"] as? String == "Open")
        #expect(body["origin"] as? String == "payfleet")
        let contact = try #require(body["contact"] as? [String: Any])
        #expect(contact["email"] as? String == "ADA@EXAMPLE.COM")
        #expect(contact["name"] as? String == "Ada Lovelace")
        #expect(contact["phone"] == nil)  // omit_null
        #expect(Set(body.keys) == ["externalId", "balance", "lastPaymentDate", "standing", "origin", "contact"])
        // The first push: the invoice alone; no payment yet → null date, lookup hit.
        let first = try #require(reqs[0].json)
        #expect(first["lastPaymentDate"] is NSNull)
        #expect((first["balance"] as? [String: Any])?["amount"] as? String == "12.345")
        #expect(reqs[0].headers["idempotency-key"] == "evt_inv")
        let pay = try #require(reqs[2].json)
        #expect(pay as NSDictionary == ["id": "evt_pay", "amount": "5.000", "kind": "payment.succeeded", "invoice": "inv_1"] as NSDictionary)
        #expect(reqs[2].headers["idempotency-key"] == "evt_pay")
        // No card data leaves the worker.
        #expect(reqs.allSatisfy { !$0.text.contains("4242") && !$0.text.contains("visa") })
    }

    @Test("http: basic auth and Standard Webhooks signatures (verified with the secret)")
    func httpAuth() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        try await Self.run(try crmHandler(Self.httpYAML(crm.url, auth: "{type: basic, username: payfleet, password: 'p@ss:word'}")),
                           [Self.bhdEvents[0]])
        #expect(crm.requests.first?.headers["authorization"] == "Basic " + Data("payfleet:p@ss:word".utf8).base64EncodedString())

        let key = Array("standard-webhooks-test-key-32byt".utf8)
        let secret = "whsec_" + Data(key).base64EncodedString()
        let crm2 = LoopbackCRM()
        try await crm2.start()
        defer { crm2.stop() }
        try await Self.run(try crmHandler(Self.httpYAML(crm2.url, auth: "{type: standard_webhooks, secret: \"\(secret)\"}")),
                           [Self.bhdEvents[0]])
        let r = try #require(crm2.requests.first)
        let id = try #require(r.headers["webhook-id"])
        let ts = try #require(r.headers["webhook-timestamp"])
        #expect(id == "evt_inv")
        #expect(abs((Int(ts) ?? 0) - Int(Date().timeIntervalSince1970)) < 300)
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(ts).".utf8) + r.body, using: SymmetricKey(data: key))
        #expect(r.headers["webhook-signature"] == "v1," + Data(mac).base64EncodedString())
        #expect(r.headers["authorization"] == nil)
    }

    @Test("Bad connector configuration is a start-up error naming the field", arguments: [
        ("source: balanse", "crm-sync.http.customers.mapping[0].source", "unknown customer field 'balanse'"),
        ("source: currency, transform: money", "crm-sync.http.customers.mapping[0].transform", "needs a money field"),
        ("source: at, transform: date, timezone: Mars/Olympus", "crm-sync.http.customers.mapping[0].timezone", "unknown time zone"),
        ("source: status, transform: rot13", "crm-sync.http.customers.mapping[0].transform", "unknown transform 'rot13'"),
        ("source: status, transform: lookup", "crm-sync.http.customers.mapping[0].lookup", "non-empty lookup"),
        ("source: status, constant: x", "crm-sync.http.customers.mapping[0].constant", "not both"),
        ("transform: money", "crm-sync.http.customers.mapping[0].source", "needs source or constant"),
        ("source: status, sorce: x", "crm-sync.http.customers.mapping[0].sorce", "unknown key"),
    ])
    func badMappingRule(rule: String, key: String, message: String) throws {
        let yaml = """
            crm-sync:
              connector: http
              http:
                customers:
                  url: "http://127.0.0.1:1/c/{customer_id}"
                  mapping:
                    - {target: x, \(rule)}
            """
        do {
            _ = try crmHandler(yaml)
            Issue.record("accepted: \(rule)")
        } catch let e as ConfigError {
            #expect(e.key == key, "\(e)")
            #expect(e.message.contains(message), "\(e)")
        }
    }

    @Test("Bad connector settings are start-up errors naming the key", arguments: [
        ("connector: soap", "crm-sync.connector", "unknown connector 'soap'"),
        ("connector: http\n  http:\n    customers: {method: PUT, mapping: [{target: a, source: status}]}", "crm-sync.http.customers.url", "required"),
        ("connector: http\n  http:\n    customers: {url: \"http://h/{customer}\", mapping: [{target: a, source: status}]}", "crm-sync.http.customers.url", "unknown customer field '{customer}'"),
        ("connector: http\n  http:\n    customers: {url: \"ftp://h/x\", mapping: [{target: a, source: status}]}", "crm-sync.http.customers.url", "not an http(s) URL"),
        ("connector: http\n  http:\n    customers: {method: GET, url: \"http://h/x\", mapping: [{target: a, source: status}]}", "crm-sync.http.customers.method", "POST, PUT or PATCH"),
        ("connector: http\n  http:\n    customers: {url: \"http://h/x\"}", "crm-sync.http.customers.mapping", "required"),
        ("connector: http\n  http:\n    customers: {url: \"http://h/x\", mapping: [{target: a, source: status}, {target: a, source: currency}]}", "crm-sync.http.customers.mapping[1].target", "mapped twice"),
        ("connector: http\n  http:\n    auth: {type: bearer}\n    customers: {url: \"http://h/x\", mapping: [{target: a, source: status}]}", "crm-sync.http.auth.token", "token"),
        ("connector: http\n  http:\n    auth: {type: oauth1}\n    customers: {url: \"http://h/x\", mapping: [{target: a, source: status}]}", "crm-sync.http.auth.type", "unknown auth type"),
        ("connector: http\n  http:\n    headers: {Authorization: x}\n    customers: {url: \"http://h/x\", mapping: [{target: a, source: status}]}", "crm-sync.http.headers.Authorization", "configure auth"),
        ("connector: salesforce\n  salesforce: {instance_url: \"http://h\", client_secret: s, customer_mapping: [{target: a, source: status}]}", "crm-sync.salesforce.client_id", "required"),
        ("connector: salesforce\n  salesforce: {instance_url: \"http://h\", client_id: c, client_secret: s, customer_object: \"Bad Name\", customer_mapping: [{target: a, source: status}]}", "crm-sync.salesforce.customer_object", "API name"),
        ("connector: hubspot\n  hubspot: {contact_mapping: [{target: a, source: status}]}", "crm-sync.hubspot.token", "private app token"),
        ("connector: hubspot\n  hubspot: {token: t, payment_object: deals, contact_mapping: [{target: a, source: status}]}", "crm-sync.hubspot.payment_mapping", "required"),
        ("timeout: soon", "crm-sync.timeout", "not a duration"),
    ])
    func badSettings(settings: String, key: String, message: String) throws {
        do {
            _ = try crmHandler("crm-sync:\n  " + settings + "\n")
            Issue.record("accepted: \(settings)")
        } catch let e as ConfigError {
            #expect(e.key == key, "\(e)")
            #expect(e.message.contains(message), "\(e)")
        }
    }

    @Test("salesforce: OAuth2 refresh-token grant, PATCH upsert by external id of the customer and a payment record, new token after 401")
    func salesforceShape() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        let tokens = Locked(0)
        let yaml = """
            crm-sync:
              connector: salesforce
              salesforce:
                instance_url: \(crm.url)
                token_url: \(crm.url)/services/oauth2/token
                api_version: v61.0
                client_id: client-123
                client_secret: shh-secret
                refresh_token: refresh-456
                customer_object: Account
                customer_external_id_field: Payfleet_Customer_Id__c
                customer_key: "{merchant_id}-{customer_id}"
                customer_mapping:
                  - {target: Outstanding_Balance__c, source: outstanding, transform: money}
                  - {target: CurrencyIsoCode, source: currency}
                  - {target: Last_Payment_Date__c, source: last_payment_at, transform: date, timezone: Europe/London, format: "yyyy-MM-dd"}
                payment_object: Payfleet_Payment__c
                payment_external_id_field: Payfleet_Event_Id__c
                payment_mapping:
                  - {target: Amount__c, source: amount, transform: money}
                  - {target: Payment_Id__c, source: payment_id}
                  - {target: Account__r.Payfleet_Customer_Id__c, source: customer_id}
            """
        // The instance_url the token endpoint returns must be the loopback server itself.
        crm.setScript { [url = crm.url] r, _ in
            if r.path == "/services/oauth2/token" {
                let n = tokens.withLock { $0 += 1; return $0 }
                return .init(status: 200, body: "{\"access_token\": \"tok\(n)\", \"instance_url\": \"\(url)\", \"token_type\": \"Bearer\"}")
            }
            if r.headers["authorization"] == "Bearer tok1" {
                return .init(status: 401, body: "[{\"message\":\"Session expired or invalid\",\"errorCode\":\"INVALID_SESSION_ID\"}]")
            }
            return .init(status: r.path.contains("Payment") ? 201 : 204, body: "")
        }
        try await Self.run(try crmHandler(yaml), [Self.bhdEvents[1]])
        let reqs = crm.requests
        #expect(reqs.map { "\($0.method) \($0.path) \($0.status)" } == [
            "POST /services/oauth2/token 200",
            "PATCH /services/data/v61.0/sobjects/Account/Payfleet_Customer_Id__c/m_acme-cus_1 401",
            "POST /services/oauth2/token 200",
            "PATCH /services/data/v61.0/sobjects/Account/Payfleet_Customer_Id__c/m_acme-cus_1 204",
            "PATCH /services/data/v61.0/sobjects/Payfleet_Payment__c/Payfleet_Event_Id__c/evt_pay 201",
        ])
        let form = Set(reqs[0].text.split(separator: "&").map(String.init))
        #expect(form == ["grant_type=refresh_token", "client_id=client-123", "client_secret=shh-secret", "refresh_token=refresh-456"])
        #expect(reqs[0].headers["content-type"] == "application/x-www-form-urlencoded")
        #expect(reqs[3].headers["authorization"] == "Bearer tok2")
        #expect(reqs[3].headers["idempotency-key"] == "evt_pay")
        #expect(reqs[3].json! as NSDictionary == [
            "Outstanding_Balance__c": "-5.000", "CurrencyIsoCode": "BHD", "Last_Payment_Date__c": "2026-11-24",
        ] as NSDictionary)
        #expect(reqs[4].json! as NSDictionary == [
            "Amount__c": "5.000", "Payment_Id__c": "pi_1", "Account__r": ["Payfleet_Customer_Id__c": "cus_1"],
        ] as NSDictionary)
        #expect(reqs[4].headers["authorization"] == "Bearer tok2")
    }

    @Test("hubspot: contacts upserted by email and a deal per payment through the CRM v3 objects API, private-app token")
    func hubspotShape() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        let yaml = """
            crm-sync:
              connector: hubspot
              hubspot:
                base_url: \(crm.url)
                token: pat-eu1-test
                contact_id_property: email
                contact_mapping:
                  - {target: payfleet_customer_id, source: customer_id}
                  - {target: payfleet_outstanding, source: outstanding, transform: money}
                  - {target: payfleet_status, source: status}
                payment_object: deals
                payment_id_property: payfleet_event_id
                payment_mapping:
                  - {target: amount, source: amount, transform: money}
                  - {target: dealname, source: payment_id}
                  - {target: closedate, source: occurred_at, transform: date, timezone: UTC, format: "yyyy-MM-dd'T'HH:mm:ss'Z'"}
                  - {target: dealstage, source: type, transform: lookup, lookup: {payment.succeeded: closedwon}, default: closedlost}
            """
        try await Self.run(try crmHandler(yaml), [Self.bhdEvents[1]])
        let reqs = crm.requests
        #expect(reqs.map { "\($0.method) \($0.path)" } == [
            "POST /crm/v3/objects/contacts/batch/upsert", "POST /crm/v3/objects/deals/batch/upsert",
        ])
        #expect(reqs.allSatisfy { $0.headers["authorization"] == "Bearer pat-eu1-test" && $0.headers["idempotency-key"] == "evt_pay" })
        #expect(reqs[0].json! as NSDictionary == [
            "inputs": [[
                "idProperty": "email", "id": "ada@example.com",
                "properties": [
                    "email": "ada@example.com", "payfleet_customer_id": "cus_1", "payfleet_outstanding": "-5.000",
                    "payfleet_status": "in_credit",
                ],
            ]]
        ] as NSDictionary)
        #expect(reqs[1].json! as NSDictionary == [
            "inputs": [[
                "idProperty": "payfleet_event_id", "id": "evt_pay",
                "properties": [
                    "payfleet_event_id": "evt_pay", "amount": "5.000", "dealname": "pi_1", "closedate": "2026-11-24T15:30:00Z",
                    "dealstage": "closedwon",
                ],
            ]]
        ] as NSDictionary)
    }

    @Test("Classification: 408/429/5xx and connection failures transient, other 4xx permanent with status and body excerpt")
    func classification() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        crm.setScript { r, _ in
            let code = Int(r.path.dropFirst()) ?? 200
            return .init(status: code, body: code == 422 ? String(repeating: "x", count: 1000) : "{\"error\": \"status \(code)\"}")
        }
        let transport = HTTPTransport(timeout: 5, maxRetryAfter: 0)
        func send(_ path: String) async -> HandlerError? {
            var r = URLRequest(url: URL(string: crm.url + path + "?api_key=secret")!)
            r.httpMethod = "POST"
            do {
                try await transport.send(r)
                return nil
            } catch {
                return HandlerError.classify(error)
            }
        }
        for code in [408, 429, 500, 502, 503, 504] {
            let e = await send("/\(code)")
            #expect(e?.kind == .transient && e?.errorClass == "HTTP\(code)", "\(String(describing: e))")
        }
        for code in [400, 401, 403, 404, 409, 422] {
            let e = await send("/\(code)")
            #expect(e?.kind == .permanent && e?.errorClass == "HTTP\(code)", "\(String(describing: e))")
            #expect(e?.message.contains("answered \(code)") == true)
            #expect(e?.message.contains("secret") == false, "the query string stays out of errors")
        }
        let long = await send("/422")
        #expect((long?.message.count ?? 0) < 450, "the body is cut to an excerpt")
        #expect(await send("/204") == nil)
        // Nothing listens on a port just released: connection refused is transient.
        let probe = LoopbackCRM()
        try await probe.start()
        let closed = probe.url
        probe.stop()
        try await Task.sleep(for: .milliseconds(200))
        var r = URLRequest(url: URL(string: closed + "/x")!)
        r.httpMethod = "POST"
        do {
            try await transport.send(r)
            Issue.record("a closed port answered")
        } catch {
            let e = HandlerError.classify(error)
            #expect(e.kind == .transient && e.errorClass == "HTTPConnection", "\(e)")
        }
        #expect(HTTPTransport.retryAfterSeconds("120") == 120)
        #expect(HTTPTransport.retryAfterSeconds("soon") == nil)
        let future = Date().addingTimeInterval(60)
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let seconds = HTTPTransport.retryAfterSeconds(f.string(from: future)) ?? -1
        #expect(seconds > 50 && seconds <= 60)
    }
}
