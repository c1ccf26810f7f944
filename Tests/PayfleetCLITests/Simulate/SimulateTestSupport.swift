import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetTestKit

/// The sandbox merchants (as in config/payfleet.yaml) and channels the generator tests use.
enum SimFixtures {
    static let merchants: [Merchant] = [
        Merchant(id: "m_acme", name: "Acme Ltd", timeZone: "Europe/London", currencies: ["GBP", "EUR"],
                 stripeAccount: "acct_1AcmeSandbox", adyenMerchantAccount: "AcmeLtdECOM"),
        Merchant(id: "m_globex", name: "Globex Inc", timeZone: "America/New_York", cutoffMinutes: 120, currencies: ["USD"],
                 stripeAccount: "acct_1GlobexSandbox"),
        Merchant(id: "m_sakura", name: "Sakura KK", timeZone: "Asia/Tokyo", currencies: ["JPY"],
                 stripeAccount: "acct_1SakuraSandbox", adyenMerchantAccount: "SakuraKKECOM"),
        Merchant(id: "m_dilmun", name: "Dilmun Trading WLL", timeZone: "Asia/Bahrain", cutoffMinutes: 60, currencies: ["BHD"],
                 adyenMerchantAccount: "DilmunTradingECOM"),
    ]
    static let stripeSecret = "whsec_payfleetSandboxStripeSecret1"
    static let adyenKey = "706179666C6565742D73616E64626F782D616479656E2D686D61632D6B657921"
    static let billingSecret = "whsec_cGF5ZmxlZXQtc2FuZGJveC1iaWxsaW5nLXNlY3JldCE="
    static let apiKey = "pf_sandbox_phone_key"
    static let apiKeySHA = "5c78e406fa40240cc95cb04b5c0963ab02b965b0efbd4f2de7ed7300ea60ad47"

    static var channels: SimChannels {
        SimChannels(
            stripeSecret: stripeSecret, adyenKeyHex: adyenKey, billing: ("billing", billingSecret),
            api: (apiKey, "phonepay", ["*"]))
    }

    static let now = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18

    /// Stripe's published API fixtures (`../shared/data/stripe-fixtures3.json` beside the
    /// checkout): object name → one example object.
    nonisolated(unsafe) static let stripeFixtures: [String: [String: Any]]? = {
        let repo = URL(fileURLWithPath: TestEnvironment.repoRoot)
        for dir in [repo.deletingLastPathComponent().appendingPathComponent("shared/data"), URL(fileURLWithPath: "/work/shared/data")] {
            guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent("stripe-fixtures3.json").path),
                let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let resources = o["resources"] as? [String: [String: Any]]
            else { continue }
            return resources
        }
        return nil
    }()

    static func plan(seed: UInt64 = 42, count: Int = 600, runID: String = "t1") -> SimPlan {
        var g = SimGenerator(seed: seed, runID: runID, now: now, merchants: merchants, channels: channels)
        return g.generate(count: count)
    }

    /// The merchants and ingest section as YAML (for a config file the processes share).
    static func yaml(ingestPort: Int) -> String {
        var s = "merchants:\n"
        for m in merchants {
            s += "  - id: \(m.id)\n    name: \(m.name)\n    timezone: \(m.timeZone)\n"
            s += "    cutoff: \"\(String(format: "%02d:%02d", m.cutoffMinutes / 60, m.cutoffMinutes % 60))\"\n"
            s += "    currencies: [\(m.currencies.joined(separator: ", "))]\n"
            if let a = m.stripeAccount { s += "    stripe_account: \(a)\n" }
            if let a = m.adyenMerchantAccount { s += "    adyen_merchant_account: \(a)\n" }
        }
        s += """
            ingest:
              host: 127.0.0.1
              port: \(ingestPort)
              stripe:
                webhook_secrets: [\(stripeSecret)]
              adyen:
                hmac_key: \(adyenKey)
              standard_webhooks:
                - source: billing
                  secret: \(billingSecret)
              api_keys:
                - sha256: \(apiKeySHA)
                  source: phonepay
                  merchants: ["*"]

            """
        return s
    }
}
