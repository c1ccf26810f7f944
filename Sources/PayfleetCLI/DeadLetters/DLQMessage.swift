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

    static func digest(_ bytes: [UInt8]) -> String { ErrorFingerprint.digest(bytes) }
}

extension DeadLetter {
    /// When it first failed (`x-payfleet-first-failed-at`, else the broker's `x-death` time).
    public var firstFailed: Date? { firstFailedAt.flatMap(RFC3339.parse) }
}
