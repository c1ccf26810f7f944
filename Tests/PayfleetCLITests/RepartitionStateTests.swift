import Foundation
import Logging
import PayfleetAMQP
import PayfleetCRMSync
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetReceipts
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

@testable import PayfleetCLI

/// The state split of `payfleet partitions resize` for ledger-writer, crm-sync and
/// receipt-sender, on real SQLite files of each worker's schema filled through the worker's
/// handler in the runtime's batch step (`HandlerHarness`). Each event goes to the old partition
/// the broker routes its key to, and each key's new owner is the broker's answer too
/// (`PartitionProbe`, a throw-away consistent-hash exchange). The expected values come from the
/// events and from a reference file (one partition, every event, the same handler), never from
/// the split code.
@Suite("Repartitioning state", .serialized)
struct RepartitionStateTests {
    static var amqp: AMQPConfiguration { get throws { try AMQPConfiguration(url: TestEnvironment.amqpURL) } }

    static func owners(_ keys: [String], _ partitions: Int, _ key: WorkerTopology.PartitionKey) async throws -> [String: Int] {
        try await PartitionProbe.owners(
            keys: Array(Set(keys)), partitions: partitions, header: key.header, stem: "payfleet.rsztest", amqp: try amqp)
    }

    /// One harness per file (created and migrated as the runtime does).
    static func harnesses<H: WorkerHandler>(_ paths: [String], _ make: () throws -> H) async throws -> [HandlerHarness<H>] {
        var out: [HandlerHarness<H>] = []
        for p in paths {
            let h = try make()
            let store = try await Store(path: p, migrations: HandlerHarness<H>.migrations(h), durability: .normal)
            out.append(try await HandlerHarness(handler: h, store: store))
        }
        return out
    }

    /// Feeds each harness the events whose key it owns, in order; the outcomes of all.
    @discardableResult
    static func route<H: WorkerHandler>(
        _ hs: [HandlerHarness<H>], _ events: [PaymentEvent], owner: [String: Int], key: (PaymentEvent) -> String,
        performEffects: Bool = false
    ) async throws -> [HandlerHarness<H>.Outcome] {
        var out: [HandlerHarness<H>.Outcome] = []
        for (i, h) in hs.enumerated() {
            out += try await h.run(events.filter { owner[key($0)] == i }, performEffects: performEffects)
        }
        return out
    }

    /// The split as the command runs it once the queues are drained: checkpoint, rules for every
    /// table, keys, build and verify, install. Returns the new files.
    static func resize(
        section: String, old: [String], to n: Int, dir: String, newOwner: [String: Int]
    ) async throws -> (files: [String], built: PartitionStateSplit.Built) {
        let name = ((old[0] as NSString).lastPathComponent as NSString).deletingPathExtension.split(separator: ".").first.map(String.init)!
        let files = (0..<n).map { dir + "/" + WorkerIdentity.stateFileName(name: name, partition: $0, partitions: n) }
        let split = PartitionStateSplit(
            rules: PartitionStateRules.forWorker(section)!, oldFiles: old, newFiles: files,
            workDir: dir + "/\(name).resize-\(old.count)to\(n)-\(UUID().uuidString.prefix(8))")
        let thread = BlockingThread(name: "resize-test")
        defer { thread.shutdown() }
        let built = try await thread.run { () throws -> PartitionStateSplit.Built in
            try split.checkpointOld()
            try split.checkTables()
            _ = try split.keys()
            let b = try split.buildAndVerify(newOwner: newOwner)
            try split.install()
            return b
        }
        return (files, built)
    }

    static func strings(_ path: String, _ sql: String) throws -> [String] {
        try SQLiteConnection(path: path, readOnly: true).query(sql).map { $0.string(0) ?? "" }
    }

    static func isDuplicate<H>(_ o: HandlerHarness<H>.Outcome) -> Bool {
        if case .duplicate = o { return true }
        return false
    }

    // MARK: ledger-writer

    static let ledgerMerchants = (0..<12).map {
        Merchant(id: "m_rl\($0)", timeZone: "UTC", currencies: EventFactory.currencies)
    }

    /// Blocks of ten events of one merchant: payments (one naming an invoice), a refund without
    /// a customer, a failure, a dispute and its close, an invoice without a customer, a failed
    /// refund and a reversal,
    /// so every ledger table has rows (reclassifications, unresolved receivables, reversals).
    static func ledgerEvents(_ range: Range<Int>) -> [PaymentEvent] {
        range.map { n in
            let m = "m_rl\((n / 10 * 7) % 12)"
            let b = n - n % 10
            var e: PaymentEvent
            switch n % 10 {
            case 0, 1, 2:
                e = EventFactory.payment(n, prefix: "rl", type: .paymentSucceeded, merchant: m)
                if n % 10 == 2 { e.invoiceID = "in_rl_\(b + 6)" }
            case 3:
                e = EventFactory.payment(n, prefix: "rl", type: .paymentRefunded, merchant: m, metadata: ["refund_id": "re_rl_\(n)"])
                e.payment?.id = "pi_rl_\(b)"
                e.customer = nil
            case 4: e = EventFactory.payment(n, prefix: "rl", type: .paymentFailed, merchant: m)
            case 5:
                e = EventFactory.payment(n, prefix: "rl", type: .paymentDisputed, merchant: m)
                e.payment?.id = "pi_rl_\(b + 1)"
            case 6:
                // Without a customer: found through the payment at 2 in even blocks, else unresolved.
                e = EventFactory.payment(n, prefix: "rl", type: .invoiceIssued, merchant: m)
                e.invoiceID = (b / 10) % 2 == 0 ? "in_rl_\(n)" : "in_rl_open_\(n)"
                e.payment = nil
                e.customer = nil
            case 7:
                e = EventFactory.payment(n, prefix: "rl", type: .refundFailed, merchant: m, metadata: ["refund_id": "re_rl_\(b + 3)"])
                e.payment?.id = "pi_rl_\(b)"
                e.customer = nil
            case 8:
                e = EventFactory.payment(n, prefix: "rl", type: .paymentReversed, merchant: m)
                e.payment?.id = "pi_rl_\(b + 2)"
            default:
                e = EventFactory.payment(n, prefix: "rl", type: .disputeClosed, merchant: m, metadata: ["outcome": "won"])
                e.payment?.id = "pi_rl_\(b + 1)"
            }
            return e
        }
    }

    /// (merchant, account, currency) → balance, from one file.
    static func balances(_ path: String) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        for r in try SQLiteConnection(path: path, readOnly: true).query(
            "SELECT t.merchant_id, p.account, p.currency, SUM(p.amount) FROM postings p JOIN transactions t ON t.txid = p.txid GROUP BY 1, 2, 3")
        {
            out["\(r.string(0) ?? "")|\(r.string(1) ?? "")|\(r.string(2) ?? "")"] = r.int(3) ?? 0
        }
        return out
    }

    /// merchant → its transactions (by rowid) and postings (by id), in the file's order.
    static func order(_ path: String) throws -> [String: [String]] {
        var out: [String: [String]] = [:]
        let db = try SQLiteConnection(path: path, readOnly: true)
        for r in try db.query("SELECT merchant_id, txid FROM transactions ORDER BY rowid") {
            out[r.string(0) ?? "", default: []].append("tx " + (r.string(1) ?? ""))
        }
        for r in try db.query(
            "SELECT t.merchant_id, p.txid, p.account, p.amount FROM postings p JOIN transactions t ON t.txid = p.txid ORDER BY p.id")
        {
            out[r.string(0) ?? "", default: []].append("p \(r.string(1) ?? "") \(r.string(2) ?? "") \(r.int(3) ?? 0)")
        }
        return out
    }

    @Test("ledger-writer 2 → 4: each merchant's books in the file that owns it, every transaction balanced in its file, balances as before, manual entries with their transaction")
    func ledgerTwoToFour() async throws {
        let dir = TestEnvironment.makeTempDir("rsz-ledger")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let make = { LedgerHandler(merchants: Self.ledgerMerchants) }
        let round1 = Self.ledgerEvents(0..<600)
        let round2 = Self.ledgerEvents(600..<900)
        let merchants = Self.ledgerMerchants.map(\.id)
        let own2 = try await Self.owners(merchants, 2, .merchant)
        let own4 = try await Self.owners(merchants, 4, .merchant)
        #expect(Set(own4.values).count == 4, "every new partition owns a merchant: \(own4)")

        let old = (0..<2).map { dir + "/ledger-writer.p\($0).sqlite" }
        var hs: [HandlerHarness<LedgerHandler>]? = try await Self.harnesses(old, make)
        let outcomes = try await Self.route(hs!, round1, owner: own2, key: \.merchantID)
        #expect(outcomes.filter { !$0.isNew }.isEmpty, "every event applied: \(outcomes.compactMap(\.failure).prefix(3))")
        // The reference: one file, every event, the same handler.
        let reference = try await HandlerHarness(handler: make(), name: "ledger-ref")
        try await reference.apply(round1)
        // A manual entry and its reversal (written by `payfleet ledger post | revert`), in the
        // merchant's old file and in the reference.
        let manualMerchant = "m_rl3"
        let legs = [LedgerJournal.Leg(account: "Expenses:M-rl3:BankFees", currency: "GBP", amount: 1250),
                    LedgerJournal.Leg(account: "Assets:M-rl3:Bank", currency: "GBP", amount: -1250)]
        for file in [old[own2[manualMerchant]!], reference.path] {
            let journal = try LedgerJournal(files: [file])
            let posted = try journal.post(merchant: manualMerchant, date: "2026-01-05", reason: "bank fee", legs: legs, id: "rsz1", stateFile: file)
            _ = try journal.revert(transactionID: posted.transactionID, date: "2026-01-06", reason: "wrong month")
        }
        let oldBalances = try old.map(Self.balances).reduce(into: [String: Int64]()) { $0.merge($1) { a, _ in a } }
        let oldOrder = try old.map(Self.order).reduce(into: [String: [String]]()) { $0.merge($1) { a, _ in a } }
        #expect(oldBalances == (try Self.balances(reference.path)))
        hs = nil

        let (files, built) = try await Self.resize(section: "ledger-writer", old: old, to: 4, dir: dir, newOwner: own4)
        print("ledger split: rows per file \(built.rows.map { $0.values.reduce(0, +) }), merchants per file \(built.keys)")
        let refBalances = try Self.balances(reference.path)
        var seen: [String: Int64] = [:]
        for (i, f) in files.enumerated() {
            let mine = Set(merchants.filter { own4[$0] == i })
            // Rows only of the merchants it owns, and all of theirs.
            for table in ["transactions", "ledger_events", "booked_originals", "reversals", "customer_accounts", "customer_links", "unresolved_receivables"] {
                let found = Set(try Self.strings(f, "SELECT DISTINCT merchant_id FROM \(table)"))
                #expect(found.isSubset(of: mine), "\(table) of file \(i) holds merchants \(found.subtracting(mine))")
            }
            let ids = Set(try Self.strings(f, "SELECT event_id FROM ledger_events"))
            #expect(ids == Set(round1.filter { mine.contains($0.merchantID) }.map(\.id)), "file \(i): the events of its merchants")
            // Balanced in the file that holds it: every transaction's postings sum to zero per currency.
            #expect(try Self.strings(f, "SELECT txid FROM postings GROUP BY txid, currency HAVING SUM(amount) <> 0").isEmpty)
            #expect(try Self.strings(f, "SELECT txid FROM postings WHERE txid NOT IN (SELECT txid FROM transactions)").isEmpty)
            #expect(try Self.strings(f, "SELECT txid FROM transactions WHERE txid NOT IN (SELECT txid FROM transaction_checks)").isEmpty)
            let b = try Self.balances(f)
            #expect(b == refBalances.filter { mine.contains(String($0.key.split(separator: "|")[0])) }, "file \(i): its merchants' balances as the reference's")
            seen.merge(b) { a, _ in a }
            for (m, rows) in try Self.order(f) {
                #expect(rows == oldOrder[m], "file \(i): \(m)'s transactions and postings in their old order")
            }
            let manual = try Self.strings(f, "SELECT txid FROM manual_entries ORDER BY txid")
            #expect(manual == (mine.contains(manualMerchant) ? ["man_rsz1", "man_rsz1/revert"] : []), "file \(i) manual entries \(manual)")
        }
        #expect(seen == oldBalances, "balances per merchant, account and currency over the new files equal the old totals")
        for table in ["reversals", "unresolved_receivables", "booked_originals", "customer_links", "customer_accounts", "manual_entries"] {
            let n = try files.reduce(0) { $0 + Int(try Self.strings($1, "SELECT count(*) FROM \(table)")[0])! }
            #expect(n > 0, "the mix gave \(table) rows to split")
        }
        let reclass = try files.reduce(0) { $0 + Int(try Self.strings($1, "SELECT count(*) FROM transactions WHERE kind = 'reclass'")[0])! }
        print("ledger split: \(reclass) reclassifying transactions")

        // The new files carry on as the reference: the old events again are duplicates, new ones book as there.
        let nhs = try await Self.harnesses(files, make)
        let again = try await Self.route(nhs, round1, owner: own4, key: \.merchantID)
        #expect(again.count == round1.count && again.allSatisfy(Self.isDuplicate), "redelivered after the resize: all duplicates")
        let more = try await Self.route(nhs, round2, owner: own4, key: \.merchantID)
        #expect(more.filter { !$0.isNew }.isEmpty)
        try await reference.apply(round2)
        let after = try files.map(Self.balances).reduce(into: [String: Int64]()) { $0.merge($1) { a, _ in a } }
        #expect(after == (try Self.balances(reference.path)), "after more events the split books equal the reference's")
        let journal = try LedgerJournal(files: files)
        #expect(try journal.file(forMerchant: manualMerchant) == files[own4[manualMerchant]!])
    }

    @Test("ledger-writer: a posting without its transaction stops the split, naming the table")
    func ledgerOrphanRefused() async throws {
        let dir = TestEnvironment.makeTempDir("rsz-ledger-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let old = [dir + "/ledger-writer.sqlite"]
        var hs: [HandlerHarness<LedgerHandler>]? = try await Self.harnesses(old) { LedgerHandler(merchants: Self.ledgerMerchants) }
        try await hs![0].apply(Self.ledgerEvents(0..<20))
        hs = nil
        let db = try SQLiteConnection(path: old[0])
        try db.executeScript("PRAGMA foreign_keys=OFF; INSERT INTO postings (txid, account, currency, amount) VALUES ('tx_gone', 'Assets:X:Bank', 'GBP', 5)")
        let own = try await Self.owners(Self.ledgerMerchants.map(\.id), 2, .merchant)
        await #expect {
            _ = try await Self.resize(section: "ledger-writer", old: old, to: 2, dir: dir, newOwner: own)
        } throws: { e in
            let m = (e as? CLIFailure)?.message ?? ""
            return m.contains("1 rows of table 'postings'") && m.contains("no transactions row") && m.contains("nothing was changed")
        }
        #expect(FileManager.default.fileExists(atPath: old[0]), "the old file stays")
    }

    // MARK: crm-sync

    static func crmEvents(_ range: Range<Int>, prefix: String) -> [PaymentEvent] {
        range.map { n in
            let types: [PaymentEvent.EventType] = [.paymentSucceeded, .paymentSucceeded, .paymentSucceeded, .paymentRefunded, .paymentDisputed]
            return EventFactory.payment(n, prefix: prefix, type: types[n % types.count])
        }
    }

    struct Figures: Equatable, CustomStringConvertible {
        var outstanding: Int64 = 0, paid: Int64 = 0, refunded: Int64 = 0, disputed: Int64 = 0
        var description: String { "o\(outstanding) p\(paid) r\(refunded) d\(disputed)" }
    }

    /// customer|merchant|currency → figures, from the events (no invoices, no reversals).
    static func facts(_ events: [PaymentEvent]) -> [String: Figures] {
        var out: [String: Figures] = [:]
        for e in events {
            guard let c = e.customer?.id else { continue }
            let k = "\(c)|\(e.merchantID)|\(e.amount.currency.code)"
            var f = out[k] ?? Figures()
            switch e.type {
            case .paymentSucceeded: f.paid += e.amount.value
            case .paymentRefunded: f.refunded += e.amount.value
            case .paymentDisputed: f.disputed += e.amount.value
            default: break
            }
            out[k] = f
        }
        return out
    }

    static func crmFigures(_ path: String) throws -> [String: Figures] {
        var out: [String: Figures] = [:]
        for r in try SQLiteConnection(path: path, readOnly: true).query(
            "SELECT customer_id, merchant_id, currency, outstanding, paid, refunded, disputed FROM crm_balances")
        {
            out["\(r.string(0) ?? "")|\(r.string(1) ?? "")|\(r.string(2) ?? "")"] = Figures(
                outstanding: r.int(3) ?? 0, paid: r.int(4) ?? 0, refunded: r.int(5) ?? 0, disputed: r.int(6) ?? 0)
        }
        return out
    }

    static func crmHandler(_ dir: String) throws -> CRMHandler {
        CRMHandler(connector: try SandboxConnector(path: dir + "/crm-\(UUID().uuidString.prefix(6)).jsonl"))
    }

    @Test("crm-sync 2 → 4: each customer's events and balances in the file that owns the customer, balances as the events say")
    func crmTwoToFour() async throws {
        let dir = TestEnvironment.makeTempDir("rsz-crm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let round1 = Self.crmEvents(0..<700, prefix: "rc")
        let round2 = Self.crmEvents(700..<900, prefix: "rc")
        let keys = (round1 + round2).map(\.customerKey)
        let own2 = try await Self.owners(keys, 2, .customer)
        let own4 = try await Self.owners(keys, 4, .customer)
        let old = (0..<2).map { dir + "/crm-sync.p\($0).sqlite" }
        var hs: [HandlerHarness<CRMHandler>]? = try await Self.harnesses(old) { try Self.crmHandler(dir) }
        let outcomes = try await Self.route(hs!, round1, owner: own2, key: \.customerKey, performEffects: true)
        #expect(outcomes.filter { !$0.isNew }.isEmpty, "\(outcomes.compactMap(\.failure).prefix(3))")
        hs = nil
        let reference = try await HandlerHarness(handler: try Self.crmHandler(dir), name: "crm-ref")
        try await reference.apply(round1)
        let facts1 = Self.facts(round1)
        #expect(try Self.crmFigures(reference.path) == facts1, "the reference agrees with the events")

        let (files, built) = try await Self.resize(section: "crm-sync", old: old, to: 4, dir: dir, newOwner: own4)
        print("crm split: rows per file \(built.rows.map { $0.values.reduce(0, +) }), customer keys per file \(built.keys)")
        var union: [String: Figures] = [:]
        for (i, f) in files.enumerated() {
            let ids = Set(try Self.strings(f, "SELECT event_id FROM crm_events"))
            #expect(ids == Set(round1.filter { own4[$0.customerKey] == i }.map(\.id)), "file \(i): the events of its customers")
            for table in ["crm_balances", "crm_customers", "crm_links"] {
                let stray = try Self.strings(f, "SELECT DISTINCT customer_id FROM \(table)").filter { own4[$0] != i }
                #expect(stray.isEmpty, "\(table) of file \(i) holds customers it does not own: \(stray.prefix(3))")
            }
            let figures = try Self.crmFigures(f)
            #expect(figures == facts1.filter { own4[String($0.key.split(separator: "|")[0])] == i }, "file \(i): balances as the events say")
            union.merge(figures) { a, _ in a }
        }
        #expect(union == facts1, "customer balances over the new files equal the old ones")

        let nhs = try await Self.harnesses(files) { try Self.crmHandler(dir) }
        let again = try await Self.route(nhs, round1, owner: own4, key: \.customerKey, performEffects: true)
        #expect(again.count == round1.count && again.allSatisfy(Self.isDuplicate), "redelivered after the resize: all duplicates")
        try await Self.route(nhs, round2, owner: own4, key: \.customerKey)
        try await reference.apply(round2)
        let after = try files.map(Self.crmFigures).reduce(into: [String: Figures]()) { $0.merge($1) { a, _ in a } }
        #expect(after == Self.facts(round1 + round2))
        #expect(after == (try Self.crmFigures(reference.path)))
    }

    /// A payment of customer `c` and a refund of it that names no customer (routed by the
    /// payment id, counted for `c` through the payment's link).
    static func coupled(_ c: String, _ payment: String, _ n: Int) -> [PaymentEvent] {
        var pay = EventFactory.payment(n, prefix: "rcc", type: .paymentSucceeded, amount: 5_000, currency: "GBP", merchant: "m_acme")
        pay.customer = .init(id: c, name: "C", email: "c@example.com")
        pay.payment?.id = payment
        var refund = EventFactory.payment(n + 1, prefix: "rcc", type: .paymentRefunded, amount: 1_500, currency: "GBP", merchant: "m_acme")
        refund.customer = nil
        refund.payment?.id = payment
        return [pay, refund]
    }

    @Test("crm-sync 1 → 2: a customerless refund counted for its customer splits when both keys land together, and is refused, naming the table, when they would not")
    func crmCoupledKeys() async throws {
        let dir = TestEnvironment.makeTempDir("rsz-crm-cpl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let candidates = (0..<40).map { ("cus_cpl\($0)", "pi_cpl\($0)") }
        let own2 = try await Self.owners(candidates.flatMap { [$0.0, $0.1] }, 2, .customer)
        guard let together = candidates.first(where: { own2[$0.0] == own2[$0.1] }),
            let apart = candidates.first(where: { own2[$0.0] != own2[$0.1] })
        else {
            Issue.record("no candidate pairs for both cases: \(own2)")
            return
        }
        let base = Self.crmEvents(0..<50, prefix: "rcb")
        let owner = try await Self.owners(base.map(\.customerKey) + [together.0, together.1, apart.0, apart.1], 2, .customer)

        // Refused: the pair whose keys the new layout puts apart.
        let badOld = [dir + "/bad/crm-sync.sqlite"]
        var bad: [HandlerHarness<CRMHandler>]? = try await Self.harnesses(badOld) { try Self.crmHandler(dir) }
        try await bad![0].apply(base + Self.coupled(apart.0, apart.1, 1_000))
        #expect(try Self.crmFigures(badOld[0])["\(apart.0)|m_acme|GBP"]?.refunded == 1_500, "the refund reached its customer through the link")
        bad = nil
        await #expect {
            _ = try await Self.resize(section: "crm-sync", old: badOld, to: 2, dir: dir + "/bad", newOwner: owner)
        } throws: { e in
            let m = (e as? CLIFailure)?.message ?? ""
            return m.contains("table 'crm_events'") && m.contains(apart.0) && m.contains(apart.1) && m.contains("Try another --to")
        }
        #expect(FileManager.default.fileExists(atPath: badOld[0]) && !FileManager.default.fileExists(atPath: dir + "/bad/crm-sync.p0.sqlite"))

        // Split: the pair that lands in one new file keeps the refund with its customer.
        let goodOld = [dir + "/good/crm-sync.sqlite"]
        var good: [HandlerHarness<CRMHandler>]? = try await Self.harnesses(goodOld) { try Self.crmHandler(dir) }
        try await good![0].apply(base + Self.coupled(together.0, together.1, 2_000))
        good = nil
        let (files, _) = try await Self.resize(section: "crm-sync", old: goodOld, to: 2, dir: dir + "/good", newOwner: owner)
        let home = files[owner[together.0]!]
        #expect(try Self.crmFigures(home)["\(together.0)|m_acme|GBP"] == Figures(paid: 5_000, refunded: 1_500))
        let refundID = Self.coupled(together.0, together.1, 2_000)[1].id
        #expect(try Self.strings(home, "SELECT customer_id FROM crm_events WHERE event_id = '\(refundID)'") == [together.0])
    }

    @Test("payfleet partitions resize crm-sync: keys sharing state that the new layout would part are refused before the relay is paused, and by a dry run; kept together, the command resizes 1 → 2")
    func crmRefusedByCommand() async throws {
        var o = WorkerProcess.Options.worker("crm-sync", prefix: "rszc")
        o.adminPort = 0
        try await WorkerProcess.with(o) { fleet in
            try await fleet.declare()
            let candidates = (0..<40).map { ("cus_cmd\($0)", "pi_cmd\($0)") }
            let own2 = try await Self.owners(candidates.flatMap { [$0.0, $0.1] }, 2, .customer)
            guard let apart = candidates.first(where: { own2[$0.0] != own2[$0.1] }) else {
                Issue.record("no pair the 2-partition layout parts: \(own2)")
                return
            }
            var hs: [HandlerHarness<CRMHandler>]? = try await Self.harnesses([fleet.dbPath]) { try Self.crmHandler(fleet.dir) }
            try await hs![0].apply(Self.crmEvents(0..<30, prefix: "rszc") + Self.coupled(apart.0, apart.1, 500))
            hs = nil
            let outbox = try await Outbox(path: fleet.dir + "/state/ingest.sqlite", logger: Logger(label: "test-ingest"))
            for extra in [["--dry-run"], []] {
                let run = try await fleet.cli(["partitions", "resize", "crm-sync", "--to", "2", "--pause-timeout", "1s"] + extra)
                print("resize crm-sync \(extra): \(run.stderr)")
                #expect(run.status != 0, "\(extra) \(run.stdout)")
                #expect(run.stderr.contains("table 'crm_events'") && run.stderr.contains(apart.0) && run.stderr.contains(apart.1)
                    && run.stderr.contains("nothing was changed"), "\(extra) \(run.stderr)")
                #expect(!run.stderr.contains("did not acknowledge the pause"), "refused before the pause")
            }
            #expect(try await outbox.relayPause() == nil)
            #expect(FileManager.default.fileExists(atPath: fleet.dbPath))
            let left = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/state").filter { $0.contains(".resize-") }
            #expect(left.isEmpty)

            // The same state with a pair the new layout keeps together: the command resizes.
            guard let together = candidates.first(where: { own2[$0.0] == own2[$0.1] }) else {
                Issue.record("no pair the 2-partition layout keeps together: \(own2)")
                return
            }
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: fleet.dbPath + suffix) }
            let base = Self.crmEvents(0..<30, prefix: "rszc")
            hs = try await Self.harnesses([fleet.dbPath]) { try Self.crmHandler(fleet.dir) }
            try await hs![0].apply(base + Self.coupled(together.0, together.1, 500), performEffects: true)
            hs = nil
            let run = try await fleet.cli(["partitions", "resize", "crm-sync", "--to", "2", "--ingest-stopped", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            print("resize crm-sync 1 → 2: \(run.json ?? run.stdout)")
            let files = (0..<2).map { fleet.dir + "/state/\(fleet.name).p\($0).sqlite" }
            let own = try await Self.owners(base.map(\.customerKey) + [together.0], 2, .customer)
            let expected = Self.facts(base).merging(["\(together.0)|m_acme|GBP": Figures(paid: 5_000, refunded: 1_500)]) { a, _ in a }
            for (i, f) in files.enumerated() {
                #expect(try Self.crmFigures(f) == expected.filter { own[String($0.key.split(separator: "|")[0])] == i }, "file \(i): its customers' balances")
            }
            #expect(try await outbox.relayPause() == nil)
            let s = try await AMQPSession.connect(fleet.amqp)
            let topo = WorkerTopology(name: fleet.name, routingKeys: [], partitions: 2, partitionKey: .customer, retryDelaysMS: [200, 400, 800])
            _ = try? await s.declare { d in for q in topo.declarations.queues.map(\.name) { try d.delete(queue: q) } }
            await s.close()
        }
    }

    // MARK: receipt-sender

    static let receiptMerchants = EventFactory.merchants.map { Merchant(id: $0, name: $0, timeZone: "Europe/London") }

    static func receiptHandler(_ dir: String) throws -> ReceiptHandler {
        let root = try ConfigSection.parse(yaml: "state_dir: \(dir)\nreceipt-sender:\n  locale: en\n  sms_transport: none\n")
        return try ReceiptHandler(
            section: try root.section("receipt-sender"), root: root, merchants: Self.receiptMerchants, logger: Logger(label: "test"))
    }

    /// The sandbox's emails: file → inode. A resend rewrites its file (same name from the
    /// Message-ID, a new inode from the rename), so an unchanged map means nothing was sent again.
    static func mails(_ dir: String) -> [String: Int] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/mail")) ?? []).filter { !$0.hasPrefix(".") }
        var out: [String: Int] = [:]
        for n in names {
            let a = try? FileManager.default.attributesOfItem(atPath: dir + "/mail/" + n)
            out[n] = (a?[.systemFileNumber] as? NSNumber)?.intValue ?? -1
        }
        return out
    }

    @Test("receipt-sender 2 → 4 → 8: the sent journal goes to every file, so no receipt is sent twice after either resize")
    func receiptsNoResend() async throws {
        let dir = TestEnvironment.makeTempDir("rsz-rcpt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let events = (0..<300).map { n in
            EventFactory.payment(n, prefix: "rr", type: n % 4 == 3 ? .paymentRefunded : .paymentSucceeded)
        }
        // The last 30 were applied but their sends never ran before the first resize (a crash
        // after the commit): their effect is an intent in every file after it.
        let sentBefore = Array(events[0..<270])
        let pending = Array(events[270...])
        let keys = events.map(\.customerKey)
        let own2 = try await Self.owners(keys, 2, .customer)
        let own4 = try await Self.owners(keys, 4, .customer)
        let own8 = try await Self.owners(keys, 8, .customer)
        let old = (0..<2).map { dir + "/receipt-sender.p\($0).sqlite" }
        var hs: [HandlerHarness<ReceiptHandler>]? = try await Self.harnesses(old) { try Self.receiptHandler(dir) }
        let first = try await Self.route(hs!, sentBefore, owner: own2, key: \.customerKey, performEffects: true)
        #expect(first.compactMap(\.effect).count == sentBefore.count && first.compactMap(\.failure).isEmpty, "\(first.compactMap(\.failure).prefix(3))")
        try await Self.route(hs!, pending, owner: own2, key: \.customerKey, performEffects: false)
        hs = nil
        let mails1 = Self.mails(dir)
        #expect(mails1.count == sentBefore.count, "one email per receipt sent")

        let (files4, _) = try await Self.resize(section: "receipt-sender", old: old, to: 4, dir: dir, newOwner: own4)
        for f in files4 {
            #expect(try Self.strings(f, "SELECT count(*) FROM receipts") == ["\(events.count)"], "every file knows every receipt")
            #expect(try Self.strings(f, "SELECT count(*) FROM receipt_deliveries WHERE state = 'sent'") == ["\(sentBefore.count)"])
        }
        // Every event again through the new file that owns its key: the sent ones are duplicates,
        // the pending ones are sent now, once.
        var hs4: [HandlerHarness<ReceiptHandler>]? = try await Self.harnesses(files4) { try Self.receiptHandler(dir) }
        let again = try await Self.route(hs4!, events, owner: own4, key: \.customerKey, performEffects: true)
        #expect(again.filter(\.isNew).isEmpty, "no event applied anew")
        #expect(again.compactMap(\.effect).count == pending.count, "only the pending receipts performed")
        let mails2 = Self.mails(dir)
        #expect(mails2.count == events.count, "each receipt sent once: \(mails2.count) emails for \(events.count)")
        #expect(mails1.allSatisfy { mails2[$0.key] == $0.value }, "no email sent before the resize was sent again")
        hs4 = nil

        // A second resize: the non-owners' copies of the pending ones are stale intents; the
        // owner's sent copy must win, else the next delivery would send again.
        let (files8, _) = try await Self.resize(section: "receipt-sender", old: files4, to: 8, dir: dir, newOwner: own8)
        for f in files8 {
            #expect(try Self.strings(f, "SELECT count(*) FROM effect_journal WHERE state <> 'done'") == ["0"])
            #expect(try Self.strings(f, "SELECT count(*) FROM receipt_deliveries WHERE state <> 'sent'") == ["0"])
        }
        let hs8 = try await Self.harnesses(files8) { try Self.receiptHandler(dir) }
        let third = try await Self.route(hs8, events, owner: own8, key: \.customerKey, performEffects: true)
        #expect(third.count == events.count && third.allSatisfy(Self.isDuplicate), "after the second resize: 0 new effects")
        #expect(Self.mails(dir) == mails2, "nothing sent again after the second resize")
    }
}
