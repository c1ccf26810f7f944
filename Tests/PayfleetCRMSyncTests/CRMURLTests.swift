import Foundation
import PayfleetCRMSync
import PayfleetCore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// Issue 15 item 16: every URL path segment built from event data is percent-encoded, dot
/// segments included — checked on the request line a real loopback HTTP server receives.
@Suite(.serialized) struct CRMURLTests {
    static func yaml(_ url: String) -> String {
        """
        state_dir: /tmp/crm-unused
        crm-sync:
          connector: http
          timeout: 5s
          http:
            customers:
              method: PUT
              url: "\(url)/api/m/{merchant_id}/customers/{customer_id}/balances/{currency}"
              mapping:
                - {target: id, source: customer_id}
        """
    }

    /// Customer ids from event data and the path segment each must become, worked out by hand
    /// from RFC 3986 (UTF-8 bytes, upper-case hex; only A–Z a–z 0–9 - _ ~ stay as they are).
    static let cases: [(String, String)] = [
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("...", "%2E%2E%2E"),
        ("a.b", "a%2Eb"),
        ("../../admin", "%2E%2E%2F%2E%2E%2Fadmin"),
        ("x?y=1#z", "x%3Fy%3D1%23z"),
        ("100%", "100%25"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("a b+c", "a%20b%2Bc"),
        ("ada@example.com", "ada%40example%2Ecom"),
        ("cus_1-A~", "cus_1-A~"),
    ]

    @Test("Customer ids '..', '.', '../../admin', '?', '#', '%', non-ASCII: each stays one encoded segment on the wire")
    func segmentsEncoded() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        let handler = try crmHandler(Self.yaml(crm.url))
        let events = Self.cases.enumerated().map { i, c in
            crmEvent("evt_url_\(i)", .paymentSucceeded, amount: 100, customer: c.0, payment: "pi_url_\(i)")
        }
        try await ConnectorTests.run(handler, events)
        let paths = crm.requests.map(\.path)
        #expect(paths == Self.cases.map { "/api/m/m_acme/customers/\($0.1)/balances/GBP" })
        // The CRM decodes each back to the id it was given, and nothing reached another path.
        for (r, c) in zip(crm.requests, Self.cases) {
            #expect(r.json?["id"] as? String == c.0)
        }
        #expect(crm.requests.allSatisfy { $0.path.hasPrefix("/api/m/m_acme/customers/") && $0.method == "PUT" })
    }

    @Test("encodeSegment by hand-computed examples; a merchant id is a segment too")
    func encodeSegment() {
        for (raw, encoded) in Self.cases { #expect(FieldTemplate.encodeSegment(raw) == encoded, "\(raw)") }
        #expect(FieldTemplate.encodeSegment("m/../x") == "m%2F%2E%2E%2Fx")
        #expect(FieldTemplate.encodeSegment("\r\n") == "%0D%0A")
    }

    @Test("A field in the scheme, host or port of a URL template is a start-up error", arguments: [
        "http://{customer_id}.crm.example/x",
        "http://crm.example:{version}/x",
        "{customer_id}://crm.example/x",
        "http://user:{email}@crm.example/x",
    ])
    func fieldsOnlyInPath(url: String) throws {
        let yaml = """
            crm-sync:
              connector: http
              http:
                customers:
                  url: "\(url)"
                  mapping:
                    - {target: x, source: status}
            """
        do {
            _ = try crmHandler(yaml)
            Issue.record("accepted: \(url)")
        } catch let e as ConfigError {
            #expect(e.key == "crm-sync.http.customers.url", "\(e)")
        }
    }

    @Test("An email in the URL path is not repeated by the error, encoded or not")
    func emailInPathRedacted() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        crm.setScript { _, _ in .init(status: 422, body: "{\"error\": \"unknown contact\"}") }
        let yaml = Self.yaml(crm.url).replacingOccurrences(
            of: "/api/m/{merchant_id}/customers/{customer_id}/balances/{currency}", with: "/contacts/{email}")
        do {
            try await ConnectorTests.run(try crmHandler(yaml), [crmEvent("evt_mail", .paymentSucceeded, amount: 100)])
            Issue.record("no error")
        } catch let e as HandlerError {
            #expect(e.kind == .permanent)
            #expect(e.message.contains("answered 422") && e.message.contains("/contacts/[email]"), "\(e.message)")
            #expect(!e.message.contains("ada") && !e.message.contains("example"), "\(e.message)")
        }
        #expect(crm.requests.first?.path == "/contacts/ada%40example%2Ecom")
    }

    @Test("salesforce: the default external id is merchant + customer, encoded as one segment")
    func salesforceKey() async throws {
        let crm = LoopbackCRM()
        try await crm.start()
        defer { crm.stop() }
        crm.setScript { [url = crm.url] r, _ in
            if r.path == "/services/oauth2/token" {
                return .init(status: 200, body: "{\"access_token\": \"tok\", \"instance_url\": \"\(url)\"}")
            }
            return .init(status: 204, body: "")
        }
        let yaml = """
            crm-sync:
              connector: salesforce
              salesforce:
                instance_url: \(crm.url)
                client_id: c
                client_secret: s3cr3t-value
                customer_mapping:
                  - {target: Outstanding_Balance__c, source: outstanding, transform: money}
            """
        try await ConnectorTests.run(
            try crmHandler(yaml), [crmEvent("evt_sf", .paymentSucceeded, amount: 100, customer: "..", payment: "pi_sf")])
        let patch = try #require(crm.requests.first { $0.method == "PATCH" })
        // "m_acme" ":" ".." → m_acme %3A %2E%2E
        #expect(patch.path == "/services/data/v61.0/sobjects/Account/Payfleet_Customer_Id__c/m_acme%3A%2E%2E")
    }
}
