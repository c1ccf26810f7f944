import Crypto
import Foundation

/// Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`: HMAC-SHA256 with the endpoint
/// secret over `"<t>.<raw body>"`, any configured secret (rotation) and any `v1` entry may match.
public enum StripeSignature {
    public enum Failure: Error, Equatable { case missingHeader, malformedHeader, stale, noMatch }

    public static func verify(
        header: String?, payload: [UInt8], secrets: [String], tolerance: Int, now: Date = Date()
    ) throws(Failure) {
        guard let header, !header.isEmpty else { throw .missingHeader }
        var timestamp: Int64?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            let k = kv[0].trimmingCharacters(in: .whitespaces)
            let v = kv[1].trimmingCharacters(in: .whitespaces)
            if k == "t" { timestamp = Int64(v) }
            if k == "v1", let bytes = Hex.decode(v) { signatures.append(bytes) }
        }
        guard let timestamp, !signatures.isEmpty else { throw .malformedHeader }
        var signed = Array("\(timestamp).".utf8)
        signed.append(contentsOf: payload)
        var matched = false
        for secret in secrets {
            let key = SymmetricKey(data: Array(secret.utf8))
            for sig in signatures where HMAC<SHA256>.isValidAuthenticationCode(sig, authenticating: signed, using: key) {
                matched = true
            }
        }
        guard matched else { throw .noMatch }
        guard Tolerance.within(now: now, timestamp: timestamp, seconds: tolerance) else { throw .stale }
    }

    /// The header value for a payload (tests, load generator).
    public static func sign(payload: [UInt8], secret: String, timestamp: Int64) -> String {
        var signed = Array("\(timestamp).".utf8)
        signed.append(contentsOf: payload)
        let mac = HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(timestamp),v1=\(Hex.encode(mac))"
    }
}

/// Adyen notification HMAC: base64(HMAC-SHA256(hex-decoded key,
/// `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`)),
/// fields joined unescaped, absent fields as empty strings.
public enum AdyenHMAC {
    public static func signingString(_ item: [String: Any]) -> String {
        func s(_ k: String) -> String { JSONValue.string(item[k]) ?? "" }
        let amount = item["amount"] as? [String: Any] ?? [:]
        let value = JSONValue.string(amount["value"]) ?? ""
        let currency = JSONValue.string(amount["currency"]) ?? ""
        return [s("pspReference"), s("originalReference"), s("merchantAccountCode"), s("merchantReference"),
                value, currency, s("eventCode"), s("success")].joined(separator: ":")
    }

    public static func sign(_ item: [String: Any], keyHex: String) -> String? {
        guard let key = Hex.decode(keyHex) else { return nil }
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array(signingString(item).utf8), using: SymmetricKey(data: key))
        return Data(mac).base64EncodedString()
    }

    public static func isValid(_ item: [String: Any], keyHex: String) -> Bool {
        guard let key = Hex.decode(keyHex),
            let additional = item["additionalData"] as? [String: Any],
            let sigText = additional["hmacSignature"] as? String,
            let sig = Data(base64Encoded: sigText)
        else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(
            sig, authenticating: Array(signingString(item).utf8), using: SymmetricKey(data: key))
    }
}

/// Standard Webhooks (standardwebhooks.com): `webhook-signature: v1,<base64> [v1,<base64>…]` =
/// HMAC-SHA256 with the base64 key of a `whsec_` secret over `"<webhook-id>.<webhook-timestamp>.<body>"`.
public enum StandardWebhooks {
    public enum Failure: Error, Equatable { case missingHeaders, stale, noMatch }

    public static func key(fromSecret secret: String) -> [UInt8]? {
        let b64 = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        guard let d = Data(base64Encoded: b64), !d.isEmpty else { return nil }
        return Array(d)
    }

    public static func verify(
        id: String?, timestamp: String?, signature: String?, payload: [UInt8], secrets: [String], tolerance: Int,
        now: Date = Date()
    ) throws(Failure) {
        guard let id, let timestamp, let signature, !id.isEmpty else { throw .missingHeaders }
        guard let ts = Int64(timestamp) else { throw .missingHeaders }
        var signed = Array("\(id).\(timestamp).".utf8)
        signed.append(contentsOf: payload)
        var matched = false
        for secret in secrets {
            guard let key = key(fromSecret: secret) else { continue }
            for entry in signature.split(separator: " ") {
                let parts = entry.split(separator: ",", maxSplits: 1)
                guard parts.count == 2, parts[0] == "v1", let sig = Data(base64Encoded: String(parts[1])) else { continue }
                if HMAC<SHA256>.isValidAuthenticationCode(sig, authenticating: signed, using: SymmetricKey(data: key)) {
                    matched = true
                }
            }
        }
        guard matched else { throw .noMatch }
        guard Tolerance.within(now: now, timestamp: ts, seconds: tolerance) else { throw .stale }
    }

    public static func sign(id: String, timestamp: Int64, payload: [UInt8], secret: String) -> String {
        var signed = Array("\(id).\(timestamp).".utf8)
        signed.append(contentsOf: payload)
        let mac = HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: key(fromSecret: secret) ?? []))
        return "v1," + Data(mac).base64EncodedString()
    }
}

/// The freshness check of a signed timestamp, with checked arithmetic: a timestamp near
/// Int64.min or Int64.max is stale, never a trap.
enum Tolerance {
    static func within(now: Date, timestamp: Int64, seconds: Int) -> Bool {
        let (diff, overflow) = Int64(now.timeIntervalSince1970).subtractingReportingOverflow(timestamp)
        guard !overflow, diff != .min else { return false }
        return abs(diff) <= Int64(seconds)
    }
}
