import Foundation
import PayfleetCore
import PayfleetIngest
import PayfleetLedger
import PayfleetStore

/// `payfleet trace ID`: what the fleet did with one event, one payment, one invoice or one
/// provider event, read from the SQLite files of ingest and of every worker partition.
///
/// Every lookup is by primary key or index (never a scan), so a trace costs milliseconds whatever
/// the size of the files:
/// - ingest (`ingest.sqlite`): `outbox` by id, `payment_id`, `invoice_id`, `provider_event_id`
///   (ingest.6), `recorded` by id and provider event id, `redactions` by event id;
/// - each worker file: `processed` and the worker's own tables by event id; a payment's or an
///   invoice's events through the `(merchant_id, payment_id)` / `(merchant_id, invoice_id)`
///   indexes (crm.1, settlement.2, ledger.5), probed once per merchant of the file (the
///   merchants themselves read off the index's first column, not off the rows);
/// - each worker file's dead-letter index (`dead_letters`, runtime.3) by event id: the letters the
///   runtime confirmed in the worker's DLQ and that no replay, edit or purge has removed since.
/// Files are opened read-only; a missing file or table is reported, not an error.
///
/// What no file keeps is not shown: ingest records no duplicate answers (the original is
/// traced), and a second provider event for the same fact (Stripe's `charge.succeeded` after
/// `payment_intent.succeeded`) is found by its canonical id or payment, not by its own event id.
public struct FleetTrace: Sendable {
    /// One SQLite file the trace reads.
    public struct Source: Sendable, Equatable {
        /// `ingest` or a worker's config section (`crm-sync`).
        public var process: String
        public var partition: Int?
        public var path: String
        /// The worker this file belongs to (nil for ingest's).
        public var worker: WorkerIdentity? { WorkerIdentity(rawValue: process) }
        public init(process: String, partition: Int? = nil, path: String) {
            self.process = process
            self.partition = partition
            self.path = path
        }
    }

    public var ingest: Source?
    public var workers: [Source]

    public init(ingest: Source?, workers: [Source]) {
        self.ingest = ingest
        self.workers = workers
    }

    /// The files of the configured fleet: `ingest.state_file`, every worker partition's file
    /// (`<name>.sqlite`, or `<name>.pN.sqlite` per partition; each holds its dead-letter index).
    public static func sources(configPath: String) throws -> FleetTrace {
        let ctx = try CLIContext.load(configPath: configPath)
        let root = try ConfigSection.load(file: configPath)
        let ingestPath = try IngestConfiguration.statePath(root: root, section: try root.section("ingest"))
        var workers: [Source] = []
        // The fleet's workers, and the runtime's demonstration worker when it is configured.
        for w in WorkerIdentity.fleet.map(\.configSection) + (root.has(CLIContext.demoWorker) ? [CLIContext.demoWorker] : []) {
            guard let rc = ctx.runtime[w] else { continue }
            for (p, path) in rc.partitionStatePaths.enumerated() {
                workers.append(Source(process: w, partition: p, path: path))
            }
        }
        return FleetTrace(ingest: Source(process: "ingest", path: ingestPath), workers: workers)
    }

    // MARK: Result

    /// A value of a step's field, as JSON has them (money in integer minor units).
    public indirect enum Value: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case bool(Bool)
        case list([Value])
        case object([String: Value])
        case null

        init(_ s: String?) { self = s.map { .string($0) } ?? .null }
        init(_ i: Int64?) { self = i.map { .int($0) } ?? .null }

        var json: Any {
            switch self {
            case .string(let s): return s
            case .int(let i): return i
            case .bool(let b): return b
            case .list(let l): return l.map(\.json)
            case .object(let o): return o.mapValues(\.json)
            case .null: return NSNull()
            }
        }

        var text: String {
            switch self {
            case .string(let s): return s
            case .int(let i): return String(i)
            case .bool(let b): return b ? "yes" : "no"
            case .list(let l): return "[" + l.map(\.text).joined(separator: ", ") + "]"
            case .object(let o): return o.keys.sorted().map { "\($0)=\(o[$0]!.text)" }.joined(separator: " ")
            case .null: return "-"
            }
        }
    }

    /// One thing the fleet did, at one time.
    public struct Step: Sendable, Equatable {
        /// Milliseconds since 1970 (the files keep seconds for most steps: those are whole seconds).
        public var atMS: Int64
        public var eventID: String
        public var process: String
        public var partition: Int?
        public var file: String
        /// `accepted`, `recorded`, `published`, `publish_pending`, `processed`, `crm_push`,
        /// `receipt`, `ledger_transaction`, `settlement`, `dead_letter`.
        public var step: String
        public var fields: [String: Value]
        /// Order among steps of the same millisecond (ingest before workers, apply before effect).
        var rank: Int
    }

    /// One event found, as the files describe it (no personal data: ids, type, amounts).
    public struct Event: Sendable, Equatable {
        public var id: String
        public var type: String?
        public var merchantID: String?
        public var paymentID: String?
        public var invoiceID: String?
        public var provider: String?
        public var providerEventID: String?
        public var amount: Int64?
        public var currency: String?
        public var occurredAt: String?
    }

    public struct Report: Sendable {
        public var query: String
        /// How the query matched: `event_id`, `payment_id`, `invoice_id`, `provider_event_id`.
        public var matchedAs: [String]
        public var events: [Event]
        public var steps: [Step]
        /// Files read, and whether each was there.
        public var sources: [(source: Source, present: Bool)]

        public var jsonObject: [String: Any] {
            [
                "query": query,
                "matched_as": matchedAs,
                "events": events.map { e -> [String: Any] in
                    [
                        "id": e.id, "type": Value(e.type).json, "merchant_id": Value(e.merchantID).json,
                        "payment_id": Value(e.paymentID).json, "invoice_id": Value(e.invoiceID).json,
                        "provider": Value(e.provider).json, "provider_event_id": Value(e.providerEventID).json,
                        "amount": e.amount.map { ["value": $0, "currency": e.currency ?? ""] as [String: Any] } ?? NSNull(),
                        "occurred_at": Value(e.occurredAt).json,
                    ]
                },
                "steps": steps.map { s -> [String: Any] in
                    var o: [String: Any] = [
                        "at": FleetTrace.format(ms: s.atMS), "at_ms": s.atMS, "event_id": s.eventID, "process": s.process,
                        "partition": s.partition.map { $0 as Any } ?? NSNull(), "file": s.file, "step": s.step,
                    ]
                    o["details"] = s.fields.mapValues(\.json)
                    return o
                },
                "sources": sources.map { s -> [String: Any] in
                    [
                        "process": s.source.process, "partition": s.source.partition.map { $0 as Any } ?? NSNull(),
                        "file": s.source.path, "present": s.present,
                    ]
                },
            ]
        }

        /// The operator's view: the events, then every step in time order.
        public var text: String {
            var lines: [String] = []
            lines.append("\(query): \(events.count) event(s), matched as \(matchedAs.joined(separator: ", "))")
            for e in events {
                let money = e.amount.map { " " + LedgerExportFormat.major($0, e.currency ?? "") } ?? ""
                lines.append(
                    "  \(e.id)  \(e.type ?? "?")\(money)  merchant \(e.merchantID ?? "?")  payment \(e.paymentID ?? "-")"
                        + (e.invoiceID.map { "  invoice \($0)" } ?? "")
                        + (e.providerEventID.map { "  \(e.provider ?? "provider") \($0)" } ?? ""))
            }
            lines.append("")
            for s in steps {
                let who = s.partition.map { "\(s.process)#\($0)" } ?? s.process
                let detail = s.fields.keys.sorted().map { "\($0)=\(s.fields[$0]!.text)" }.joined(separator: " ")
                lines.append("\(FleetTrace.format(ms: s.atMS))  \(s.eventID)  \(who)  \(s.step)  \(detail)")
            }
            let missing = sources.filter { !$0.present }
            if !missing.isEmpty {
                lines.append("")
                lines.append("not found (not read): " + missing.map(\.source.path).joined(separator: ", "))
            }
            return lines.joined(separator: "\n")
        }
    }

    static func format(ms: Int64) -> String {
        let base = RFC3339.format(Date(timeIntervalSince1970: Double(ms / 1000)))
        let frac = ms % 1000
        return String(base.dropLast()) + "." + String(format: "%03d", frac < 0 ? frac + 1000 : frac) + "Z"
    }

    // MARK: Tracing

    /// Traces `id`; throws when nothing matches (naming the files read).
    public func trace(_ id: String) throws -> Report {
        let id = id.trimmingCharacters(in: .whitespaces)
        guard !id.isEmpty, id.count <= 255, !id.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw CLIFailure("trace: the id must be 1–255 characters without control characters")
        }
        var files: [(Source, SQLiteConnection?)] = []
        for s in ([ingest].compactMap { $0 } + workers) {
            files.append((s, Self.open(s.path)))
        }
        let ingestDB = files.first { $0.0.process == "ingest" }?.1
        let workerDBs = files.filter { f in workers.contains(f.0) }.compactMap { f in f.1.map { (f.0, $0) } }

        // 1. Which events the id names.
        var found = Found()
        if let db = ingestDB { try Self.resolveIngest(id, db: db, into: &found) }
        for (s, db) in workerDBs { try Self.resolveWorker(id, process: s.process, db: db, into: &found) }
        for (_, db) in workerDBs {
            if try Self.has(db, table: "dead_letters"), try db.queryOne("SELECT 1 FROM dead_letters WHERE event_id = ?", [.text(id)]) != nil { found.add(id, as: "event_id") }
        }
        // An invoice's payments bring their refunds and disputes (one step, no more).
        if found.matchedAs.contains("invoice_id") {
            for pid in Set(found.paymentIDs) where pid != id {
                var more = Found()
                if let db = ingestDB { try Self.resolveIngest(pid, db: db, into: &more, only: ["payment_id"]) }
                for (s, db) in workerDBs { try Self.resolveWorker(pid, process: s.process, db: db, into: &more, only: ["payment_id"]) }
                for e in more.ids { found.add(e, as: nil) }
            }
        }
        guard !found.ids.isEmpty else {
            let read = files.filter { $0.1 != nil }.map(\.0.path)
            throw CLIFailure(
                "trace: no event, payment, invoice or provider event '\(id)' in the fleet's files (read: \(read.isEmpty ? "none" : read.joined(separator: ", ")))"
            )
        }

        // 2. What each file did with each event.
        var events: [String: Event] = [:]
        var steps: [Step] = []
        for eid in found.ids {
            var e = Event(id: eid)
            if let db = ingestDB, let s = ingest { steps += try Self.ingestSteps(eid, source: s, db: db, event: &e) }
            for (s, db) in workerDBs { steps += try Self.workerSteps(eid, source: s, db: db, event: &e) }
            for (s, db) in workerDBs { steps += try Self.deadLetterSteps(eid, source: s, db: db) }
            events[eid] = e
        }
        steps.sort { ($0.atMS, $0.rank, $0.eventID, $0.process, $0.partition ?? -1) < ($1.atMS, $1.rank, $1.eventID, $1.process, $1.partition ?? -1) }
        let ordered = found.ids.compactMap { events[$0] }.sorted { a, b in
            let ta = steps.first { $0.eventID == a.id }?.atMS ?? Int64.max
            let tb = steps.first { $0.eventID == b.id }?.atMS ?? Int64.max
            return (ta, a.id) < (tb, b.id)
        }
        return Report(
            query: id, matchedAs: found.matchedAs, events: ordered, steps: steps,
            sources: files.map { ($0.0, $0.1 != nil) })
    }

    struct Found {
        var ids: [String] = []
        var seen = Set<String>()
        var matchedAs: [String] = []
        var paymentIDs: [String] = []
        mutating func add(_ id: String, as kind: String?, paymentID: String? = nil) {
            if seen.insert(id).inserted { ids.append(id) }
            if let kind, !matchedAs.contains(kind) { matchedAs.append(kind) }
            if let paymentID { paymentIDs.append(paymentID) }
        }
    }

    static func open(_ path: String) -> SQLiteConnection? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try? SQLiteConnection(path: path, busyTimeoutMS: 2_000, readOnly: true)
    }

    static func has(_ db: SQLiteConnection, table: String) throws -> Bool {
        try db.queryOne("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [.text(table)]) != nil
    }

    static func migrated(_ db: SQLiteConnection, _ id: String) throws -> Bool {
        try has(db, table: "schema_migrations")
            && db.queryOne("SELECT 1 FROM schema_migrations WHERE id = ?", [.text(id)]) != nil
    }

    /// The merchants of `table`, read off an index whose first column is `merchant_id` (one
    /// probe per merchant, not a scan of the rows).
    /// `column`: the index's second column, for a partial index `WHERE column IS NOT NULL`.
    static func merchants(_ db: SQLiteConnection, table: String, column: String? = nil) throws -> [String] {
        let extra = column.map { " AND \($0) IS NOT NULL" } ?? ""
        return try db.query(
            """
            WITH RECURSIVE m(x) AS (
                SELECT (SELECT MIN(merchant_id) FROM \(table) WHERE merchant_id IS NOT NULL\(extra))
                UNION ALL
                SELECT (SELECT MIN(merchant_id) FROM \(table) WHERE merchant_id > m.x\(extra)) FROM m WHERE m.x IS NOT NULL
            ) SELECT x FROM m WHERE x IS NOT NULL
            """
        ).compactMap { $0.string(0) }
    }

    static func resolveIngest(_ id: String, db: SQLiteConnection, into found: inout Found, only: Set<String>? = nil) throws {
        func wants(_ k: String) -> Bool { only?.contains(k) ?? true }
        guard try has(db, table: "outbox") else { return }
        if wants("event_id") {
            if let r = try db.queryOne("SELECT id FROM outbox WHERE id = ?", [.text(id)]), let e = r.string(0) {
                found.add(e, as: "event_id")
            }
            if let r = try db.queryOne("SELECT id FROM recorded WHERE id = ?", [.text(id)]), let e = r.string(0) {
                found.add(e, as: "event_id")
            }
        }
        guard try migrated(db, "ingest.6") else { return }
        for (kind, column) in [("payment_id", "payment_id"), ("invoice_id", "invoice_id"), ("provider_event_id", "provider_event_id")]
        where wants(kind) {
            for r in try db.query("SELECT id, payment_id FROM outbox WHERE \(column) = ? ORDER BY seq LIMIT 1000", [.text(id)]) {
                if let e = r.string(0) { found.add(e, as: kind, paymentID: r.string(1)) }
            }
        }
        if wants("provider_event_id") {
            for r in try db.query("SELECT id FROM recorded WHERE event_id = ? LIMIT 1000", [.text(id)]) {
                if let e = r.string(0) { found.add(e, as: "provider_event_id") }
            }
        }
    }

    /// The worker's own table of events, and whether it has the payment / invoice indexes.
    static func eventsTable(_ worker: WorkerIdentity?) -> (table: String, payment: String?, invoice: String?)? {
        switch worker {
        case .crmSync: return ("crm_events", "crm.1", "crm.1")
        case .ledgerWriter: return ("ledger_events", "ledger.5", "ledger.5")
        case .settlementAggregator: return ("settlement_events", "settlement.2", nil)
        case .receiptSender: return ("receipts", nil, nil)
        case .demoWorker, nil: return nil
        }
    }

    static func resolveWorker(
        _ id: String, process: String, db: SQLiteConnection, into found: inout Found, only: Set<String>? = nil
    ) throws {
        let worker = WorkerIdentity(rawValue: process)
        func wants(_ k: String) -> Bool { only?.contains(k) ?? true }
        if wants("event_id") {
            if try has(db, table: "processed"), try db.queryOne("SELECT 1 FROM processed WHERE event_id = ?", [.text(id)]) != nil {
                found.add(id, as: "event_id")
            }
            if let t = eventsTable(worker), try has(db, table: t.table),
                try db.queryOne("SELECT 1 FROM \(t.table) WHERE event_id = ?", [.text(id)]) != nil
            {
                found.add(id, as: "event_id")
            }
        }
        guard let t = eventsTable(worker), try has(db, table: t.table) else { return }
        var lookups: [(String, String)] = []
        if wants("payment_id"), let m = t.payment, try migrated(db, m) { lookups.append(("payment_id", "payment_id")) }
        if wants("invoice_id"), let m = t.invoice, try migrated(db, m) { lookups.append(("invoice_id", "invoice_id")) }
        guard !lookups.isEmpty else { return }
        // ledger.5's indexes are partial (WHERE payment_id / invoice_id IS NOT NULL).
        let partial = worker == .ledgerWriter
        let all = partial ? [] : try merchants(db, table: t.table)
        for (kind, column) in lookups {
            for m in partial ? try merchants(db, table: t.table, column: column) : all {
                for r in try db.query(
                    "SELECT event_id, payment_id FROM \(t.table) WHERE merchant_id = ? AND \(column) = ? LIMIT 1000",
                    [.text(m), .text(id)])
                {
                    if let e = r.string(0) { found.add(e, as: kind, paymentID: r.string(1)) }
                }
            }
        }
    }

    // MARK: Steps

    static func ingestSteps(_ eid: String, source: Source, db: SQLiteConnection, event e: inout Event) throws -> [Step] {
        guard try has(db, table: "outbox") else { return [] }
        var out: [Step] = []
        func step(_ at: Int64, _ name: String, _ rank: Int, _ fields: [String: Value]) {
            out.append(Step(atMS: at, eventID: eid, process: "ingest", partition: nil, file: source.path, step: name, fields: fields, rank: rank))
        }
        if let r = try db.queryOne(
            "SELECT type, merchant, traceparent, body, created_at, sent_at, attempts, last_error, next_attempt_ms FROM outbox WHERE id = ?",
            [.text(eid)])
        {
            let body = r.blob(3).flatMap { try? EventCodec.decode(Data($0)) }
            e.type = e.type ?? r.string(0)
            e.merchantID = e.merchantID ?? r.string(1)
            if let b = body {
                e.paymentID = e.paymentID ?? b.payment?.id
                e.invoiceID = e.invoiceID ?? b.invoiceID
                e.provider = b.source.provider
                e.providerEventID = b.source.eventID
                e.amount = e.amount ?? b.amount.value
                e.currency = e.currency ?? b.amount.currency.code
                e.occurredAt = e.occurredAt ?? RFC3339.format(b.occurredAt)
            }
            var redactions: [Value] = []
            if try has(db, table: "redactions") {
                redactions = try db.query("SELECT field FROM redactions WHERE event_id = ? ORDER BY field", [.text(eid)])
                    .compactMap { $0.string(0) }.map { .string($0) }
            }
            let created = (r.int(4) ?? 0) * 1000
            step(created, "accepted", 0, [
                "route": Value(body.map { Self.route($0.source.provider) }), "type": Value(r.string(0)),
                "traceparent": Value(r.string(2)), "redactions": .list(redactions),
            ])
            let attempts = r.int(6) ?? 0
            if let sent = r.int(5) {
                step(max(sent * 1000, created), "published", 1, ["confirmed": .bool(true), "failed_attempts": .int(attempts)])
            } else {
                step(created, "publish_pending", 1, [
                    "failed_attempts": .int(attempts), "last_error": Value(r.string(7)),
                    "next_attempt_at": r.int(8).map { .string(format(ms: $0)) } ?? .null,
                ])
            }
        }
        if let r = try db.queryOne("SELECT provider, event_id, type, reason, received_at FROM recorded WHERE id = ?", [.text(eid)]) {
            e.provider = e.provider ?? r.string(0)
            e.providerEventID = e.providerEventID ?? r.string(1)
            e.type = e.type ?? r.string(2)
            step((r.int(4) ?? 0) * 1000, "recorded", 0, [
                "provider": Value(r.string(0)), "provider_type": Value(r.string(2)), "reason": Value(r.string(3)),
                "published": .bool(false),
            ])
        }
        return out
    }

    /// The route an event came in by, from its `source.provider` (DESIGN §3).
    static func route(_ provider: String) -> String {
        switch provider {
        case "stripe": return "/webhooks/stripe"
        case "adyen": return "/webhooks/adyen"
        default: return "\(provider) (/v1/events or /webhooks/standard/\(provider))"
        }
    }

    static func workerSteps(_ eid: String, source: Source, db: SQLiteConnection, event e: inout Event) throws -> [Step] {
        var out: [Step] = []
        func step(_ at: Int64, _ name: String, _ rank: Int, _ fields: [String: Value]) {
            out.append(Step(
                atMS: at, eventID: eid, process: source.process, partition: source.partition, file: source.path, step: name,
                fields: fields, rank: rank))
        }
        var processedMS: Int64?
        if try has(db, table: "processed"), let r = try db.queryOne(
            "SELECT processed_at, processed_ms FROM processed WHERE event_id = ?", [.text(eid)])
        {
            processedMS = r.int(1) ?? (r.int(0) ?? 0) * 1000
        }
        var effect: (state: String, attempts: Int64, lastError: String?, updatedMS: Int64, blob: [UInt8])?
        if try has(db, table: "effect_journal"), let r = try db.queryOne(
            "SELECT state, attempts, last_error, updated_at, effect FROM effect_journal WHERE event_id = ?", [.text(eid)])
        {
            effect = (r.string(0) ?? "", r.int(1) ?? 0, r.string(2), (r.int(3) ?? 0) * 1000, r.blob(4) ?? [])
        }
        var fields: [String: Value] = [:]
        var rows: [Step] = []
        let at = processedMS ?? 0
        switch source.worker {
        case .crmSync:
            if try has(db, table: "crm_events"), let r = try db.queryOne(
                "SELECT type, merchant_id, customer_id, payment_id, invoice_id, currency, amount, outcome, occurred_at FROM crm_events WHERE event_id = ?",
                [.text(eid)])
            {
                fill(&e, type: r.string(0), merchant: r.string(1), payment: r.string(3), invoice: r.string(4), currency: r.string(5), amount: r.int(6))
                if e.occurredAt == nil, let ms = r.int(8) { e.occurredAt = RFC3339.format(Date(timeIntervalSince1970: Double(ms) / 1000)) }
                fields["customer_id"] = Value(r.string(2))
                fields["outcome"] = Value(r.string(7))
            }
            if let eff = effect {
                var keys: [Value] = []
                var customers = 0
                if let o = try? JSONSerialization.jsonObject(with: Data(eff.blob)) as? [String: Any],
                    let list = o["customers"] as? [[String: Any]]
                {
                    customers = list.count
                    // The connectors' Idempotency-Key (Connectors.swift): the event id for the
                    // first customer state, event:merchant:currency for the others.
                    for (i, c) in list.enumerated() {
                        keys.append(.string(i == 0 ? eid : "\(eid):\(c["merchantID"] as? String ?? ""):\(c["currency"] as? String ?? "")"))
                    }
                }
                rows.append(Step(
                    atMS: max(eff.updatedMS, at), eventID: eid, process: source.process, partition: source.partition,
                    file: source.path, step: "crm_push",
                    fields: [
                        "status": .string(eff.state), "attempts": .int(eff.attempts), "last_error": Value(eff.lastError),
                        "idempotency_keys": .list(keys), "customer_states": .int(Int64(customers)),
                    ], rank: 4))
            }
        case .receiptSender:
            if try has(db, table: "receipts"), let r = try db.queryOne(
                "SELECT type, merchant_id, status, has_email, has_phone FROM receipts WHERE event_id = ?", [.text(eid)])
            {
                fill(&e, type: r.string(0), merchant: r.string(1), payment: nil, invoice: nil, currency: nil, amount: nil)
                fields["receipt_status"] = Value(r.string(2))
                fields["has_email"] = .bool(r.int(3) == 1)
                fields["has_phone"] = .bool(r.int(4) == 1)
            }
            if let eff = effect {
                fields["effect_status"] = .string(eff.state)
                fields["effect_attempts"] = .int(eff.attempts)
                if let err = eff.lastError { fields["effect_error"] = .string(err) }
            }
            if try has(db, table: "receipt_deliveries") {
                for r in try db.query(
                    "SELECT message_id, channel, transport, state, attempts, unknown_outcomes, last_error, updated_at FROM receipt_deliveries WHERE event_id = ? ORDER BY channel",
                    [.text(eid)])
                {
                    rows.append(Step(
                        atMS: max((r.int(7) ?? 0) * 1000, at), eventID: eid, process: source.process, partition: source.partition,
                        file: source.path, step: "receipt",
                        fields: [
                            "message_id": Value(r.string(0)), "channel": Value(r.string(1)), "transport": Value(r.string(2)),
                            "outcome": Value(r.string(3)), "attempts": Value(r.int(4)), "unknown_outcomes": Value(r.int(5)),
                            "last_error": Value(r.string(6)),
                        ], rank: 4))
                }
            }
        case .ledgerWriter:
            if try has(db, table: "ledger_events"), let r = try db.queryOne(
                "SELECT type, merchant_id, payment_id, invoice_id, currency, amount, business_day, txid, outcome, provider, occurred_at FROM ledger_events WHERE event_id = ?",
                [.text(eid)])
            {
                fill(&e, type: r.string(0), merchant: r.string(1), payment: r.string(2), invoice: r.string(3), currency: r.string(4), amount: r.int(5))
                e.provider = e.provider ?? r.string(9)
                e.occurredAt = e.occurredAt ?? r.string(10)
                fields["outcome"] = Value(r.string(8))
                fields["business_day"] = Value(r.string(6))
                fields["txid"] = Value(r.string(7))
            }
            if try has(db, table: "transactions") {
                for t in try db.query(
                    "SELECT txid, kind, date, description FROM transactions WHERE event_id = ? ORDER BY rowid", [.text(eid)])
                {
                    let txid = t.string(0) ?? ""
                    let postings = try db.query(
                        "SELECT account, currency, amount FROM postings WHERE txid = ? ORDER BY id", [.text(txid)]
                    ).map { p -> Value in
                        .object(["account": Value(p.string(0)), "currency": Value(p.string(1)), "amount": Value(p.int(2))])
                    }
                    rows.append(Step(
                        atMS: at, eventID: eid, process: source.process, partition: source.partition, file: source.path,
                        step: "ledger_transaction",
                        fields: [
                            "txid": .string(txid), "kind": Value(t.string(1)), "date": Value(t.string(2)),
                            "postings": .list(postings),
                        ], rank: 3))
                }
            }
        case .settlementAggregator:
            if try has(db, table: "settlement_events"), let r = try db.queryOne(
                "SELECT type, merchant_id, payment_id, currency, amount, business_day, late, arrived_at, outcome, provider, occurred_at FROM settlement_events WHERE event_id = ?",
                [.text(eid)])
            {
                fill(&e, type: r.string(0), merchant: r.string(1), payment: r.string(2), invoice: nil, currency: r.string(3), amount: r.int(4))
                e.provider = e.provider ?? r.string(9)
                e.occurredAt = e.occurredAt ?? r.string(10)
                let day = r.string(5)
                var s: [String: Value] = ["business_day": Value(day), "late": .bool(r.int(6) == 1), "outcome": Value(r.string(8))]
                var adjustment: Value = .null
                if try has(db, table: "settlement_adjustments"), let a = try db.queryOne(
                    "SELECT day, arrived_at, count, gross, refunds, disputes_opened, disputes_won, fees FROM settlement_adjustments WHERE event_id = ?",
                    [.text(eid)])
                {
                    adjustment = .object([
                        "day": Value(a.string(0)), "arrived_at": Value(a.string(1)), "count": Value(a.int(2)),
                        "gross": Value(a.int(3)), "refunds": Value(a.int(4)), "disputes_opened": Value(a.int(5)),
                        "disputes_won": Value(a.int(6)), "fees": Value(a.int(7)),
                    ])
                }
                s["adjustment"] = adjustment
                s["counted_as"] = .string(adjustment == .null ? "day_total" : "adjustment")
                if let day, let m = r.string(1), let c = try db.queryOne(
                    "SELECT closed_at FROM settlement_days WHERE merchant_id = ? AND day = ?", [.text(m), .text(day)])
                {
                    s["day_closed_at"] = Value(c.string(0))
                } else {
                    s["day_closed_at"] = .null
                }
                rows.append(Step(
                    atMS: at, eventID: eid, process: source.process, partition: source.partition, file: source.path,
                    step: "settlement", fields: s, rank: 3))
            }
        case .demoWorker, nil:
            break
        }
        if let processedMS {
            step(processedMS, "processed", 2, fields)
        } else if !fields.isEmpty || !rows.isEmpty {
            // The worker's rows are there but the processed id was pruned (after processed_retention).
            var f = fields
            f["processed_row"] = .string("pruned")
            step(rows.first?.atMS ?? 0, "processed", 2, f)
        } else if let eff = effect {
            step(eff.updatedMS, "processed", 2, ["effect_status": .string(eff.state)])
        }
        return out + rows
    }

    static func fill(
        _ e: inout Event, type: String?, merchant: String?, payment: String?, invoice: String?, currency: String?, amount: Int64?
    ) {
        e.type = e.type ?? type
        e.merchantID = e.merchantID ?? merchant
        e.paymentID = e.paymentID ?? payment
        e.invoiceID = e.invoiceID ?? invoice
        if e.amount == nil, let amount, let currency {
            e.amount = amount
            e.currency = currency
        }
    }

    static func deadLetterSteps(_ eid: String, source: Source, db: SQLiteConnection) throws -> [Step] {
        guard try has(db, table: "dead_letters") else { return [] }
        return try db.query(
            """
            SELECT queue, error, error_class, fingerprint, attempts, first_failed_at, dead_lettered_at_ms, copies
            FROM dead_letters WHERE event_id = ?
            """,
            [.text(eid)]
        ).map { r in
            Step(
                atMS: r.int(6) ?? 0, eventID: eid, process: source.process, partition: source.partition, file: source.path,
                step: "dead_letter",
                fields: [
                    "queue": Value(r.string(0)), "error": Value(r.string(1)), "error_class": Value(r.string(2)),
                    "group": Value(r.string(3)), "attempts": Value(r.int(4)), "first_failed_at": Value(r.string(5)),
                    "copies": Value(r.int(7)),
                ], rank: 5)
        }
    }
}
