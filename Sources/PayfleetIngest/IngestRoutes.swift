import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetTelemetry
import PayfleetWorker
import ServiceLifecycle

/// The handlers of ingest's routes (`buildApplication` registers them); each returns a
/// response or throws an `IngestError`.
struct IngestRoutes: Sendable {
    let configuration: IngestConfiguration
    let outbox: Outbox
    let metrics: IngestMetrics
    let relay: OutboxRelay?
    let logger: Logger
    let stripeMapper: StripeMapper
    let adyenMapper: AdyenMapper
    /// The queue of Stripe balance transactions to fetch fees from (`stripe.api_key` set).
    var stripeFees: StripeFeeQueue?

    init(configuration: IngestConfiguration, outbox: Outbox, metrics: IngestMetrics, relay: OutboxRelay?, logger: Logger) {
        self.configuration = configuration
        self.outbox = outbox
        self.metrics = metrics
        self.relay = relay
        self.logger = logger
        stripeMapper = StripeMapper(merchants: configuration.merchants, defaultMerchant: configuration.stripeDefaultMerchant)
        adyenMapper = AdyenMapper(merchants: configuration.merchants, capture: configuration.adyenCapture)
    }

    /// Reads the body within the limit and the time allowed, runs `body`, turns errors into
    /// `{"error": …}` answers. Reading stops at the limit (the connection is then closed, not
    /// drained); a body that trickles in slower than `body_timeout` allows answers 408.
    func handle(_ source: String, _ req: Request, _ body: ([UInt8]) async throws -> Response) async -> Response {
        do {
            let tooLarge = IngestError(.contentTooLarge, "body_too_large", "body: larger than \(configuration.bodyLimit) bytes")
            if let declared = req.headers[.contentLength].flatMap({ Int($0) }), declared > configuration.bodyLimit {
                throw tooLarge
            }
            var bytes: [UInt8] = []
            let deadline = ContinuousClock.now + .seconds(configuration.bodyTimeoutSeconds)
            do {
                for try await chunk in req.body {
                    guard bytes.count + chunk.readableBytes <= configuration.bodyLimit else { throw tooLarge }
                    bytes.append(contentsOf: chunk.readableBytesView)
                    guard ContinuousClock.now < deadline else {
                        throw IngestError(.requestTimeout, "body_timeout", "body: not received within \(configuration.bodyTimeoutSeconds) s")
                    }
                }
            } catch let e as IngestError {
                throw e
            } catch {
                throw IngestError(.badRequest, "bad_body", "body: could not be read")
            }
            return try await body(bytes)
        } catch let e as IngestError {
            metrics.rejected(source, code: e.code)
            if e.status != .serviceUnavailable {
                logger.info("request rejected", metadata: [
                    LogKey.ingestSource: "\(source)", LogKey.httpStatus: "\(e.status.code)", LogKey.ingestError: "\(e.code)",
                ])
            }
            var r = e.response
            // The rest of an oversized or slow body is never read: close the connection.
            if e.status == .contentTooLarge || e.status == .requestTimeout { r.headers[.connection] = "close" }
            return r
        } catch {
            metrics.rejected(source, code: "internal")
            logger.error("request failed", metadata: [LogKey.ingestSource: "\(source)", LogKey.error: "\(error)"])
            return IngestError(.serviceUnavailable, "unavailable", "the event could not be made durable; retry").response
        }
    }

    // MARK: Provider routes

    func stripe(_ req: Request, _ body: [UInt8]) async throws -> Response {
        do {
            try StripeSignature.verify(
                header: req.headers[.stripeSignature], payload: body, secrets: configuration.stripeSecrets,
                tolerance: configuration.stripeToleranceSeconds)
        } catch {
            throw IngestError(.unauthorized, "invalid_signature", "Stripe-Signature: \(Self.describe(error))")
        }
        let object = try parseObject(body)
        let (masked, fields) = PANGuard.redact(object, exempt: StripeMapper.isExempt)
        reportRedactions("stripe", fields)
        guard let event = masked as? [String: Any] else { throw IngestError(.badRequest, "invalid_json", "body: not an object") }
        let mapped = try admit(try stripeMapper.map(event, receivedAt: Date()), field: "data.object")
        let outcome = try await commit(
            [mapped], source: "stripe", req: req, redactions: fields.isEmpty ? [:] : [mapped.canonicalID: fields])
        guard case .accepted(let ids) = outcome, let first = ids.first else { throw IngestError(.conflict, "conflict", "") }
        if let stripeFees {
            // Queued before the answer: if this fails Stripe retries, and the retry queues it.
            do { try await stripeFees.enqueue(stripeMapper.feeRequests(event, mapped: mapped, duplicate: first.duplicate)) } catch {
                logger.error("stripe fee request not stored", metadata: [LogKey.error: "\(error)"])
                throw IngestError(.serviceUnavailable, "not_durable", "the fee request could not be stored")
            }
        }
        return Self.accepted(first.id, duplicate: first.duplicate)
    }

    func adyen(_ req: Request, _ body: [UInt8]) async throws -> Response {
        guard let key = configuration.adyenHMACKeyHex else {
            throw IngestError(.unauthorized, "invalid_signature", "additionalData.hmacSignature: no HMAC key configured")
        }
        let object = try parseObject(body)
        guard let list = object["notificationItems"] as? [Any], !list.isEmpty else {
            throw IngestError.invalid("notificationItems", "must be a non-empty list")
        }
        var items: [[String: Any]] = []
        for (i, entry) in list.enumerated() {
            guard let item = (entry as? [String: Any])?["NotificationRequestItem"] as? [String: Any] else {
                throw IngestError.invalid("notificationItems[\(i)].NotificationRequestItem", "missing")
            }
            // One bad signature rejects the whole batch: nothing of it is kept.
            guard AdyenHMAC.isValid(item, keyHex: key) else {
                throw IngestError(
                    .unauthorized, "invalid_signature",
                    "notificationItems[\(i)].NotificationRequestItem.additionalData.hmacSignature: does not verify")
            }
            items.append(item)
        }
        var mapped: [MappedEvent] = []
        var redacted: [String: [String]] = [:]
        let now = Date()
        for (i, item) in items.enumerated() {
            let (masked, fields) = PANGuard.redact(
                item, path: "notificationItems[\(i)].NotificationRequestItem", exempt: AdyenMapper.isExempt)
            reportRedactions("adyen", fields)
            let item = try admit(
                try adyenMapper.map(masked as? [String: Any] ?? [:], index: i, receivedAt: now),
                field: "notificationItems[\(i)].NotificationRequestItem")
            if !fields.isEmpty { redacted[item.canonicalID, default: []] += fields }
            mapped.append(item)
        }
        _ = try await commit(mapped, source: "adyen", req: req, redactions: redacted)
        return Response(
            status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "[accepted]")))
    }

    // MARK: Canonical routes

    func standard(_ source: String, _ req: Request, _ body: [UInt8]) async throws -> Response {
        guard let secrets = configuration.standardWebhookSecrets[source] else {
            throw IngestError(.notFound, "unknown_source", "source: '\(source)' is not configured")
        }
        do {
            try StandardWebhooks.verify(
                id: req.headers[.webhookID], timestamp: req.headers[.webhookTimestamp],
                signature: req.headers[.webhookSignature], payload: body, secrets: secrets,
                tolerance: configuration.standardTolerances[source] ?? configuration.standardToleranceSeconds)
        } catch {
            throw IngestError(.unauthorized, "invalid_signature", "webhook-signature: \(Self.describe(error))")
        }
        let event = try canonicalEvent(body, source: source)
        let outcome = try await commit([.event(event)], source: "standard:\(source)", req: req)
        guard case .accepted(let ids) = outcome, let first = ids.first else { throw IngestError(.conflict, "conflict", "") }
        return Self.accepted(first.id, duplicate: first.duplicate)
    }

    func api(_ req: Request, _ body: [UInt8]) async throws -> Response {
        guard let auth = req.headers[.authorization], auth.hasPrefix("Bearer "), auth.count > 7 else {
            throw IngestError(.unauthorized, "invalid_api_key", "Authorization: Bearer API key required")
        }
        let hash = Hex.encode(SHA256.hash(data: Array(auth.dropFirst(7).utf8)))
        guard let key = configuration.apiKeys.first(where: { Self.constantTimeEqual($0.sha256, hash) }) else {
            throw IngestError(.unauthorized, "invalid_api_key", "Authorization: unknown API key")
        }
        guard let idem = req.headers[.idempotencyKey], !idem.isEmpty, idem.utf8.count <= 255 else {
            throw IngestError(.badRequest, "idempotency_key_required", "Idempotency-Key: header required (1–255 characters)")
        }
        // The key is stored: it gets the same guard as the body.
        guard idem.unicodeScalars.allSatisfy({ $0.value >= 0x21 && $0.value <= 0x7E }) else {
            throw IngestError(.badRequest, "invalid_idempotency_key", "Idempotency-Key: printable ASCII only")
        }
        // The key is kept only as its SHA-256 (`Outbox.Idempotency`): a key that happens to hold
        // a card-number-shaped run (1 UUID in ~10,000 has a Luhn-valid 13–19-digit run across
        // its dashes) is neither refused nor stored.
        let event = try canonicalEvent(body, source: key.source, forbidden: true)
        guard key.merchants.contains("*") || key.merchants.contains(event.merchantID) else {
            throw IngestError(.forbidden, "forbidden", "merchant_id: this key may not send for '\(event.merchantID)'")
        }
        if let types = key.types, !types.contains(event.type.rawValue) {
            throw IngestError(.forbidden, "forbidden", "type: this key may not send '\(event.type.rawValue)'")
        }
        let idempotency = Outbox.Idempotency(
            keyHash: key.sha256, key: "sha256:" + Hex.encode(SHA256.hash(data: Array(idem.utf8))),
            bodySHA: Hex.encode(SHA256.hash(data: body)))
        switch try await commit([.event(event)], source: "api:\(key.source)", req: req, idempotency: idempotency) {
        case .conflict(let original):
            throw IngestError(
                .conflict, "idempotency_conflict",
                "Idempotency-Key: already used with a different body (event \(original))")
        case .accepted(let ids):
            guard let first = ids.first else { throw IngestError(.conflict, "conflict", "") }
            return Self.accepted(first.id, duplicate: first.duplicate)
        }
    }

    /// A canonical event body from `source` (the route's or the API key's): no card number in
    /// any value or key (422 naming the field), valid per EventCodec and the input rules of
    /// DESIGN §3, not an internal type, a configured merchant. The id is derived from source +
    /// merchant + `source.event_id` (a sent `id` is ignored), so a retry dedupes and another
    /// merchant's event id is another event.
    func canonicalEvent(_ body: [UInt8], source: String, forbidden: Bool = false) throws -> PaymentEvent {
        let object = try parseObject(body)
        if let finding = PANGuard.firstFinding(in: object) {
            throw IngestError(.unprocessableContent, "pan_detected", "\(finding.field): contains a card number")
        }
        var event: PaymentEvent
        do { event = try EventCodec.decode(Data(body)) } catch {
            throw IngestError(.unprocessableContent, "invalid_event", error.message)
        }
        guard !event.type.isInternal else {
            throw IngestError.invalid("type", "'\(event.type.rawValue)' is published by workers only")
        }
        guard event.source.provider == source else {
            if forbidden {
                throw IngestError(.forbidden, "forbidden", "source.provider: this key may only send '\(source)'")
            }
            throw IngestError.invalid("source.provider", "must be '\(source)' on this route")
        }
        do { try event.validateInput() } catch { throw IngestError.invalid(error.field, error.message) }
        guard configuration.merchants.contains(where: { $0.id == event.merchantID }) else {
            throw IngestError(.unprocessableContent, "unknown_merchant", "merchant_id: '\(event.merchantID)' is not configured")
        }
        event.id = PaymentEvent.canonicalID(source: source, merchant: event.merchantID, eventID: event.source.eventID)
        event.receivedAt = Date()
        return event
    }

    /// A provider event after mapping: the input rules of DESIGN §3 (422 naming the field),
    /// and a zero amount (a card check, a zero-value authorisation) recorded, not published.
    func admit(_ mapped: MappedEvent, field: String) throws -> MappedEvent {
        guard let e = mapped.event else { return mapped }
        if e.amount.value == 0, e.type != .invoiceIssued, e.type != .paymentFailed {
            return .recordOnly(provider: e.source.provider, eventID: e.source.eventID, type: e.type.rawValue, reason: "zero amount")
        }
        do { try e.validateInput() } catch { throw IngestError.invalid(error.field, error.message) }
        return mapped
    }

    // MARK: Helpers

    func parseObject(_ body: [UInt8]) throws -> [String: Any] {
        switch StrictJSON.check(body, maxDepth: configuration.maxDepth) {
        case .tooDeep?:
            throw IngestError(.badRequest, "too_deep", "body: JSON nested deeper than \(configuration.maxDepth)")
        case .duplicateKey(let path)?:
            throw IngestError(.badRequest, "duplicate_key", "\(Self.printable(path)): key appears twice in one object")
        case .malformed?:
            throw IngestError(.badRequest, "invalid_json", "body: not a JSON object")
        case nil:
            break
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw IngestError(.badRequest, "invalid_json", "body: not a JSON object")
        }
        return object
    }

    func commit(
        _ items: [MappedEvent], source: String, req: Request, idempotency: Outbox.Idempotency? = nil,
        redactions: [String: [String]] = [:]
    ) async throws -> Outbox.Outcome {
        if configuration.benchmarkNoOutbox { return .accepted(items.map { ($0.canonicalID, false) }) }
        let outcome: Outbox.Outcome
        do {
            outcome = try await outbox.accept(
                items, traceparent: PayfleetTracing.currentTraceparent ?? Self.traceparent(req), idempotency: idempotency,
                redactions: redactions)
        } catch {
            logger.error("outbox commit failed", metadata: [LogKey.ingestSource: "\(source)", LogKey.error: "\(error)"])
            throw IngestError(.serviceUnavailable, "unavailable", "the event could not be made durable; retry")
        }
        if case .accepted(let ids) = outcome {
            for (item, r) in zip(items, ids) {
                metrics.accepted(source, duplicate: r.duplicate)
                if case .recordOnly(_, _, let type, _) = item, !r.duplicate { metrics.unmapped(source, type: type) }
                logger.debug("event accepted", metadata: [
                    LogKey.eventID: "\(r.id)", LogKey.ingestSource: "\(source)", LogKey.ingestDuplicate: "\(r.duplicate)",
                ])
            }
        }
        return outcome
    }

    func reportRedactions(_ source: String, _ fields: [String]) {
        for f in fields {
            metrics.panRedacted(source, field: PANGuard.label(f))
            logger.warning("card number masked in provider webhook", metadata: [LogKey.ingestSource: "\(source)", LogKey.ingestField: "\(f)"])
        }
    }

    func readiness() async -> Response {
        let storeOK = (try? await outbox.store.withConnection { db in try db.queryOne("SELECT 1") != nil }) ?? false
        // The relay's counts (at most a second old): a probe must not run count(*) on the outbox.
        let counts = relay?.lastCounts ?? (pending: -1, parked: -1)
        let broker = relay.map { $0.brokerConnected ? "connected" : "disconnected" } ?? "not configured"
        // Ingest accepts while the broker is down (the outbox holds events): ready = durable store.
        let body = "{\"ready\": \(storeOK), \"store\": \"\(storeOK ? "ok" : "failing")\", \"broker\": \"\(broker)\", \"outbox_pending\": \(counts.pending), \"outbox_parked\": \(counts.parked), \"relay_paused\": \(relay?.isPaused ?? false)}\n"
        return Response(
            status: storeOK ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func accepted(_ id: String, duplicate: Bool) -> Response {
        let body = "{\"id\":\"\(id)\",\"status\":\"\(duplicate ? "duplicate" : "accepted")\"}"
        return Response(
            status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// The W3C trace context (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
    /// lowercase, ids not all zero, and no card number (it is stored and published); anything
    /// else is replaced by a fresh one.
    static func traceparent(_ req: Request) -> String {
        if let t = req.headers[.traceparent], isValidTraceparent(t), !PANGuard.containsPAN(t) { return t }
        var rng = SystemRandomNumberGenerator()
        let trace = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let span = (0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return "00-\(Hex.encode(trace))-\(Hex.encode(span))-01"
    }

    static func isValidTraceparent(_ t: String) -> Bool {
        let u = Array(t.utf8)
        guard u.count == 55, u[0] == 48, u[1] == 48, u[2] == 45, u[35] == 45, u[52] == 45 else { return false }
        func hex(_ r: Range<Int>) -> Bool { u[r].allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }
        guard hex(3..<35), hex(36..<52), hex(53..<55) else { return false }
        return u[3..<35].contains { $0 != 48 } && u[36..<52].contains { $0 != 48 }
    }

    /// A path from the request for an error message: control characters and quotes shown escaped.
    static func printable(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars.prefix(200) {
            if u.value < 0x20 || u.value == 0x7F || (0x80...0x9F).contains(u.value) {
                out += "\\u{\(String(u.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var d: UInt8 = 0
        for i in 0..<x.count { d |= x[i] ^ y[i] }
        return d == 0
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case StripeSignature.Failure.missingHeader: return "header missing"
        case StripeSignature.Failure.malformedHeader: return "header malformed (needs t= and v1=)"
        case StripeSignature.Failure.stale, StandardWebhooks.Failure.stale: return "timestamp outside the tolerance"
        case StandardWebhooks.Failure.missingHeaders: return "webhook-id, webhook-timestamp and webhook-signature required"
        default: return "no signature matches a configured secret"
        }
    }
}
