import Crypto
import Foundation
import PayfleetCore
import PayfleetLedger
import PayfleetIngest
import PayfleetWorker

/// Reads the settlement-aggregator's totals for the simulator's check. The settlement CLI
/// registers one (`SimulateHooks.settlement`); without it the check reports "not running".
/// Over `SettlementBook` it is a few lines:
///
///     struct BookSettlementReader: SimSettlementReader {
///         func totals(configPath: String, from: String, to: String) throws -> [SimExpectation.DayKey: SimExpectation.DayTotals]? {
///             let ctx = try CLIContext.load(GlobalOptions.parse(["--config", configPath]))
///             let files = SettlementCommand.stateFiles(ctx).filter { FileManager.default.fileExists(atPath: $0) }
///             guard !files.isEmpty else { return nil }
///             var out: [SimExpectation.DayKey: SimExpectation.DayTotals] = [:]
///             for d in try SettlementBook(files: files).days(from: from, to: to, merchant: nil) {
///                 let t = d.adjusted  // the day's totals plus late adjustments
///                 out[.init(merchant: d.merchantID, currency: d.currency, date: d.date)] =
///                     .init(count: t.count, gross: t.gross, refunds: t.refunds, disputes: t.disputes, fees: t.fees)
///             }
///             return out
///         }
///     }
///     // at start-up: SimulateHooks.settlement.withLock { $0 = BookSettlementReader() }
public protocol SimSettlementReader: Sendable {
    /// Totals per merchant / currency / business day for the days `from`…`to` (YYYY-MM-DD,
    /// both included), or nil when the worker has no state.
    func totals(configPath: String, from: String, to: String) throws -> [SimExpectation.DayKey: SimExpectation.DayTotals]?
}

public enum SimulateHooks {
    /// The settlement-aggregator's files through `SettlementBook` (replaceable in tests).
    public static let settlement = Locked<(any SimSettlementReader)?>(BookSettlementReader())
}

/// What the simulator needs from the configuration file: merchants, ingest's address and the
/// sandbox secrets, and where the workers put their output.
public struct SimConfig: Sendable {
    public var merchants: [Merchant]
    public var channels: SimChannels
    public var ingestURL: String
    public var stateDir: String
    public var crmFile: String
    public var mailDir: String
    public var configPath: String

    public static func load(_ global: GlobalOptions, apiKey: String, ingestURL: String?) throws -> SimConfig {
        let path = global.configPath
        let root: ConfigSection
        do { root = try ConfigSection.load(file: path, environment: ProcessInfo.processInfo.environment) } catch {
            throw CLIFailure("\(path): \(error)")
        }
        do {
            return try read(root, path: path, apiKey: apiKey, ingestURL: ingestURL)
        } catch {
            throw CLIFailure("\(path): \(error.description)")
        }
    }

    static func read(_ root: ConfigSection, path: String, apiKey: String, ingestURL: String?) throws(ConfigError) -> SimConfig {
        let merchants = try WorkerMain.readMerchants(root)
        let ingest = try IngestConfiguration.read(
            root: root, section: try root.section("ingest"), merchants: merchants, amqp: nil)
        var channels = SimChannels()
        channels.stripeSecret = ingest.stripeSecrets.first
        channels.adyenKeyHex = ingest.adyenHMACKeyHex
        let sources = ingest.standardWebhookSecrets.keys.sorted { ($0 == "billing" ? 0 : 1, $0) < ($1 == "billing" ? 0 : 1, $1) }
        if let s = sources.first, let secret = ingest.standardWebhookSecrets[s]?.first { channels.billing = (s, secret) }
        let hash = SHA256.hash(data: Array(apiKey.utf8)).map { String(format: "%02x", $0) }.joined()
        if let k = ingest.apiKeys.first(where: { $0.sha256 == hash }) {
            channels.api = (apiKey, k.source, k.merchants)
        }
        let stateDir = try root.stateDir()
        let crm = try root.section("crm-sync").string("crm_file", default: (stateDir as NSString).appendingPathComponent("crm.jsonl"))
        let mail = try root.section("receipt-sender").string("mail_dir", default: (stateDir as NSString).appendingPathComponent("mail"))
        let host = ingest.host == "0.0.0.0" ? "127.0.0.1" : ingest.host
        return SimConfig(
            merchants: merchants, channels: channels, ingestURL: ingestURL ?? "http://\(host):\(ingest.port)",
            stateDir: stateDir, crmFile: crm, mailDir: mail, configPath: path)
    }
}

/// One comparison of what was sent with what a worker shows.
public struct SimCheck: Sendable {
    public enum Status: String, Sendable { case agree, disagree, notRunning = "not_running" }
    public var name: String
    public var worker: String
    public var status: Status
    /// Human lines: figure, sent, fleet.
    public var rows: [(String, String, String)] = []
    public var summary: String
    public var differences: [String] = []

    var json: [String: Any] {
        [
            "name": name, "worker": worker, "status": status.rawValue, "summary": summary,
            "differences": differences,
            "rows": rows.map { ["figure": $0.0, "sent": $0.1, "fleet": $0.2] },
        ]
    }
}

/// Reads the fleet's state and compares it with the expectation.
struct SimFleetReader {
    let config: SimConfig
    let global: GlobalOptions
    var emlCache: [String: String?] = [:]

    static func major(_ v: Int64, _ code: String) -> String { LedgerExportFormat.major(v, code) }

    // MARK: Ledger

    static func configuredLedgerFiles(_ global: GlobalOptions) -> String {
        guard let ctx = try? CLIContext.load(global) else { return "the configured state files" }
        return LedgerBook.stateFiles(ctx).joined(separator: ", ")
    }

    func ledgerFiles() -> [String]? {
        guard let ctx = try? CLIContext.load(global) else { return nil }
        let files = LedgerBook.stateFiles(ctx)
        return files.contains(where: { FileManager.default.fileExists(atPath: $0) }) ? files : nil
    }

    /// The trial balance, as `payfleet ledger balance --json` computes it; nil when there is no ledger state.
    func ledgerBalances() -> [SimExpectation.AccountKey: Int64]? {
        guard let files = ledgerFiles(), let book = try? LedgerBook(files: files), let rows = try? book.balances() else {
            return nil
        }
        var out: [SimExpectation.AccountKey: Int64] = [:]
        for r in rows { out[.init(r.account, r.currency)] = r.balance }
        return out
    }

    /// A receivable under the customer's plain sanitized name (`Receivable:Pp-x1`): a ledger
    /// that keeps ids with `-`, `.` or upper case apart appends `--` and a digest to the
    /// segment (`Pp-x1--0123456789ABCDEF`); sanitized names never contain `--`, so dropping
    /// the suffix maps each of the run's customers back to the account the expectation names.
    static func plainReceivable(_ k: SimExpectation.AccountKey) -> SimExpectation.AccountKey {
        guard let r = k.account.range(of: ":Receivable:"), let dd = k.account.range(of: "--", range: r.upperBound..<k.account.endIndex)
        else { return k }
        let suffix = k.account[dd.upperBound...]
        guard suffix.count == 16, suffix.allSatisfy({ $0.isASCII && ($0.isUppercase || $0.isNumber) }) else { return k }
        return .init(String(k.account[..<dd.lowerBound]), k.currency)
    }

    func ledgerCheck(baseline: [SimExpectation.AccountKey: Int64]?, expected: SimExpectation) -> SimCheck {
        guard let now = ledgerBalances() else {
            return SimCheck(name: "ledger", worker: "ledger-writer", status: .notRunning,
                            summary: "not running: ledger-writer (no ledger state at \(Self.configuredLedgerFiles(global)))")
        }
        let base = baseline ?? [:]
        var delta: [SimExpectation.AccountKey: Int64] = [:]
        for k in Set(now.keys).union(base.keys) {
            let v = (now[k] ?? 0) - (base[k] ?? 0)
            if v != 0 { delta[Self.plainReceivable(k), default: 0] += v }
        }
        delta = delta.filter { $0.value != 0 }
        var diffs: [String] = []
        for k in Set(delta.keys).union(expected.ledger.keys).sorted() {
            let e = expected.ledger[k] ?? 0
            let f = delta[k] ?? 0
            if e != f { diffs.append("\(k.account) \(k.currency): sent \(Self.major(e, k.currency)), fleet \(Self.major(f, k.currency))") }
        }
        // Trial balance of the whole books per merchant and currency: zero.
        let segments = Dictionary(config.merchants.map { (Merchant.accountSegment($0.ledgerName), $0.id) }, uniquingKeysWith: { a, _ in a })
        var trial: [String: Int64] = [:]
        for (k, v) in now {
            let parts = k.account.split(separator: ":")
            let seg = parts.count > 1 ? String(parts[1]) : k.account
            trial["\(segments[seg] ?? seg) \(k.currency)", default: 0] += v
        }
        for (mc, v) in trial.sorted(by: { $0.key < $1.key }) where v != 0 {
            diffs.append("trial balance \(mc) is \(v), not zero")
        }
        var rows: [(String, String, String)] = []
        for (mc, v) in trial.sorted(by: { $0.key < $1.key }) {
            let cur = String(mc.split(separator: " ").last ?? "")
            rows.append(("trial balance \(mc)", Self.major(0, cur), Self.major(v, cur)))
        }
        func group(_ d: [SimExpectation.AccountKey: Int64]) -> [SimExpectation.AccountKey: Int64] {
            var g: [SimExpectation.AccountKey: Int64] = [:]
            for (k, v) in d {
                var a = k.account
                if let r = a.range(of: ":Receivable:") { a = String(a[..<r.upperBound]) + "*" }
                g[.init(a, k.currency), default: 0] += v
            }
            return g
        }
        let ge = group(expected.ledger)
        let gf = group(delta)
        for k in Set(ge.keys).union(gf.keys).sorted() {
            rows.append(("\(k.account) \(k.currency)", Self.major(ge[k] ?? 0, k.currency), Self.major(gf[k] ?? 0, k.currency)))
        }
        let ok = diffs.isEmpty
        return SimCheck(
            name: "ledger", worker: "ledger-writer", status: ok ? .agree : .disagree, rows: rows,
            summary: ok
                ? "\(expected.ledger.count) account changes agree; trial balance zero for \(trial.count) merchant/currency pairs"
                : "\(diffs.count) differences", differences: diffs)
    }

    // MARK: CRM

    func crmCheck(expected: SimExpectation, runCustomers: Set<String>) -> SimCheck {
        guard let text = try? String(contentsOfFile: config.crmFile, encoding: .utf8) else {
            return SimCheck(name: "crm", worker: "crm-sync", status: .notRunning,
                            summary: "not running: crm-sync (no \(config.crmFile))")
        }
        var fleet: [SimExpectation.CustomerKey: SimExpectation.CustomerFigures] = [:]
        var versions: [SimExpectation.CustomerKey: Int64] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                let cust = o["customer_id"] as? String, runCustomers.contains(cust),
                let cur = o["currency"] as? String
            else { continue }
            func n(_ k: String) -> Int64 { (o[k] as? NSNumber)?.int64Value ?? 0 }
            let key = SimExpectation.CustomerKey(customer: cust, merchant: o["merchant_id"] as? String ?? "", currency: cur)
            // The last line is current; a `version` (when present) settles lines written out of order.
            if let v = (o["version"] as? NSNumber)?.int64Value {
                if let seen = versions[key], seen > v { continue }
                versions[key] = v
            }
            fleet[key] = .init(outstanding: n("outstanding"), paid: n("paid"), refunded: n("refunded"), disputed: n("disputed"))
        }
        var diffs: [String] = []
        for k in Set(expected.customers.keys).union(fleet.keys).sorted() {
            let e = expected.customers[k] ?? .init()
            let f = fleet[k] ?? .init()
            if e != f {
                func s(_ x: SimExpectation.CustomerFigures) -> String {
                    "outstanding \(x.outstanding) paid \(x.paid) refunded \(x.refunded) disputed \(x.disputed)"
                }
                diffs.append("\(k.customer) \(k.merchant) \(k.currency): sent \(s(e)); fleet \(s(f))")
            }
        }
        var rows: [(String, String, String)] = []
        var byCurrency: [String: (SimExpectation.CustomerFigures, SimExpectation.CustomerFigures, Int)] = [:]
        for k in Set(expected.customers.keys).union(fleet.keys) {
            var t = byCurrency[k.currency] ?? (.init(), .init(), 0)
            let e = expected.customers[k] ?? .init()
            let f = fleet[k] ?? .init()
            t.0 = .init(outstanding: t.0.outstanding + e.outstanding, paid: t.0.paid + e.paid, refunded: t.0.refunded + e.refunded, disputed: t.0.disputed + e.disputed)
            t.1 = .init(outstanding: t.1.outstanding + f.outstanding, paid: t.1.paid + f.paid, refunded: t.1.refunded + f.refunded, disputed: t.1.disputed + f.disputed)
            t.2 += 1
            byCurrency[k.currency] = t
        }
        for (c, t) in byCurrency.sorted(by: { $0.key < $1.key }) {
            rows.append(("\(c) customers", "\(t.2)", "\(t.2)"))
            rows.append(("\(c) outstanding", Self.major(t.0.outstanding, c), Self.major(t.1.outstanding, c)))
            rows.append(("\(c) paid", Self.major(t.0.paid, c), Self.major(t.1.paid, c)))
            rows.append(("\(c) refunded", Self.major(t.0.refunded, c), Self.major(t.1.refunded, c)))
            rows.append(("\(c) disputed", Self.major(t.0.disputed, c), Self.major(t.1.disputed, c)))
        }
        let ok = diffs.isEmpty
        return SimCheck(
            name: "crm", worker: "crm-sync", status: ok ? .agree : .disagree, rows: rows,
            summary: ok ? "\(expected.customers.count) customer balances agree" : "\(diffs.count) customer balances differ",
            differences: diffs)
    }

    // MARK: Receipts

    /// The `X-Payfleet-Event-ID` (or an event id in the Message-ID) of a message file.
    static func eventID(ofMessage text: String) -> String? {
        let head = text.components(separatedBy: "\r\n\r\n").first.map { $0.components(separatedBy: "\n\n").first ?? $0 } ?? text
        var messageID: String?
        for line in head.split(whereSeparator: \.isNewline) {
            let l = line.lowercased()
            if l.hasPrefix("x-payfleet-event-id:") {
                return line.dropFirst("x-payfleet-event-id:".count).trimmingCharacters(in: .whitespaces)
            }
            if l.hasPrefix("message-id:") { messageID = String(line) }
        }
        if let m = messageID, let r = m.range(of: #"evt_[0-9A-Za-z]{26}"#, options: .regularExpression) { return String(m[r]) }
        return nil
    }

    mutating func receiptsCheck(expected: SimExpectation, runEvents: Set<String>) -> SimCheck {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: config.mailDir, isDirectory: &isDir), isDir.boolValue,
            let names = try? fm.contentsOfDirectory(atPath: config.mailDir)
        else {
            return SimCheck(name: "receipts", worker: "receipt-sender", status: .notRunning,
                            summary: "not running: receipt-sender (no \(config.mailDir))")
        }
        var found: [String: Int] = [:]
        for n in names where n.hasSuffix(".eml") {
            let id: String?
            if let cached = emlCache[n] {
                id = cached
            } else {
                let path = (config.mailDir as NSString).appendingPathComponent(n)
                guard let data = fm.contents(atPath: path) else { continue }
                id = Self.eventID(ofMessage: String(decoding: data.prefix(8192), as: UTF8.self))
                emlCache[n] = id
            }
            if let id, runEvents.contains(id) { found[id, default: 0] += 1 }
        }
        let missing = expected.receipts.subtracting(found.keys)
        let unexpected = Set(found.keys).subtracting(expected.receipts)
        let doubled = found.filter { $0.value > 1 }
        var diffs: [String] = []
        if !missing.isEmpty { diffs.append("\(missing.count) receipts not sent, e.g. \(missing.sorted().prefix(3).joined(separator: ", "))") }
        if !unexpected.isEmpty { diffs.append("\(unexpected.count) unexpected receipts, e.g. \(unexpected.sorted().prefix(3).joined(separator: ", "))") }
        if !doubled.isEmpty { diffs.append("\(doubled.count) events with more than one receipt, e.g. \(doubled.keys.sorted().prefix(3).joined(separator: ", "))") }
        let total = found.values.reduce(0, +)
        return SimCheck(
            name: "receipts", worker: "receipt-sender", status: diffs.isEmpty ? .agree : .disagree,
            rows: [("email receipts for this run", "\(expected.receipts.count)", "\(total)")],
            summary: diffs.isEmpty ? "\(expected.receipts.count) email receipts, one per event" : diffs.joined(separator: "; "),
            differences: diffs)
    }

    // MARK: Settlement

    func settlementTotals(days: ClosedRange<String>) -> [SimExpectation.DayKey: SimExpectation.DayTotals]? {
        guard let reader = SimulateHooks.settlement.current else { return nil }
        let totals: [SimExpectation.DayKey: SimExpectation.DayTotals]?? = try? reader.totals(
            configPath: config.configPath, from: days.lowerBound, to: days.upperBound)
        return totals ?? nil
    }

    func settlementCheck(
        baseline: [SimExpectation.DayKey: SimExpectation.DayTotals]?, expected: SimExpectation, days: ClosedRange<String>
    ) -> SimCheck {
        guard let now = settlementTotals(days: days) else {
            return SimCheck(name: "settlement", worker: "settlement-aggregator", status: .notRunning,
                            summary: "not running: settlement-aggregator (no settlement report)")
        }
        return Self.settlementCheck(now: now, baseline: baseline, expected: expected)
    }

    /// Compares the change of the fleet's day totals since `baseline` with the expectation.
    static func settlementCheck(
        now: [SimExpectation.DayKey: SimExpectation.DayTotals], baseline: [SimExpectation.DayKey: SimExpectation.DayTotals]?,
        expected: SimExpectation
    ) -> SimCheck {
        let base = baseline ?? [:]
        var diffs: [String] = []
        var rows: [(String, String, String)] = []
        for k in Set(expected.settlement.keys).union(now.keys.filter { (now[$0] ?? .init()) != (base[$0] ?? .init()) }).sorted() {
            let e = expected.settlement[k] ?? .init()
            let f = (now[k] ?? .init()) - (base[k] ?? .init())
            let c = k.currency
            func s(_ t: SimExpectation.DayTotals) -> String {
                "count \(t.count) gross \(Self.major(t.gross, c)) refunds \(Self.major(t.refunds, c)) disputes \(Self.major(t.disputes, c)) fees \(Self.major(t.fees, c)) net \(Self.major(t.net, c))"
            }
            rows.append(("\(k.merchant) \(c) \(k.date) net (count)", "\(Self.major(e.net, c)) (\(e.count))", "\(Self.major(f.net, c)) (\(f.count))"))
            if e != f { diffs.append("\(k.merchant) \(c) \(k.date): sent \(s(e)); fleet \(s(f))") }
        }
        return SimCheck(
            name: "settlement", worker: "settlement-aggregator", status: diffs.isEmpty ? .agree : .disagree, rows: rows,
            summary: diffs.isEmpty ? "\(expected.settlement.count) merchant/currency/day totals agree" : "\(diffs.count) day totals differ",
            differences: diffs)
    }
}
