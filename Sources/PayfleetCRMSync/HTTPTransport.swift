import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetWorker

/// One HTTP exchange with a CRM, classified the way DESIGN §5 asks: 2xx done; 408, 429, 5xx and
/// connection failures transient (the `Retry-After` a CRM asks for is honoured before the next
/// call, up to `maxRetryAfter`); any other status permanent, with the status and a body excerpt
/// from which emails, phone numbers and credentials are removed (`Redaction`).
public final class HTTPTransport: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: Data
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    let session: URLSession
    public let timeout: TimeInterval
    public let maxRetryAfter: TimeInterval
    private let pauseUntil = Locked(Date.distantPast)
    /// Credentials the connectors use: never repeated in an error, whatever a CRM echoes.
    private let secrets = Locked<[String]>([])

    /// Adds credentials to redact from every error this transport raises.
    public func redacting(_ values: [String?]) {
        let new = values.compactMap { $0 }.filter { $0.count >= 4 }
        secrets.withLock { s in for v in new where !s.contains(v) { s.append(v) } }
    }

    /// `text` without personal data or credentials (`Redaction`, plus the known secrets).
    public func redact(_ text: String) -> String { Redaction.redact(text, secrets: secrets.current) }

    public init(timeout: TimeInterval = 10, maxRetryAfter: TimeInterval = 30) {
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = timeout
        c.timeoutIntervalForResource = timeout * 2
        c.httpCookieStorage = nil
        c.urlCache = nil
        c.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: c)
        self.timeout = timeout
        self.maxRetryAfter = maxRetryAfter
    }

    /// Sends a request, returns the raw response (any status); throws a transient
    /// `HandlerError` for connection failures and timeouts.
    public func exchange(_ request: URLRequest) async throws -> Response {
        // A CRM that asked for a pause (Retry-After) gets it before anything else is sent.
        let wait = pauseUntil.current.timeIntervalSinceNow
        if wait > 0 { try await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
        var r = request
        r.timeoutInterval = timeout
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: r)
        } catch {
            let what = (error as? URLError).map { "URLError \($0.code.rawValue)" } ?? "\(type(of: error))"
            throw HandlerError.transient(
                "HTTPConnection",
                redact("\(r.httpMethod ?? "GET") \(Self.describe(r.url)): \(what): \(error.localizedDescription)"))
        }
        guard let http = response as? HTTPURLResponse else {
            throw HandlerError.transient("HTTPConnection", redact("no HTTP response from \(Self.describe(r.url))"))
        }
        var headers: [String: String] = [:]
        for (k, v) in http.allHeaderFields {
            if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v }
        }
        return Response(status: http.statusCode, headers: headers, body: data)
    }

    /// `exchange`, then classification: returns only for 2xx.
    @discardableResult
    public func send(_ request: URLRequest) async throws -> Response {
        let r = try await exchange(request)
        try check(r, request: request)
        return r
    }

    public func check(_ r: Response, request: URLRequest) throws {
        if (200..<300).contains(r.status) { return }
        // The excerpt is what the CRM said: it may echo the customer's email or phone, or a token.
        let what = redact(
            "\(request.httpMethod ?? "GET") \(Self.describe(request.url)) answered \(r.status): \(Self.excerpt(r.body))")
        if r.status == 408 || r.status == 429 || r.status >= 500 {
            var message = what
            if let ra = r.headers["retry-after"], let seconds = Self.retryAfter(ra) {
                message += " (Retry-After \(ra))"
                let until = Date().addingTimeInterval(min(seconds, maxRetryAfter))
                pauseUntil.withLock { if until > $0 { $0 = until } }
            }
            throw HandlerError.transient("HTTP\(r.status)", message)
        }
        throw HandlerError.permanent("HTTP\(r.status)", what)
    }

    /// `Retry-After` as seconds: delta-seconds or an HTTP date.
    public static func retryAfterSeconds(_ value: String) -> TimeInterval? { retryAfter(value) }

    static func retryAfter(_ value: String) -> TimeInterval? {
        let v = value.trimmingCharacters(in: .whitespaces)
        if let s = Int(v), s >= 0 { return TimeInterval(s) }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f.date(from: v).map { max(0, $0.timeIntervalSinceNow) }
    }

    /// The first 300 characters of a response body on one line.
    static func excerpt(_ body: Data) -> String {
        let s = String(decoding: body.prefix(600), as: UTF8.self)
            .replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        return s.count > 300 ? String(s.prefix(300)) + "…" : (s.isEmpty ? "(empty body)" : s)
    }

    /// Scheme, host, port and path: never the query (it may carry a key) or credentials.
    /// The path is shown decoded, so that `redact` recognizes an email or phone number that a
    /// URL template put into it (`ada%40example%2Ecom`); control characters become spaces.
    static func describe(_ url: URL?) -> String {
        guard let url, var c = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "?" }
        let path = c.path
        c.query = nil
        c.user = nil
        c.password = nil
        c.fragment = nil
        c.path = ""
        let decoded = path.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? " " : String($0) }.joined()
        return (c.string ?? "?") + decoded
    }
}
