import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetWorker

/// One message in a worker's dead-letter queue, read without decoding it as an event (a dead
/// letter is often exactly the message that does not decode): id, type and merchant come from
/// the JSON body when it has them, the error and attempts from the runtime's headers, and where
/// the broker dead-lettered it by itself (delivery limit) from `x-death`.
public struct DeadLetter: Sendable {
    public let message: AMQPMessage
    /// The event id: `message_id`, else the body's `id`, else `sha256:` of the body.
    public let id: String
    public let type: String?
    public let merchant: String?
    /// `customer.id` of the event body.
    public let customer: String?
    public let attempts: Int?
    public let firstFailedAt: String?
    /// `Class: message`, as the runtime wrote it (or derived from `x-death`).
    public let error: String
    public let fingerprint: ErrorFingerprint
    /// `x-death` entries, most recent first.
    public let deaths: [[String: AMQPFieldValue]]

    public init(_ message: AMQPMessage) {
        self.message = message
        let object = (try? JSONSerialization.jsonObject(with: Data(message.body))) as? [String: Any]
        let bodyID = object?["id"] as? String
        id = message.messageID.flatMap { $0.isEmpty ? nil : $0 } ?? bodyID ?? ("sha256:" + DeadLetter.digest(message.body))
        type = object?["type"] as? String
        merchant = object?["merchant_id"] as? String
        customer = (object?["customer"] as? [String: Any])?["id"] as? String
        var deaths: [[String: AMQPFieldValue]] = []
        if case .array(let entries)? = message.headers["x-death"] {
            for e in entries { if case .table(let t) = e { deaths.append(t) } }
        }
        self.deaths = deaths
        let h = message.headers
        attempts = h[PayfleetHeaders.attempts]?.intValue.map { Int($0) }
        if let first = h[PayfleetHeaders.firstFailedAt]?.stringValue {
            firstFailedAt = first
        } else if let t = deaths.last?["time"], case .timestamp(let ts) = t {
            firstFailedAt = RFC3339.format(Date(timeIntervalSince1970: TimeInterval(ts)))
        } else {
            firstFailedAt = nil
        }
        if let e = h[PayfleetHeaders.error]?.stringValue, !e.isEmpty {
            error = e
        } else if let d = deaths.first {
            // Dead-lettered by the broker, not by the runtime: the reason is all there is.
            let reason = d["reason"]?.stringValue ?? "unknown"
            let queue = d["queue"]?.stringValue ?? "?"
            switch reason {
            case "delivery_limit":
                error = "DeliveryLimit: redelivered past x-delivery-limit on \(queue) without an ack "
                    + "(the worker crashed or lost its connection while holding it)"
            case "rejected": error = "Rejected: rejected without requeue on \(queue)"
            case "expired": error = "Expired: message TTL expired on \(queue)"
            case "maxlen": error = "QueueFull: dropped by the length limit of \(queue)"
            default: error = "DeadLettered: reason '\(reason)' on \(queue)"
            }
        } else {
            error = "Unknown: no x-payfleet-error header and no x-death"
        }
        fingerprint = ErrorFingerprint(error)
    }

    /// The partition queue the message came from, when `x-death` says so (a retry tier of
    /// partition N, or partition N's own queue when the broker dead-lettered it).
    public func sourcePartition(_ topology: WorkerTopology) -> Int? {
        guard topology.isPartitioned else { return 0 }
        for d in deaths {
            guard let q = d["queue"]?.stringValue else { continue }
            for p in 0..<topology.partitions {
                let main = topology.queue(partition: p)
                if q == main || q.hasPrefix(main + ".retry.") { return p }
            }
        }
        return nil
    }

    /// A JSON object for `dlq list --json` (DESIGN §6 names: id, type, attempts, error,
    /// first_failed_at) with the fingerprint beside them.
    public var listJSON: [String: Any] {
        [
            "id": id, "type": orNull(type), "merchant_id": orNull(merchant),
            "attempts": orNull(attempts), "error": error, "first_failed_at": orNull(firstFailedAt),
            "fingerprint": fingerprint.id, "error_class": fingerprint.errorClass,
        ]
    }

    /// Everything about the message, for `dlq show --json` and archives: every header (x-death
    /// included) and the body, as text when it is UTF-8 and as base64 otherwise.
    public var fullJSON: [String: Any] {
        var o = listJSON
        o["headers"] = message.headers.mapValues(\.jsonObject)
        o["message_id"] = orNull(message.messageID)
        o["content_type"] = orNull(message.contentType)
        if let text = String(validating: message.body, as: UTF8.self) {
            o["body"] = text
            if let event = try? JSONSerialization.jsonObject(with: Data(message.body)) { o["event"] = event }
        } else {
            o["body_base64"] = Data(message.body).base64EncodedString()
        }
        return o
    }

    static func digest(_ bytes: [UInt8]) -> String {
        // FNV-1a 64: enough to name an id-less body; not a security property.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }
}

/// The grouping key of `dlq list --group-by error`: the error class plus the message with ids,
/// numbers, quoted values and timestamps replaced by placeholders, so that "attempt 4 of 4
/// failing for evt_01J…" and "attempt 4 of 4 failing for evt_09K…" are one group.
public struct ErrorFingerprint: Sendable, Hashable {
    public let errorClass: String
    public let normalized: String
    /// 8 hex digits naming the group (`dlq replay W --error <id>`).
    public let id: String

    public init(_ error: String) {
        let (cls, message) = ErrorFingerprint.split(error)
        errorClass = cls
        normalized = ErrorFingerprint.normalize(message)
        id = String(DeadLetter.digest(Array((cls + "\n" + normalized).utf8)).suffix(8))
    }

    public var text: String { normalized.isEmpty ? errorClass : "\(errorClass): \(normalized)" }

    /// `InvalidEvent: amount.value: must not be negative` → (`InvalidEvent`, the rest). A text
    /// without a leading identifier and colon has class `Error`.
    static func split(_ error: String) -> (String, String) {
        if let r = error.range(of: ": ") {
            let head = error[..<r.lowerBound]
            if !head.isEmpty, head.count <= 64,
                head.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" })
            {
                return (String(head), String(error[r.upperBound...]))
            }
        }
        return ("Error", error)
    }

    static let patterns: [(String, String)] = [
        // Quoted values are data ('…' and "…").
        (#"'[^']*'"#, "'<v>'"),
        (#""[^"]*""#, "\"<v>\""),
        (#"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"#, "<time>"),
        (#"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"#, "<uuid>"),
        // Prefixed ids: evt_01JD…, pi_3Q…, cus_12, acct_1Acme, ch_…
        // (a digit or a capital after the underscore: `evt_` + base32 may lack digits, while
        // `demo_fault` or `m_acme` are names).
        (#"\b[A-Za-z]{1,12}_(?=[A-Za-z0-9_\-]*[0-9A-Z])[A-Za-z0-9_\-]+\b"#, "<id>"),
        // Long tokens mixing letters and digits (base32/hex ids, references).
        (#"\b(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{8,}\b"#, "<id>"),
        (#"[-+]?\b\d+(\.\d+)?\b"#, "<n>"),
    ]
    /// The patterns are constants (a unit test checks each compiles); one that did not would be
    /// skipped rather than crash an operator's command.
    nonisolated(unsafe) static let rules: [(NSRegularExpression, String)] = patterns.compactMap { p in
        (try? NSRegularExpression(pattern: p.0)).map { ($0, p.1) }
    }

    public static func normalize(_ message: String) -> String {
        var s = message
        for (re, template) in rules {
            s = re.stringByReplacingMatches(
                in: s, range: NSRange(s.startIndex..., in: s), withTemplate: NSRegularExpression.escapedTemplate(for: template))
        }
        return s.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    /// Whether `--error TEXT` selects this error: the group id, or a substring of the error as
    /// written or of its normalized form.
    public func matches(_ text: String, error: String) -> Bool {
        text.lowercased() == id || error.contains(text) || self.text.contains(text)
    }
}

extension DeadLetter {
    /// When it first failed (`x-payfleet-first-failed-at`, else the broker's `x-death` time).
    public var firstFailed: Date? { firstFailedAt.flatMap(RFC3339.parse) }
}
