import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore

/// How ingest (and `payfleet backfill stripe`) reads Stripe's REST API.
///
/// Keys under `ingest.stripe` (all optional; without `api_key` nothing calls Stripe):
/// - `api_key` / `api_key_file` (secret, a restricted key with read access to balance
///   transactions and events): sent only as `Authorization: Bearer`, never logged, stored or
///   repeated in an error
/// - `api_base` (string, `https://api.stripe.com`): where the API is (tests: a loopback server)
/// - `api_timeout` (duration, `10s`): per request
/// - `fee_state_file` (string, `<state_dir>/stripe-fees.sqlite`): the fee-fetch queue
/// - `fee_backoff` (duration, `1s`): first retry delay after a 429, 5xx or connection failure;
///   doubles per attempt up to `fee_backoff_max` (duration, `10m`); a `Retry-After` wins
/// - `fee_poll_interval` (duration, `1s`): how often the queue is looked at when idle
public struct StripeAPIConfiguration: Sendable {
    public var apiKey: String
    public var baseURL: String = "https://api.stripe.com"
    public var timeoutSeconds: Double = 10
    public var feeStatePath: String
    public var backoffMS: Int = 1_000
    public var backoffMaxMS: Int = 600_000
    public var pollIntervalMS: Int = 1_000

    public init(apiKey: String, feeStatePath: String) {
        self.apiKey = apiKey
        self.feeStatePath = feeStatePath
    }

    static func read(_ stripe: ConfigSection, stateDir: String) throws(ConfigError) -> StripeAPIConfiguration? {
        let base = try stripe.string("api_base")
        let timeout = try stripe.durationMS("api_timeout", default: 10_000)
        let path = try stripe.string(
            "fee_state_file", default: (stateDir as NSString).appendingPathComponent("stripe-fees.sqlite"))
        let backoff = try stripe.durationMS("fee_backoff", default: 1_000)
        let backoffMax = try stripe.durationMS("fee_backoff_max", default: 600_000)
        let poll = try stripe.durationMS("fee_poll_interval", default: 1_000)
        guard let key = try stripe.secret("api_key")?.trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
        guard key.count >= 8, !key.contains(where: { $0.isWhitespace }) else {
            throw ConfigError(key: stripe.dotted("api_key"), message: "not a Stripe API key")
        }
        var c = StripeAPIConfiguration(apiKey: key, feeStatePath: path)
        if let base {
            guard let u = URL(string: base), u.scheme == "https" || u.scheme == "http", u.host != nil else {
                throw ConfigError(key: stripe.dotted("api_base"), message: "not an http(s) URL")
            }
            c.baseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        }
        guard timeout >= 100, backoff >= 1, backoffMax >= backoff, poll >= 10 else {
            throw ConfigError(key: stripe.dotted("api_timeout"), message: "timeouts and backoffs must be positive")
        }
        c.timeoutSeconds = Double(timeout) / 1000
        c.backoffMS = backoff
        c.backoffMaxMS = backoffMax
        c.pollIntervalMS = poll
        return c
    }
}

/// A failed call to Stripe's API. `transient` (429, 5xx, connection failure, timeout) is worth
/// retrying, after `retryAfter` seconds when Stripe said so. The message never holds the key.
public struct StripeAPIError: Error, CustomStringConvertible, Sendable {
    public var status: Int?
    public var transient: Bool
    public var retryAfter: Double?
    public var message: String
    public var description: String { message }
}

/// A small client of Stripe's REST API (GET only): bearer key, JSON answers, classified errors.
public final class StripeAPI: Sendable {
    public let configuration: StripeAPIConfiguration
    let session: URLSession

    public init(configuration: StripeAPIConfiguration) {
        self.configuration = configuration
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = configuration.timeoutSeconds
        c.timeoutIntervalForResource = configuration.timeoutSeconds * 2
        c.httpCookieStorage = nil
        c.urlCache = nil
        c.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: c)
    }

    /// Percent-encodes a query value the way Stripe's form encoding expects (`created[gte]`).
    static func encode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    /// `GET path?query`; the JSON object Stripe answered with a 2xx, or a `StripeAPIError`.
    public func get(_ path: String, query: [(String, String)] = []) async throws -> [String: Any] {
        var text = configuration.baseURL + path
        if !query.isEmpty { text += "?" + query.map { "\(Self.encode($0.0))=\(Self.encode($0.1))" }.joined(separator: "&") }
        guard let url = URL(string: text) else {
            throw StripeAPIError(status: nil, transient: false, message: "bad Stripe URL for \(path)")
        }
        var request = URLRequest(url: url)
        request.httpMethod = "GET"
        request.timeoutInterval = configuration.timeoutSeconds
        request.setValue("Bearer \(configuration.apiKey)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch {
            let what = (error as? URLError).map { "URLError \($0.code.rawValue)" } ?? "\(type(of: error))"
            throw StripeAPIError(status: nil, transient: true, message: "GET \(path): \(what)")
        }
        guard let http = response as? HTTPURLResponse else {
            throw StripeAPIError(status: nil, transient: true, message: "GET \(path): no HTTP response")
        }
        let status = http.statusCode
        if (200..<300).contains(status) {
            guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw StripeAPIError(status: status, transient: true, message: "GET \(path): answer is not a JSON object")
            }
            return o
        }
        let retryAfter = (http.value(forHTTPHeaderField: "Retry-After")).flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        // Stripe's error type and code only: its message may quote the request (never the key,
        // but keep it out of logs anyway).
        let err = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["error"] as? [String: Any]
        let kind = [err?["type"] as? String, err?["code"] as? String].compactMap { $0 }.joined(separator: "/")
        let transient = status == 429 || status == 408 || status >= 500
        throw StripeAPIError(
            status: status, transient: transient, retryAfter: retryAfter,
            message: "GET \(path): HTTP \(status)" + (kind.isEmpty ? "" : " (\(kind))"))
    }

    /// `get`, retrying transient failures with doubling backoff (Retry-After wins), at most
    /// `attempts` times in all.
    public func getRetrying(_ path: String, query: [(String, String)] = [], attempts: Int = 6) async throws -> [String: Any] {
        var delay = Double(configuration.backoffMS) / 1000
        var n = 0
        while true {
            n += 1
            do { return try await get(path, query: query) } catch let e as StripeAPIError where e.transient && n < attempts {
                try await Task.sleep(for: .milliseconds(Int((e.retryAfter ?? delay) * 1000)))
                delay = min(delay * 2, Double(configuration.backoffMaxMS) / 1000)
            }
        }
    }
}
