import ArgumentParser
import Crypto
import Foundation
import Logging
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetSettlement
import PayfleetWorker

extension SettlementCommand {
    /// `payfleet settlement reconcile --date D --provider stripe|adyen FILE…`: the provider's
    /// payout report against the books, at three levels — every event line (amount and fee),
    /// every payout (the sum of the lines it settles, N:1, against the `payout.paid` booked),
    /// and the ledger's `Assets:<M>:Clearing:<P>` against the provider's ending balance. Lines
    /// paid out after `--date` are `expected`; lines no event explains are named as missing
    /// events. With `--post` (Adyen) the report's fees and payouts are accepted into ingest's
    /// outbox first. The result is stored in `reconciliation.sqlite` (shown by `settlement
    /// report`, counted in `payfleet_reconciliation_mismatches`); exit 0 only when everything matches.
    public struct Reconcile: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Match a provider's payout report against the books (events, payouts, clearing balance); exit 0 only when everything matches.")
        @OptionGroup public var global: GlobalOptions
        @Option(help: "Report date (YYYY-MM-DD): payouts effective on or before it are paid; its recorded events must appear in the file.")
        public var date: String
        @Option(help: "stripe (itemized payout reconciliation report) or adyen (Settlement Details Report).")
        public var provider: SettlementProvider
        @Option(help: "Only this merchant id (else the one the file's lines belong to).") public var merchant: String?
        @Option(name: .customLong("state-file"), help: "Read this settlement SQLite file instead of the configured ones (repeatable).")
        public var stateFiles: [String] = []
        @Option(name: .customLong("ledger-file"), help: "Read this ledger-writer SQLite file for the clearing balance (repeatable; else the configured ones).")
        public var ledgerFiles: [String] = []
        @Option(name: .customLong("ingest-state-file"), help: "ingest's SQLite file --post writes to (else from the configuration).")
        public var ingestStateFile: String?
        @Option(name: .customLong("results-file"), help: "Store the result here (else reconciliation.sqlite beside the settlement state).")
        public var resultsFile: String?
        @Flag(name: .customLong("post"), help: "Adyen: post the report's fees (fee.assessed) and batch payouts (payout.paid) through ingest's outbox, each once.")
        public var post = false
        @Flag(name: .customLong("no-store"), help: "Do not store the result.") public var noStore = false
        @Argument(help: "The provider's CSV file(s): e.g. Stripe's payout reconciliation and ending balance reports.")
        public var files: [String]
        public init() {}

        /// Everything one run found.
        public struct Outcome {
            public var events: Reconciliation
            public var payouts: PayoutReconciliation
            public var run: ReconciliationRun
            public var merchantID: String?
            /// Canonical events `--post` accepted (id, type, duplicate).
            public var posted: [(id: String, type: String, duplicate: Bool)]
            public var missingEvents: [[String: Any]]
            public var storedIn: String?
            public var notes: [String]
        }

        static let logger: Logger = {
            var l = Logger(label: "payfleet.cli")
            l.logLevel = .error
            return l
        }()

        public func reconcile(now: Date = Date()) async throws -> Outcome {
            let date = try SettlementCommand.checked { try SettlementBook.checkDate(self.date, option: "--date") }
            guard !files.isEmpty else { throw CLIFailure("no provider file given") }
            var notes: [String] = []
            // The configuration is needed unless every state file is named on the command line.
            let configured = stateFiles.isEmpty || global.config != nil
            let context = configured ? try CLIContext.load(global) : nil
            let root = configured
                ? try ConfigSection.load(file: global.configPath, environment: ProcessInfo.processInfo.environment) : nil
            let merchants = try root.map { try WorkerMain.readMerchants($0) } ?? []

            var texts: [(name: String, text: String)] = []
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { throw CLIFailure("\(f): cannot read the file") }
                guard let text = String(data: data, encoding: .utf8) else { throw CLIFailure("\(f): not UTF-8 text") }
                texts.append((f, text))
            }
            let book = try SettlementCommand.book(global, stateFiles: stateFiles)
            var eventLines: [ProviderLine] = []
            var skipped = 0
            var lines: [BalanceLine] = []
            for (name, text) in texts {
                try SettlementCommand.checked {
                    do {
                        let parsed = try (provider == .stripe ? ProviderFile.stripe(text) : ProviderFile.adyen(text))
                        eventLines += parsed.lines
                        skipped += parsed.skipped
                        lines += try (provider == .stripe ? PayoutReport.stripe(text) : PayoutReport.adyen(text))
                    } catch let e as SettlementError where texts.count > 1 {
                        throw SettlementError("\(name): \(e.message)")
                    }
                }
            }
            var recorded = try SettlementCommand.checked { try book.events(provider: provider.rawValue, merchant: merchant) }

            // The merchant: named, else the configured owner of the file's Adyen merchant account,
            // else the one merchant whose events the file's lines name.
            var merchantID = merchant
            if merchantID == nil {
                let accounts = Set(lines.compactMap(\.merchantAccount))
                let owners = Set(accounts.compactMap { a in merchants.first { $0.adyenMerchantAccount == a }?.id })
                let refs = Set(lines.compactMap(\.reference))
                let named = Set(recorded.filter { refs.contains($0.paymentID ?? "") }.map(\.merchantID))
                if owners.count == 1 {
                    merchantID = owners.first
                } else if owners.isEmpty, named.count == 1 {
                    merchantID = named.first
                }
                if let m = merchantID { recorded = recorded.filter { $0.merchantID == m } }
            }

            // Adyen: the report's fees and payouts into ingest's outbox, each once.
            var posted: [(id: String, type: String, duplicate: Bool)] = []
            var postedEvents: [RecordedEvent] = []
            if post {
                guard provider == .adyen else {
                    throw CLIFailure("--post: only Adyen's report carries fees and payouts the books learn from it (Stripe's come from its API)")
                }
                let events = try reportEvents(lines: lines, merchants: merchants, merchantID: merchantID, recorded: recorded, notes: &notes, now: now)
                let path = try ingestStateFile ?? OutboxCommand.statePath(global, override: nil)
                let outbox = try await OutboxCommand.open(path)
                let out = try await AdyenReportEvents.post(events, outbox: outbox)
                let known = Set(recorded.map(\.eventID))
                for (e, o) in zip(events, out) {
                    posted.append((o.id, e.type.rawValue, o.duplicate))
                    guard !known.contains(e.id) else { continue }
                    postedEvents.append(
                        RecordedEvent(
                            eventID: e.id, type: e.type.rawValue, merchantID: e.merchantID, provider: "adyen",
                            paymentID: e.payment?.id, pspReference: e.metadata["payout_id"] ?? e.metadata["psp_reference"],
                            currency: e.amount.currency.code, amount: e.amount.value, fee: 0, outcome: nil,
                            businessDay: String(RFC3339.format(e.occurredAt).prefix(10))))
                }
            }
            let events = recorded + postedEvents

            // The ledger's clearing account as of the report date.
            var clearing: [String: Int64]?
            var account: String?
            if let m = merchantID {
                let ledgerPaths = !ledgerFiles.isEmpty ? ledgerFiles : context.map { LedgerBook.stateFiles($0) } ?? []
                if ledgerPaths.contains(where: { FileManager.default.fileExists(atPath: $0) }) {
                    do {
                        let ledger = try LedgerBook(files: ledgerPaths)
                        let chart = try root.map { try ChartOfAccounts.read(try $0.section("ledger-writer")) } ?? ChartOfAccounts()
                        let name = merchants.first { $0.id == m }?.ledgerName ?? Merchant.accountSegment(m)
                        let acct = chart.clearing(merchant: name, provider: provider.rawValue)
                        account = acct
                        var c: [String: Int64] = [:]
                        for b in try ledger.balances(merchant: m, asOf: date) where b.account == acct { c[b.currency] = b.balance }
                        // What this run posted and ledger-writer has not applied yet is counted as booked.
                        if !postedEvents.isEmpty || !posted.isEmpty {
                            let inLedger = Set(try ledger.rows(merchant: m).map(\.eventID))
                            let pending = (postedEvents + recorded.filter { e in posted.contains { $0.id == e.eventID } })
                                .filter { !inLedger.contains($0.eventID) && $0.businessDay <= date }
                            for e in pending {
                                if let effect = PayoutReconciliation.clearingEffect(e) {
                                    c[e.currency] = Saturating.add(c[e.currency] ?? 0, effect)
                                }
                            }
                            if !pending.isEmpty { notes.append("\(pending.count) posted events not yet in the ledger are counted in \(acct)") }
                        }
                        clearing = c
                    } catch let e as LedgerBookError {
                        throw CLIFailure(e.message)
                    }
                } else {
                    notes.append("clearing balance not checked: no ledger state (--ledger-file)")
                }
            } else {
                notes.append("clearing balance not checked: the file's lines belong to no single merchant (--merchant)")
            }

            let perEvent = Reconciliation.match(date: date, provider: provider, lines: eventLines, skipped: skipped, events: events)
            let payouts = PayoutReconciliation.compute(
                date: date, provider: provider, lines: lines, events: events, clearing: clearing, clearingAccount: account)
            let missingEvents = Self.missingEvents(provider: provider, perEvent: perEvent, payouts: payouts)
            var run = Self.run(
                provider: provider, merchantID: merchantID ?? "*", date: date, now: now, texts: texts, perEvent: perEvent,
                payouts: payouts, missingEvents: missingEvents, posted: posted)

            var storedIn: String?
            if !noStore {
                let path = resultsFile ?? SettlementCommand.resultsPath(beside: book.files)
                run.runID = try await ReconciliationStore.record(run, path: path, logger: Self.logger)
                storedIn = path
            }
            return Outcome(
                events: perEvent, payouts: payouts, run: run, merchantID: merchantID, posted: posted,
                missingEvents: missingEvents, storedIn: storedIn, notes: notes)
        }

        /// The report's fees (per fee column, for lines whose payment carried none) and batch payouts.
        func reportEvents(
            lines: [BalanceLine], merchants: [Merchant], merchantID: String?, recorded: [RecordedEvent], notes: inout [String],
            now: Date
        ) throws -> [PaymentEvent] {
            func owner(_ l: BalanceLine) throws -> String {
                if let a = l.merchantAccount, let m = merchants.first(where: { $0.adyenMerchantAccount == a }) { return m.id }
                if let m = merchantID { return m }
                throw CLIFailure(
                    "line \(l.line): Merchant Account '\(l.merchantAccount ?? "")' is no configured merchant's adyen_merchant_account; pass --merchant")
            }
            let ownIDs = Set(recorded.filter { $0.type == "fee.assessed" }.map(\.eventID))
            var out: [PaymentEvent] = []
            do {
                for l in lines {
                    guard let kind = l.kind, let ref = l.reference, !l.feeParts.isEmpty else { continue }
                    let type: String
                    switch kind {
                    case .payment: type = "payment.succeeded"
                    case .refund: type = "payment.refunded"
                    case .dispute: type = "payment.disputed"
                    case .disputeReversal: type = "dispute.closed"
                    }
                    // The notification carried the fee already: it is booked; the per-event check compares it.
                    if recorded.contains(where: { $0.type == type && $0.paymentID == ref && $0.fee > 0 && !ownIDs.contains($0.eventID) }) {
                        notes.append("line \(l.line): the \(type) of \(ref) carried its fee; not posted again")
                        continue
                    }
                    let m = try owner(l)
                    let at = AdyenReportEvents.date(l.created) ?? now
                    for part in l.feeParts {
                        guard part.amount > 0 else {
                            notes.append("line \(l.line): \(part.kind) \(part.amount) is a fee returned; not posted")
                            continue
                        }
                        out.append(
                            try AdyenReportEvents.event(
                                AdyenReportEvents.Fee(
                                    pspReference: ref, modificationReference: l.id, kind: part.kind, batch: l.payout ?? "", merchantID: m,
                                    merchantAccount: l.merchantAccount, currency: l.currency, amount: part.amount,
                                    occurredAt: at, lineType: l.category, line: l.line), receivedAt: now))
                    }
                }
                for l in lines where l.isPayout {
                    let amount = Saturating.subtract(0, l.net)
                    guard amount > 0 else {
                        notes.append("line \(l.line): MerchantPayout of \(amount) is not a payout to the bank; not posted")
                        continue
                    }
                    out.append(
                        try AdyenReportEvents.event(
                            AdyenReportEvents.Payout(
                                batch: l.payout ?? "", merchantID: try owner(l), merchantAccount: l.merchantAccount,
                                currency: l.currency, amount: amount, occurredAt: AdyenReportEvents.date(l.created) ?? now),
                            receivedAt: now))
                }
            } catch let e as AdyenReportEvents.InvalidFact {
                throw CLIFailure(e.description)
            }
            return out
        }

        /// The report lines no event explains, named as the events the books miss (Adyen has no
        /// events API to recover them from; for Stripe `payfleet backfill stripe` recovers them).
        static func missingEvents(provider: SettlementProvider, perEvent: Reconciliation, payouts: PayoutReconciliation)
            -> [[String: Any]]
        {
            func names(_ k: ReconcileKind) -> (canonical: String, providerEvent: String) {
                switch (provider, k) {
                case (.stripe, .payment): return ("payment.succeeded", "charge.succeeded")
                case (.stripe, .refund): return ("payment.refunded", "charge.refunded")
                case (.stripe, .dispute): return ("payment.disputed", "charge.dispute.created")
                case (.stripe, .disputeReversal): return ("dispute.closed", "charge.dispute.closed")
                case (.adyen, .payment): return ("payment.succeeded", "AUTHORISATION")
                case (.adyen, .refund): return ("payment.refunded", "REFUND")
                case (.adyen, .dispute): return ("payment.disputed", "CHARGEBACK")
                case (.adyen, .disputeReversal): return ("dispute.closed", "CHARGEBACK_REVERSED")
                }
            }
            var out: [[String: Any]] = []
            for i in perEvent.missingOurs {
                let n = names(i.key.kind)
                out.append([
                    "reference": i.key.reference, "currency": i.key.currency, "kind": i.key.kind.rawValue,
                    "event": n.canonical, "provider_event": n.providerEvent, "amount": i.provider?.amount ?? 0,
                    "lines": i.provider?.detail ?? [],
                ])
            }
            for p in payouts.payouts where p.status == "missing_ours" {
                out.append([
                    "reference": p.payout, "currency": p.currency, "kind": "payout", "event": "payout.paid",
                    "provider_event": provider == .stripe ? "payout.paid" : "MerchantPayout", "amount": p.linesNet,
                    "lines": [String](),
                ])
            }
            for l in payouts.unexplained {
                out.append([
                    "reference": l.id, "currency": l.currency, "kind": l.category, "event": NSNull(),
                    "provider_event": l.category, "amount": l.net, "lines": ["line \(l.line)"],
                ])
            }
            return out
        }

        static func run(
            provider: SettlementProvider, merchantID: String, date: String, now: Date, texts: [(name: String, text: String)],
            perEvent r: Reconciliation, payouts p: PayoutReconciliation, missingEvents: [[String: Any]],
            posted: [(id: String, type: String, duplicate: Bool)]
        ) -> ReconciliationRun {
            typealias Item = ReconciliationRun.Item
            func item(_ section: String, _ i: Reconciliation.Item) -> Item {
                Item(section: section, status: section, kind: i.key.kind.rawValue, reference: i.key.reference,
                     currency: i.key.currency, ours: section == "fee_mismatch" ? i.ours?.fee : i.ours?.amount,
                     provider: section == "fee_mismatch" ? i.provider?.fee : i.provider?.amount,
                     detail: ((i.ours?.detail ?? []) + (i.provider?.detail ?? [])).joined(separator: ", "))
            }
            var items: [Item] = []
            items += r.missingOurs.map { item("missing_ours", $0) }
            items += r.missingProvider.map { item("missing_provider", $0) }
            items += r.amountMismatches.map { item("amount_mismatch", $0) }
            items += r.feeMismatches.map { item("fee_mismatch", $0) }
            items += p.payouts.map {
                Item(section: "payout", status: $0.status, kind: "payout", reference: $0.payout, currency: $0.currency,
                     ours: $0.ours, provider: $0.provider ?? $0.linesNet,
                     detail: "\($0.lines) lines net \($0.linesNet), effective \($0.date ?? "not yet")")
            }
            items += p.balances.map {
                Item(section: "balance", status: $0.status, kind: "clearing", reference: $0.account ?? "clearing",
                     currency: $0.currency, ours: $0.ledger, provider: $0.expectedLedger,
                     detail: "provider ending \($0.provider), books only \($0.booksOnly)")
            }
            items += p.expected.map {
                Item(section: "expected", status: "expected", kind: $0.category, reference: $0.reference ?? $0.id,
                     currency: $0.currency, ours: nil, provider: $0.net,
                     detail: "line \($0.line) \($0.id) payout \($0.payout ?? "none") \($0.payoutDate ?? "not yet")")
            }
            items += missingEvents.map {
                Item(section: "missing_event", status: "missing", kind: $0["kind"] as? String,
                     reference: $0["reference"] as? String ?? "", currency: $0["currency"] as? String ?? "", ours: nil,
                     provider: $0["amount"] as? Int64,
                     detail: "\(($0["event"] as? String) ?? "no event") (\($0["provider_event"] as? String ?? ""))")
            }
            items += posted.map {
                Item(section: "posted", status: $0.duplicate ? "duplicate" : "accepted", kind: $0.type, reference: $0.id,
                     currency: "", ours: nil, provider: nil)
            }
            let files = texts.map { t in "\((t.name as NSString).lastPathComponent) sha256:\(SHA256.hash(data: Data(t.text.utf8)).map { String(format: "%02x", $0) }.joined())" }
            return ReconciliationRun(
                provider: provider.rawValue, merchantID: merchantID, date: date, createdAt: RFC3339.format(now), files: files,
                matched: r.matched.count, expected: p.expected.count,
                mismatches: [
                    "missing_ours": r.missingOurs.count, "missing_provider": r.missingProvider.count,
                    "amount": r.amountMismatches.count, "fee": r.feeMismatches.count,
                    "payout": p.payoutMismatches.count, "balance": p.balanceMismatches.count,
                ], items: items)
        }

        /// What `run` prints and the exit status (0 only when everything matches).
        public func output(now: Date = Date()) async throws -> (text: String, status: Int32) {
            let o = try await reconcile(now: now)
            let status: Int32 = o.run.allMatch ? 0 : 1
            if global.json {
                let perEvent = try JSONSerialization.jsonObject(with: Data(try o.events.json().utf8)) as? [String: Any] ?? [:]
                var value = perEvent
                for (k, v) in o.payouts.jsonObject() { value[k] = v }
                value["events_match"] = o.events.allMatch
                value["all_match"] = o.run.allMatch
                value["merchant_id"] = o.merchantID.map { $0 as Any } ?? NSNull()
                value["mismatches"] = o.run.mismatches
                value["missing_events"] = o.missingEvents
                value["posted"] = o.posted.map { ["id": $0.id, "type": $0.type, "duplicate": $0.duplicate] }
                value["run_id"] = o.storedIn == nil ? NSNull() : o.run.runID
                value["results_file"] = o.storedIn.map { $0 as Any } ?? NSNull()
                value["notes"] = o.notes
                let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                return (String(decoding: data, as: UTF8.self), status)
            }
            var text = o.events.text().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            // The per-event verdict is replaced by the overall one below.
            if let last = text.last, last.hasPrefix("OK:") || last == "NOT RECONCILED" { text.removeLast() }
            text += o.payouts.textLines()
            if !o.missingEvents.isEmpty {
                text.append("Missing events (report lines no event explains):")
                for m in o.missingEvents {
                    let lines = (m["lines"] as? [String] ?? []).joined(separator: ", ")
                    text.append(
                        "  \(m["kind"] ?? "") \(m["reference"] ?? ""): \((m["event"] as? String) ?? "no canonical event") "
                            + "(\(m["provider_event"] ?? ""))" + (lines.isEmpty ? "" : " at \(lines)"))
                }
            }
            if !o.posted.isEmpty {
                let new = o.posted.filter { !$0.duplicate }.count
                text.append("posted through ingest's outbox: \(new) new, \(o.posted.count - new) already posted")
            }
            text += o.notes.map { "note: \($0)" }
            if let s = o.storedIn { text.append("stored as run \(o.run.runID) in \(s)") }
            text.append(o.run.allMatch ? "OK: everything matches" : "NOT RECONCILED: \(o.run.totalMismatches) mismatches")
            return (text.joined(separator: "\n"), status)
        }

        public func run() async throws {
            let (text, status) = try await output()
            print(text)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
