import PayfleetCore

/// The chart of accounts of DESIGN §5a: account-name templates per role, with `{merchant}`,
/// `{provider}` and `{customer}` placeholders filled by sanitized segments.
///
/// Configured under `ledger-writer.accounts` (every key optional, a string template):
/// - `receivable` (`Assets:{merchant}:Receivable:{customer}`)
/// - `sales` (`Income:{merchant}:Sales`)
/// - `clearing` (`Assets:{merchant}:Clearing:{provider}`)
/// - `payment_fees` (`Expenses:{merchant}:PaymentFees`)
/// - `refunds` (`Income:{merchant}:Refunds`)
/// - `disputes` (`Expenses:{merchant}:Disputes`)
/// - `bank` (`Assets:{merchant}:Bank`)
///
/// A template must yield a name that hledger, ledger and beancount all accept: the first
/// component one of `Assets`, `Liabilities`, `Equity`, `Income`, `Expenses`, every component
/// starting with a capital letter or digit and made of `[A-Za-z0-9-]`. The receivable template
/// must name both `{merchant}` and `{customer}`.
public struct ChartOfAccounts: Sendable, Equatable {
    public var receivableTemplate = "Assets:{merchant}:Receivable:{customer}"
    public var salesTemplate = "Income:{merchant}:Sales"
    public var clearingTemplate = "Assets:{merchant}:Clearing:{provider}"
    public var paymentFeesTemplate = "Expenses:{merchant}:PaymentFees"
    public var refundsTemplate = "Income:{merchant}:Refunds"
    public var disputesTemplate = "Expenses:{merchant}:Disputes"
    public var bankTemplate = "Assets:{merchant}:Bank"

    public init() {}

    static let rootTypes: Set<String> = ["Assets", "Liabilities", "Equity", "Income", "Expenses"]

    /// Reads `accounts:` of the worker section; unknown keys stay errors (`finish()` on the root).
    public static func read(_ section: ConfigSection) throws(ConfigError) -> ChartOfAccounts {
        var chart = ChartOfAccounts()
        let s = try section.section("accounts")
        let keys: [(String, WritableKeyPath<ChartOfAccounts, String>)] = [
            ("receivable", \.receivableTemplate), ("sales", \.salesTemplate), ("clearing", \.clearingTemplate),
            ("payment_fees", \.paymentFeesTemplate), ("refunds", \.refundsTemplate), ("disputes", \.disputesTemplate), ("bank", \.bankTemplate),
        ]
        for (key, path) in keys {
            guard let template = try s.string(key) else { continue }
            let sample = ChartOfAccounts.fill(template, merchant: "M", provider: "P", customer: "C")
            guard ChartOfAccounts.isValidAccount(sample) else {
                throw ConfigError(
                    key: s.dotted(key),
                    message: "'\(template)' does not make a valid account name (Type:Component:…, Type one of "
                        + "\(rootTypes.sorted().joined(separator: ", ")), components [A-Z0-9][A-Za-z0-9-]*)")
            }
            // Receivables are per merchant and per customer (issue 15 items 10 and 13): a
            // template without either placeholder would merge customers' money.
            if key == "receivable", !(template.contains("{merchant}") && template.contains("{customer}")) {
                throw ConfigError(key: s.dotted(key), message: "'\(template)' must contain {merchant} and {customer}")
            }
            chart[keyPath: path] = template
        }
        return chart
    }

    /// The template with each `{merchant}`, `{provider}` and `{customer}` replaced, in one pass
    /// over its UTF-8 (Foundation's `replacingOccurrences` was 17 % of ledger-writer's time); a
    /// filled-in value is never scanned again for placeholders.
    static func fill(_ template: String, merchant: String, provider: String = "", customer: String = "") -> String {
        var out: [UInt8] = []
        out.reserveCapacity(template.utf8.count + merchant.utf8.count + provider.utf8.count + customer.utf8.count)
        template.utf8.withContiguousStorageIfAvailable { t in
            var i = 0
            while i < t.count {
                if t[i] == UInt8(ascii: "{") {
                    if let value = placeholder(t, at: i, merchant: merchant, provider: provider, customer: customer) {
                        out.append(contentsOf: value.utf8)
                        i += 10  // every placeholder name has eight letters
                        continue
                    }
                }
                out.append(t[i])
                i += 1
            }
        } ?? {
            out = Array(
                template.replacingOccurrences(of: "{merchant}", with: merchant)
                    .replacingOccurrences(of: "{provider}", with: provider)
                    .replacingOccurrences(of: "{customer}", with: customer).utf8)
        }()
        return String(decoding: out, as: UTF8.self)
    }

    private static func placeholder(
        _ t: UnsafeBufferPointer<UInt8>, at i: Int, merchant: String, provider: String, customer: String
    ) -> String? {
        guard i + 10 <= t.count, t[i + 9] == UInt8(ascii: "}") else { return nil }
        let name = UnsafeBufferPointer(rebasing: t[(i + 1)..<(i + 9)])
        if name.elementsEqual("merchant".utf8) { return merchant }
        if name.elementsEqual("provider".utf8) { return provider }
        if name.elementsEqual("customer".utf8) { return customer }
        return nil
    }

    /// True for names every target tool accepts (beancount is the strictest).
    public static func isValidAccount(_ name: String) -> Bool {
        let parts = name.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 2, rootTypes.contains(String(parts[0])) else { return false }
        for p in parts {
            guard let first = p.first, first.isASCII, first.isUppercase || first.isNumber else { return false }
            guard p.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else { return false }
        }
        return true
    }

    // The segments are sanitized here, so an odd provider or customer id can never make an
    // account name the export tools refuse.

    /// The receivable of customer id `customer` (raw, as in the event) under its plain
    /// sanitized segment — the name it has unless another id of the same merchant claimed that
    /// segment first (`LedgerHandler` resolves that against its `customer_accounts` table).
    public func receivable(merchant: String, customer: String) -> String {
        Self.fill(receivableTemplate, merchant: merchant, customer: Merchant.accountSegment(customer))
    }

    /// The receivable whose customer segment is `segment` as given.
    public func receivable(merchant: String, segment: String) -> String {
        Self.fill(receivableTemplate, merchant: merchant, customer: segment)
    }

    /// The candidate `<Customer>` segments of customer id `id`, in order of preference.
    ///
    /// Sanitizing alone (`Merchant.accountSegment`) is not injective: it upper-cases the first
    /// letter and maps `_`, `.` and every other character outside `[A-Za-z0-9-]` to `-`, so
    /// `cus_1`, `cus-1`, `cus.1` and `Cus_1` would share `Cus-1`. The ledger therefore records,
    /// per merchant, which id holds which segment (unique both ways): the first id to need a
    /// segment gets the plain sanitized one — so every id that collides with no other keeps the
    /// name it always had — and a later id whose plain segment is taken gets it plus `--` and
    /// 16 Crockford base32 characters (80 bits) of SHA-256 of the id (`cus-1` →
    /// `Cus-1--6EYN34HA4A93X3BN`), then 26 characters, then a counter, whichever is free first.
    /// The unknown customer's segment (`reserved`) is never a real customer's plain segment.
    public static func customerSegmentCandidates(_ id: String, reserved: String) -> [String] {
        let plain = Merchant.accountSegment(id)
        // canonicalID is SHA-256 in Crockford base32 behind a fixed prefix.
        let digest = String(PaymentEvent.canonicalID(provider: "payfleet.ledger.customer", eventID: id).dropFirst(4))
        var out = plain == reserved ? [] : [plain]
        out.append(plain + "--" + String(digest.prefix(16)))
        out.append(plain + "--" + digest)
        return out
    }

    public func sales(merchant: String) -> String { Self.fill(salesTemplate, merchant: merchant) }
    public func clearing(merchant: String, provider: String) -> String {
        Self.fill(clearingTemplate, merchant: merchant, provider: Merchant.accountSegment(provider))
    }
    public func paymentFees(merchant: String) -> String { Self.fill(paymentFeesTemplate, merchant: merchant) }
    public func refunds(merchant: String) -> String { Self.fill(refundsTemplate, merchant: merchant) }
    public func disputes(merchant: String) -> String { Self.fill(disputesTemplate, merchant: merchant) }
    public func bank(merchant: String) -> String { Self.fill(bankTemplate, merchant: merchant) }
}
