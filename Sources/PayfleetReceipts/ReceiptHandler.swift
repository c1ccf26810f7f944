import Foundation
import Logging
import PayfleetCore
import PayfleetStore
import PayfleetWorker
import Prometheus

/// What the runtime journals for one receipt (intent before, outcome after): the recipients and
/// the message date, fixed when the event was applied so a resend is the same message.
public struct ReceiptEffect: Codable, Sendable, Equatable {
    public var email: String?
    public var phone: String?
    public var locale: String
    /// Milliseconds since 1970: the `Date` header.
    public var dateMS: Int64
}

extension ReceiptEffect: JournalEncodable {
    /// What `JSONEncoder` writes for it, without its dynamic dispatch (once per event).
    public var journalJSON: [UInt8] {
        var w = JSONObjectWriter(capacity: 128)
        w.field("email", email)
        w.field("phone", phone)
        w.field("locale", locale)
        w.field("dateMS", dateMS)
        return w.finished()
    }
}

/// `receipt-sender`: one email and/or SMS receipt per `payment.succeeded` / `payment.refunded`;
/// none for reversals (`refund.failed`, `payment.reversed`, `payout.failed`), `fee.assessed` or
/// internal types, even if one is delivered (a replay, a changed binding): recorded as
/// `disabled` and counted as `payfleet_receipts_skipped_total{reason="no_receipt_for_type"}`.
///
/// Exactly once as far as the outside world allows, in two layers: the runtime's effect journal
/// (one row per event) and this handler's delivery journal (`receipt_deliveries`, one row per
/// message, keyed by its deterministic Message-ID): `intent` is committed before the transport
/// is called, `sent` after it answered. A row still at `intent` on a later attempt means the
/// process died (or the connection dropped) mid-send: the configured `outcome_unknown` policy
/// decides — flag for review (dead-letter `OutcomeUnknown`) or resend with the same Message-ID.
/// A message already `sent` is never sent again, so a failure of the SMS after the email only
/// retries the SMS.
public struct ReceiptHandler: WorkerHandler {
    public typealias Effect = ReceiptEffect

    public let config: ReceiptConfiguration
    public let templates: ReceiptTemplates
    let merchants: [String: Merchant]
    let email: (any EmailTransport)?
    let sms: (any SMSTransport)?
    let emailLimiter: RateLimiter
    let smsLimiter: RateLimiter
    let logger: Logger
    let attached = Locked<Attached?>(nil)

    struct Attached: Sendable {
        let store: Store
        let metrics: ReceiptMetrics
    }

    public init(section: ConfigSection, root: ConfigSection, merchants: [Merchant], logger: Logger) throws {
        let config = try ReceiptConfiguration.read(section: section, root: root)
        try self.init(config: config, merchants: merchants, logger: logger)
    }

    public init(config: ReceiptConfiguration, merchants: [Merchant], logger: Logger) throws {
        self.config = config
        do { templates = try ReceiptTemplates(directory: config.templatesDir) } catch {
            throw ConfigError(key: "receipt-sender.templates_dir", message: error.description)
        }
        self.merchants = Dictionary(merchants.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.logger = logger
        let sandbox: SandboxTransport?
        if config.emailTransport == .sandbox || config.smsTransport == .sandbox {
            do { sandbox = try SandboxTransport(directory: config.mailDir) } catch {
                throw ConfigError(key: "receipt-sender.mail_dir", message: error.message)
            }
        } else {
            sandbox = nil
        }
        switch config.emailTransport {
        case .sandbox: email = sandbox
        case .smtp: email = SMTPTransport(settings: config.smtp!)
        case .none: email = nil
        }
        switch config.smsTransport {
        case .sandbox: sms = sandbox
        case .twilio: sms = TwilioSMSTransport(settings: config.sms!)
        case .none: sms = nil
        }
        emailLimiter = RateLimiter(perSecond: config.emailTransport == .smtp ? config.smtpRateLimit : 0)
        smsLimiter = RateLimiter(perSecond: config.smsTransport == .twilio ? config.smsRateLimit : 0)
    }

    public var migrations: [Migration] {
        [
            Migration(
                "receipts.1",
                """
                CREATE TABLE receipts (
                    event_id TEXT PRIMARY KEY,
                    merchant_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'no_contact', 'disabled')),
                    has_email INTEGER NOT NULL DEFAULT 0,
                    has_phone INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE TABLE receipt_deliveries (
                    message_id TEXT PRIMARY KEY,
                    event_id TEXT NOT NULL,
                    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
                    transport TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('intent', 'sent', 'failed', 'review')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    unknown_outcomes INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE INDEX receipt_deliveries_event_idx ON receipt_deliveries(event_id);
                CREATE INDEX receipt_deliveries_state_idx ON receipt_deliveries(state);
                """)
        ]
    }

    /// Sandbox transports write local files: a whole batch at once. An SMTP server or an SMS
    /// provider gets `effect_concurrency` (8) messages at a time.
    public var localEffectConcurrency: Int? {
        (email == nil || email is SandboxTransport) && (sms == nil || sms is SandboxTransport) ? 256 : nil
    }

    public func attach(store: Store, registry: PrometheusCollectorRegistry) async throws {
        let m = ReceiptMetrics(registry: registry)
        attached.withLock { $0 = Attached(store: store, metrics: m) }
    }

    // MARK: apply (inside the batch transaction)

    public func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> ReceiptEffect? {
        let now = Int64(Date().timeIntervalSince1970)
        let rule = config.rule(for: event.merchantID)
        func record(_ status: String, email: Bool = false, phone: Bool = false) throws {
            try db.execute(
                """
                INSERT INTO receipts (event_id, merchant_id, type, status, has_email, has_phone, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    .text(event.id), .text(event.merchantID), .text(event.type.rawValue), .text(status),
                    .int(email ? 1 : 0), .int(phone ? 1 : 0), .int(now), .int(now),
                ])
        }
        // Reversals (refund.failed, payment.reversed, payout.failed), provider fees and internal
        // types never get a receipt, whatever the configuration (DESIGN §2, §5a): recorded and
        // counted, so a replayed or misrouted one is seen, not sent.
        guard ReceiptConfiguration.receiptTypes.contains(event.type.rawValue), !event.type.isReversal,
            !event.type.isInternal, event.type != .feeAssessed
        else {
            try record("disabled")
            attached.current?.metrics.skipped(reason: "no_receipt_for_type")
            logger.info(
                "no receipt for this event type",
                metadata: [LogKey.eventID: "\(event.id)", LogKey.eventType: "\(event.type.rawValue)"])
            return nil
        }
        guard rule.enabled, rule.types.contains(event.type.rawValue) else {
            try record("disabled")
            attached.current?.metrics.skipped(reason: "disabled")
            return nil
        }
        var emailAddress: String?
        if rule.channels.contains(.email), email != nil,
            let raw = event.customer?.email.map(Trim.whitespaces), !raw.isEmpty
        {
            guard MailAddress.isValid(raw) else {
                throw HandlerError.permanent("InvalidAddress", "customer.email is not a valid email address")
            }
            emailAddress = raw
        }
        var phone: String?
        if rule.channels.contains(.sms), sms != nil, let raw = event.customer?.phone, !raw.isEmpty {
            let normalized = String(raw.filter { !" -().".contains($0) })
            guard E164.isValid(normalized) else {
                throw HandlerError.permanent(
                    "InvalidPhone", "customer.phone is not an E.164 number (+<country><number>)")
            }
            phone = normalized
        }
        guard emailAddress != nil || phone != nil else {
            try record("no_contact")
            attached.current?.metrics.skipped(reason: "no_contact")
            return nil
        }
        try record("pending", email: emailAddress != nil, phone: phone != nil)
        let locale = event.metadata["locale"].flatMap { $0.isEmpty ? nil : $0 } ?? rule.locale
        return ReceiptEffect(
            email: emailAddress, phone: phone, locale: locale, dateMS: Int64(Date().timeIntervalSince1970 * 1000))
    }

    // MARK: rendering

    /// The email for `event` exactly as it goes on the wire.
    public func renderEmail(_ effect: ReceiptEffect, event: PaymentEvent) -> MIMEMessage? {
        guard let to = effect.email else { return nil }
        let rule = config.rule(for: event.merchantID)
        let type = event.type.rawValue
        let ctx = ReceiptContext.make(event: event, merchant: merchants[event.merchantID], channel: "email")
        func r(_ p: TemplatePart) -> String {
            templates.render(p, type: type, merchant: event.merchantID, locale: effect.locale, context: ctx)
        }
        // Line breaks and other control characters in text that becomes a header (the subject,
        // the customer's display name) are spaces: a header value is one line.
        func oneLine(_ t: String) -> String {
            let flat = MIMEEncoding.hasControl(t)
                ? String(String.UnicodeScalarView(t.unicodeScalars.map { MIMEEncoding.isControl($0) ? " " : $0 })) : t
            return Trim.whitespaces(flat)
        }
        let subject = oneLine(r(.subject))
        let name = event.customer?.name.map(oneLine).flatMap { $0.isEmpty ? nil : $0 }
        let html = r(.html)
        var from = rule.from
        if from.name == nil { from.name = merchants[event.merchantID]?.name }
        return MIMEMessage(
            from: from, to: MailAddress(name: name, address: to), subject: subject,
            date: Date(timeIntervalSince1970: Double(effect.dateMS) / 1000),
            messageID: MIMEMessage.messageID(eventID: event.id, channel: "email", domain: config.messageIDDomain),
            text: r(.text), html: html.isEmpty ? nil : html,
            extraHeaders: [("X-Payfleet-Event-ID", event.id), ("Auto-Submitted", "auto-generated")])
    }

    public func renderSMS(_ effect: ReceiptEffect, event: PaymentEvent) -> SMSMessage? {
        guard let to = effect.phone else { return nil }
        let ctx = ReceiptContext.make(event: event, merchant: merchants[event.merchantID], channel: "sms")
        let body = Trim.whitespacesAndNewlines(templates.render(
            .sms, type: event.type.rawValue, merchant: event.merchantID, locale: effect.locale,
            context: ctx))
        return SMSMessage(
            to: to, body: body, eventID: event.id,
            messageID: MIMEMessage.messageID(eventID: event.id, channel: "sms", domain: config.messageIDDomain))
    }

    // MARK: perform (after the commit)

    public func perform(_ effect: ReceiptEffect, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws {
        guard let a = attached.current else {
            throw HandlerError.transient("NotAttached", "receipt store not attached yet")
        }
        var messages: [Outgoing] = []
        if let message = renderEmail(effect, event: event), let email {
            messages.append(Outgoing(
                channel: "email", messageID: message.messageID, transport: email.name, limiter: emailLimiter,
                send: { () async throws(TransportError) in try await email.send(message) }))
        }
        if let message = renderSMS(effect, event: event), let sms {
            messages.append(Outgoing(
                channel: "sms", messageID: message.messageID, transport: sms.name, limiter: smsLimiter,
                send: { () async throws(TransportError) in try await sms.send(message) }))
        }
        guard !messages.isEmpty else { return }
        // 1. Every message's intent, committed before anything leaves (one group commit for the
        // effect's messages, shared with the concurrent effects of the batch).
        let priors = try await intents(messages, eventID: event.id, attached: a)
        // 2. Messages already sent are skipped; one whose send was interrupted before its outcome
        // was recorded follows `outcome_unknown` (flagged: not sent, the others still are).
        var toSend: [Outgoing] = []
        var flagged: HandlerError?
        for (m, prior) in zip(messages, priors) {
            if prior == "sent" { continue }
            if prior == "intent", let flag = try await interrupted(m, eventID: event.id, attached: a) {
                flagged = flagged ?? flag
                continue
            }
            toSend.append(m)
        }
        // 3. The sends, each channel at once (each paced by its transport's limiter).
        let results = await withTaskGroup(of: (Int, TransportError?).self) { group in
            for (i, m) in toSend.enumerated() {
                group.addTask {
                    await m.limiter.acquire()
                    do throws(TransportError) { try await m.send() } catch { return (i, error) }
                    return (i, nil)
                }
            }
            var out = [TransportError?](repeating: nil, count: toSend.count)
            for await (i, e) in group { out[i] = e }
            return out
        }
        var sentNow: [String] = []
        var firstError: (any Error)? = flagged
        for (m, e) in zip(toSend, results) {
            guard let e else {
                a.metrics.sent(channel: m.channel)
                sentNow.append(m.messageID)
                continue
            }
            a.metrics.failed(channel: m.channel)
            let definite = e.certainty == .notSent
            _ = try? await a.store.write { db in
                try db.execute(
                    "UPDATE receipt_deliveries SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ? WHERE message_id = ?",
                    [.text(definite ? "failed" : "intent"), .text(e.description), .int(Int64(Date().timeIntervalSince1970)), .text(m.messageID)])
            }
            if firstError == nil { firstError = e.handlerError }
        }
        // 4. All sent: the outcome is recorded by `completed`. One failed: the others are recorded
        // as sent now, so the retry sends only what is missing. (Should this write fail, the
        // retry finds them at `intent` and applies the outcome_unknown policy: never a blind resend.)
        if let firstError {
            if !sentNow.isEmpty {
                let ids = sentNow
                _ = try? await a.store.write { db in
                    for id in ids {
                        try db.execute(
                            "UPDATE receipt_deliveries SET state = 'sent', attempts = attempts + 1, last_error = NULL, updated_at = ? WHERE message_id = ?",
                            [.int(Int64(Date().timeIntervalSince1970)), .text(id)])
                    }
                }
            }
            throw firstError
        }
    }

    /// On success the messages' outcomes are recorded in the runtime's outcome transaction (one
    /// commit per batch instead of one per message). A crash before it leaves them at `intent`,
    /// which the next attempt treats as an unknown outcome.
    public func completed(_ effect: ReceiptEffect, event: PaymentEvent, db: SQLiteConnection) throws {
        let now = Int64(Date().timeIntervalSince1970)
        try db.execute(
            "UPDATE receipts SET status = 'sent', updated_at = ? WHERE event_id = ?", [.int(now), .text(event.id)])
        // `+state`: look the rows up by event (two rows at most), not by state — SQLite's planner
        // otherwise takes the state index and walks every message in flight for each event.
        try db.execute(
            "UPDATE receipt_deliveries SET state = 'sent', attempts = attempts + 1, last_error = NULL, updated_at = ? WHERE event_id = ? AND +state = 'intent'",
            [.int(now), .text(event.id)])
    }

    /// One message of a receipt: its channel, id, transport and send.
    struct Outgoing: Sendable {
        let channel: String
        let messageID: String
        let transport: String
        let limiter: RateLimiter
        let send: @Sendable () async throws(TransportError) -> Void
    }

    /// Writes each message's intent (a message known not sent, or replayed after review, goes
    /// back to `intent`); returns each message's state before it (nil: never tried).
    private func intents(_ messages: [Outgoing], eventID: String, attached a: Attached) async throws -> [String?] {
        try await a.store.groupWrite { db in
            let now = Int64(Date().timeIntervalSince1970)
            return try messages.map { m -> String? in
                let state = try db.queryOne(
                    "SELECT state FROM receipt_deliveries WHERE message_id = ?", [.text(m.messageID)])?.string(0)
                switch state {
                case nil:
                    try db.execute(
                        """
                        INSERT INTO receipt_deliveries (message_id, event_id, channel, transport, state, created_at, updated_at)
                        VALUES (?, ?, ?, ?, 'intent', ?, ?)
                        """, [.text(m.messageID), .text(eventID), .text(m.channel), .text(m.transport), .int(now), .int(now)])
                case "failed"?, "review"?:
                    // Known not sent, or an operator replayed a flagged receipt: send it now.
                    try db.execute(
                        "UPDATE receipt_deliveries SET state = 'intent', updated_at = ? WHERE message_id = ?",
                        [.int(now), .text(m.messageID)])
                default: break
                }
                return state
            }
        }
    }

    /// A message whose send started and whose outcome was never recorded: counted, said, and
    /// either flagged for review (the error returned: not sent) or resent with the same Message-ID (nil).
    private func interrupted(_ m: Outgoing, eventID: String, attached a: Attached) async throws -> HandlerError? {
        let flag = config.outcomeUnknown == .review
        a.metrics.outcomeUnknown(channel: m.channel, action: flag ? "flagged" : "resent")
        logger.warning(
            "receipt outcome unknown after an interrupted send",
            metadata: [
                LogKey.eventID: "\(eventID)", LogKey.receiptChannel: "\(m.channel)",
                LogKey.receiptAction: "\(flag ? "flag for review" : "resend with the same Message-ID")",
            ])
        _ = try await a.store.write { db in
            try db.execute(
                "UPDATE receipt_deliveries SET unknown_outcomes = unknown_outcomes + 1, state = ?, updated_at = ? WHERE message_id = ?",
                [.text(flag ? "review" : "intent"), .int(Int64(Date().timeIntervalSince1970)), .text(m.messageID)])
        }
        guard flag else { return nil }
        return HandlerError.permanent(
            "OutcomeUnknown",
            "\(m.channel) receipt \(m.messageID) may already have been sent (interrupted before its outcome was recorded); flagged for review — replay to send it again with the same Message-ID"
        )
    }
}

/// The receipt-sender's own counters, on the worker's `/metrics`.
final class ReceiptMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func sent(channel: String) {
        registry.makeCounter(
            name: "payfleet_receipts_sent_total", labels: [("channel", channel)],
            help: "Receipts handed to the transport"
        ).increment()
    }
    func failed(channel: String) {
        registry.makeCounter(
            name: "payfleet_receipts_send_failures_total", labels: [("channel", channel)],
            help: "Receipt sends that failed (retried or dead-lettered)"
        ).increment()
    }
    func skipped(reason: String) {
        registry.makeCounter(
            name: "payfleet_receipts_skipped_total", labels: [("reason", reason)],
            help: "Events that got no receipt (no email or phone, type or merchant disabled)"
        ).increment()
    }
    func outcomeUnknown(channel: String, action: String) {
        registry.makeCounter(
            name: "payfleet_receipts_outcome_unknown_total", labels: [("channel", channel), ("action", action)],
            help: "Receipts whose earlier send was interrupted before its outcome was recorded, by action taken"
        ).increment()
    }
}
