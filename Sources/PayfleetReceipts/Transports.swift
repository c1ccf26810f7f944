import CCurl
import Foundation
import Glibc
import PayfleetCore
import PayfleetWorker

/// How a send ended when it did not succeed. `notSent` failures are certain the message did not
/// leave (connection refused, a 4xx/5xx reply before the body was accepted); `unknown` ones may
/// have delivered it (a timeout or a dropped connection after the body was handed over) — the
/// delivery journal keeps those at `intent` so the next attempt applies the configured policy.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public enum Certainty: Sendable { case notSent, unknown }
    public let kind: HandlerError.Kind
    public let certainty: Certainty
    public let errorClass: String
    public let message: String

    /// `message` is redacted (`Redaction`): servers quote the recipient's address or number in
    /// their replies, and the message travels to the DLQ headers, the journal and `/readyz`.
    public init(_ kind: HandlerError.Kind, _ certainty: Certainty, _ errorClass: String, _ message: String) {
        self.kind = kind
        self.certainty = certainty
        self.errorClass = errorClass
        self.message = Redaction.redact(message)
    }

    /// The permanent error for a message that fails `MIMEMessage.validate()`: never sent.
    static func invalid(_ e: MIMEMessage.Invalid) -> TransportError {
        TransportError(.permanent, .notSent, "InvalidMessage", e.description)
    }

    public var handlerError: HandlerError { HandlerError(kind, errorClass, message) }
    public var description: String { "\(errorClass): \(message)" }
}

/// An SMS as sent: E.164 number, text and the ids that identify it.
public struct SMSMessage: Sendable, Equatable, Codable {
    public var to: String
    public var body: String
    public var eventID: String
    public var messageID: String
    enum CodingKeys: String, CodingKey {
        case to, body
        case eventID = "event_id"
        case messageID = "message_id"
    }

    /// The sandbox's `.sms.json`: the message's JSON (keys sorted, as `JSONEncoder` with
    /// `.sortedKeys` writes them) and a newline, written straight into bytes.
    public var sandboxLine: [UInt8] {
        var w = JSONObjectWriter(capacity: 96 + body.utf8.count)
        w.field("body", body)
        w.field("event_id", eventID)
        w.field("message_id", messageID)
        w.field("to", to)
        return w.finished() + [10]
    }
}

public protocol EmailTransport: Sendable {
    var name: String { get }
    func send(_ message: MIMEMessage) async throws(TransportError)
}

public protocol SMSTransport: Sendable {
    var name: String { get }
    func send(_ message: SMSMessage) async throws(TransportError)
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in all.
public enum E164 {
    public static func isValid(_ s: String) -> Bool {
        guard s.hasPrefix("+") else { return false }
        let digits = s.dropFirst()
        return (8...15).contains(digits.count) && digits.allSatisfy { $0.isASCII && $0.isNumber } && digits.first != "0"
    }
}

/// Paces sends to at most `perSecond` messages a second (0 = no limit), so a backlog drains at
/// the provider's pace instead of tripping its limits. Waiters are served in arrival order.
public actor RateLimiter {
    private let interval: Duration?
    private var next = ContinuousClock.now

    public init(perSecond: Double) {
        interval = perSecond > 0 ? .nanoseconds(Int64(1_000_000_000 / perSecond)) : nil
    }

    public func acquire() async {
        guard let interval else { return }
        let now = ContinuousClock.now
        let slot = max(now, next)
        next = slot + interval
        if slot > now { try? await Task.sleep(until: slot, clock: .continuous) }
    }
}

// MARK: - Sandbox

/// Writes each email as `<mail_dir>/receipt.<hash>.eml` (RFC 5322 bytes) and each SMS as
/// `<mail_dir>/receipt.<hash>.sms.json`; names derive from the Message-ID, so a resend replaces
/// the same file. Written to a temporary name and renamed, so readers never see half a file.
///
/// Files are written on the transport's own thread, never on the cooperative pool, as a group:
/// every send waiting while one group is written goes into the next, which is made durable with
/// one `syncfs(2)` (not one fsync per file); each `send` returns once its file is on disk.
public final class SandboxTransport: EmailTransport, SMSTransport, @unchecked Sendable {
    public let name = "sandbox"
    public let directory: String
    private let writer: WriteGroups<File>

    struct File: Sendable {
        let name: String
        let bytes: [UInt8]
    }

    /// The directory is created on the first write (so `--check-config` leaves no trace); a
    /// path that exists and is not a directory is refused at once.
    public init(directory: String) throws(TransportError) {
        self.directory = directory
        writer = WriteGroups(name: "receipt-sandbox") { Self.write($0, directory: directory) }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), !isDir.boolValue {
            throw TransportError(.permanent, .notSent, "SandboxDir", "\(directory) is not a directory")
        }
    }

    /// `receipt.<hex>` from `<receipt.<hex>@domain>`.
    static func stem(_ messageID: String) -> String {
        // The Message-IDs this worker makes are ASCII: take the bytes between `<` and `@` that
        // are letters, digits, `.` or `-` without Character iteration (a twenty-fifth of
        // receipt-sender's time went to Unicode property lookups here).
        let utf8 = messageID.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) {
            var bytes = utf8[...]
            while let f = bytes.first, f == UInt8(ascii: "<") || f == UInt8(ascii: ">") { bytes = bytes.dropFirst() }
            while let l = bytes.last, l == UInt8(ascii: "<") || l == UInt8(ascii: ">") { bytes = bytes.dropLast() }
            while bytes.first == UInt8(ascii: "@") { bytes = bytes.dropFirst() }
            if let at = bytes.firstIndex(of: UInt8(ascii: "@")) { bytes = bytes[..<at] }
            let kept = bytes.filter { b in
                b.isASCIIAlphanumeric || b == 0x2e || b == 0x2d
            }
            return String(decoding: kept, as: UTF8.self)
        }
        return unicodeStem(messageID)
    }

    /// The general rule (any Unicode letter or number is kept).
    static func unicodeStem(_ messageID: String) -> String {
        let inner = messageID.trimmingCharacters(in: CharacterSet(charactersIn: "<>"))
        let local = inner.split(separator: "@").first.map(String.init) ?? inner
        return String(local.filter { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" })
    }

    func write(_ bytes: [UInt8], to file: String) async throws(TransportError) {
        do {
            try await writer.submit(File(name: file, bytes: bytes))
        } catch let e as TransportError {
            throw e
        } catch {
            throw TransportError(.transient, .notSent, "SandboxWrite", "\(directory)/\(file): \(error)")
        }
    }

    /// Writes a group of files (temporary name, then rename), then one syncfs for all of them.
    private static func write(_ group: [File], directory: String) -> [(any Error)?] {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            let e = TransportError(.transient, .notSent, "SandboxWrite", "\(directory): \(error.localizedDescription)")
            return group.map { _ in e }
        }
        var results: [(any Error)?] = group.map { f in
            let path = directory + "/" + f.name
            let tmp = directory + "/.tmp." + f.name
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
            var ok = fd >= 0
            if ok {
                let n = f.bytes.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress, raw.count) }
                ok = n == f.bytes.count
                close(fd)
            }
            if ok { ok = rename(tmp, path) == 0 }
            if ok { return nil }
            let e = TransportError(.transient, .notSent, "SandboxWrite", "\(path): errno \(errno)")
            unlink(tmp)
            return e
        }
        // One syncfs makes the whole group's contents and renames durable.
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let synced = dfd >= 0 && payfleet_syncfs(dfd) == 0
        if dfd >= 0 { close(dfd) }
        if !synced {
            let e = TransportError(.transient, .notSent, "SandboxWrite", "syncfs \(directory): errno \(errno)")
            results = results.map { $0 ?? e }
        }
        return results
    }

    public func send(_ message: MIMEMessage) async throws(TransportError) {
        do { try message.validate() } catch { throw .invalid(error) }
        try await write(message.bytes, to: Self.stem(message.messageID) + ".eml")
    }

    public func send(_ message: SMSMessage) async throws(TransportError) {
        try await write(message.sandboxLine, to: Self.stem(message.messageID) + ".sms.json")
    }
}

// MARK: - SMTP (libcurl)

/// SMTP settings (`receipt-sender.smtp`).
public struct SMTPSettings: Sendable {
    public enum TLS: String, Sendable {
        /// `smtp://` + STARTTLS required (the default: credentials never travel in clear).
        case starttls
        /// STARTTLS when the server offers it.
        case opportunistic
        /// No TLS (loopback relays, tests).
        case none
        /// Implicit TLS (`smtps://`, port 465).
        case implicit
    }
    public var host: String
    public var port: Int
    public var tls: TLS
    public var username: String?
    public var password: String?
    public var connectTimeoutMS: Int
    public var timeoutMS: Int
    public var caFile: String?
    public var verifyPeer: Bool
    /// The name sent in EHLO (libcurl uses the local host name when nil).
    public var heloName: String?
    /// SMTP sessions at once (each on its own thread).
    public var connections: Int

    public init(
        host: String, port: Int, tls: TLS = .starttls, username: String? = nil, password: String? = nil,
        connectTimeoutMS: Int = 10_000, timeoutMS: Int = 60_000, caFile: String? = nil, verifyPeer: Bool = true,
        heloName: String? = nil, connections: Int = 2
    ) {
        self.connections = connections
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.connectTimeoutMS = connectTimeoutMS
        self.timeoutMS = timeoutMS
        self.caFile = caFile
        self.verifyPeer = verifyPeer
        self.heloName = heloName
    }
}

/// A real SMTP client: libcurl's SMTP (STARTTLS or implicit TLS, AUTH, timeouts, dot-stuffing),
/// run on its own thread. Replies classify the failure: 4xx and connection problems are
/// transient, 5xx permanent (the error carries the server's reply text).
public final class SMTPTransport: EmailTransport, @unchecked Sendable {
    public let name = "smtp"
    let settings: SMTPSettings
    /// One thread per concurrent SMTP session (`smtp.connections`); sends take turns.
    let threads: [BlockingThread]
    /// Each thread's connection pool (a libcurl share object, touched only on its thread): the
    /// thread's messages go over one SMTP session, reconnecting only when the server closed it,
    /// an error ended it, or it sat idle past libcurl's maximum connection age.
    let pools: [ConnectionPool]
    private let next = Locked(0)

    final class ConnectionPool: @unchecked Sendable {
        let share: UnsafeMutableRawPointer?
        init() {
            _ = CurlTransfer.globalInit
            share = payfleet_curl_share_connections()
        }
        deinit { if let share { curl_share_cleanup(share) } }
    }

    public init(settings: SMTPSettings) {
        self.settings = settings
        let n = max(1, settings.connections)
        threads = (0..<n).map { BlockingThread(name: "smtp-\($0)") }
        pools = (0..<n).map { _ in ConnectionPool() }
    }

    deinit { for t in threads { t.shutdown() } }

    public func send(_ message: MIMEMessage) async throws(TransportError) {
        // Nothing reaches MAIL FROM, RCPT TO or a header unchecked.
        do { try message.validate() } catch { throw .invalid(error) }
        let s = settings
        let bytes = message.bytes
        let from = message.from.address
        let to = message.to.address
        let slot = next.withLock { n in
            defer { n = (n + 1) % threads.count }
            return n
        }
        let thread = threads[slot]
        let pool = pools[slot]
        let outcome: (CurlTransfer.Result, Bool)
        do {
            outcome = try await thread.run { () -> (CurlTransfer.Result, Bool) in
                let t = CurlTransfer(upload: bytes)
                if let share = pool.share { payfleet_curl_setopt_share(t.handle, share) }
                let scheme = s.tls == .implicit ? "smtps" : "smtp"
                let host = s.host.contains(":") ? "[\(s.host)]" : s.host
                t.set(CURLOPT_URL, "\(scheme)://\(host):\(s.port)/\(s.heloName ?? "")")
                switch s.tls {
                case .starttls, .implicit: t.set(CURLOPT_USE_SSL, Int(CURLUSESSL_ALL.rawValue))
                case .opportunistic: t.set(CURLOPT_USE_SSL, Int(CURLUSESSL_TRY.rawValue))
                case .none: t.set(CURLOPT_USE_SSL, Int(CURLUSESSL_NONE.rawValue))
                }
                if let u = s.username { t.set(CURLOPT_USERNAME, u) }
                if let p = s.password { t.set(CURLOPT_PASSWORD, p) }
                if let ca = s.caFile { t.set(CURLOPT_CAINFO, ca) }
                t.set(CURLOPT_SSL_VERIFYPEER, s.verifyPeer ? 1 : 0)
                t.set(CURLOPT_SSL_VERIFYHOST, s.verifyPeer ? 2 : 0)
                t.set(CURLOPT_CONNECTTIMEOUT_MS, s.connectTimeoutMS)
                t.set(CURLOPT_TIMEOUT_MS, s.timeoutMS)
                t.set(CURLOPT_MAIL_FROM, "<\(from)>")
                t.set(CURLOPT_MAIL_RCPT, list: ["<\(to)>"])
                t.set(CURLOPT_UPLOAD, 1)
                t.set(CURLOPT_INFILESIZE, bytes.count)
                let result = t.perform()
                return (result, t.context.offset > 0)
            }
        } catch {
            throw TransportError(.transient, .notSent, "SMTPClient", "\(error)")
        }
        let (r, uploaded) = outcome
        if r.ok { return }
        let e = Self.classify(r, uploaded: uploaded)
        guard let p = s.password, p.count >= 4, e.message.contains(p) else { throw e }
        throw TransportError(e.kind, e.certainty, e.errorClass, e.message.replacingOccurrences(of: p, with: "[redacted]"))
    }

    static func classify(_ r: CurlTransfer.Result, uploaded: Bool) -> TransportError {
        let reply = r.serverLines.last { $0.first?.isNumber == true && ($0.hasPrefix("4") || $0.hasPrefix("5")) }
        let code = r.responseCode
        if (400..<500).contains(code) {
            return TransportError(.transient, .notSent, "SMTP\(code)", reply ?? r.errorText)
        }
        if code >= 500 {
            return TransportError(.permanent, .notSent, "SMTP\(code)", reply ?? r.errorText)
        }
        switch r.code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return TransportError(.transient, .notSent, "SMTPConnect", r.errorText)
        case CURLE_USE_SSL_FAILED, CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION:
            return TransportError(.transient, .notSent, "SMTPTLS", r.errorText)
        case CURLE_LOGIN_DENIED:
            return TransportError(.permanent, .notSent, "SMTPAuth", r.errorText)
        default:
            // Timeout or a dropped connection: once the body was handed over, the server may
            // have accepted it.
            return TransportError(.transient, uploaded ? .unknown : .notSent, "SMTPTransfer", r.errorText)
        }
    }
}

// MARK: - SMS (Twilio-compatible HTTP API)

/// SMS settings (`receipt-sender.sms`).
public struct SMSSettings: Sendable {
    /// `https://api.twilio.com` or a compatible provider / loopback server.
    public var baseURL: String
    public var accountSID: String
    public var authToken: String
    /// Sender: an E.164 number, or a Messaging Service SID (`MG…`).
    public var from: String
    public var connectTimeoutMS: Int
    public var timeoutMS: Int
    public var caFile: String?
    public var verifyPeer: Bool

    public init(
        baseURL: String, accountSID: String, authToken: String, from: String, connectTimeoutMS: Int = 10_000,
        timeoutMS: Int = 30_000, caFile: String? = nil, verifyPeer: Bool = true
    ) {
        self.baseURL = baseURL
        self.accountSID = accountSID
        self.authToken = authToken
        self.from = from
        self.connectTimeoutMS = connectTimeoutMS
        self.timeoutMS = timeoutMS
        self.caFile = caFile
        self.verifyPeer = verifyPeer
    }
}

/// Twilio's Messages API: form POST to `{base}/2010-04-01/Accounts/{sid}/Messages.json` with
/// basic auth (account SID : auth token). 2xx = sent; 429 and 5xx transient; other 4xx permanent.
public final class TwilioSMSTransport: SMSTransport, @unchecked Sendable {
    public let name = "twilio"
    let settings: SMSSettings
    let thread = BlockingThread(name: "sms")

    public init(settings: SMSSettings) { self.settings = settings }

    deinit { thread.shutdown() }

    static func formEncode(_ fields: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return fields.map { k, v in
            let ek = k.addingPercentEncoding(withAllowedCharacters: allowed) ?? k
            let ev = v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v
            return "\(ek)=\(ev)"
        }.joined(separator: "&")
    }

    public var endpoint: String {
        var base = settings.baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/2010-04-01/Accounts/\(settings.accountSID)/Messages.json"
    }

    public func send(_ message: SMSMessage) async throws(TransportError) {
        let s = settings
        let url = endpoint
        let sender = s.from.hasPrefix("MG") ? ("MessagingServiceSid", s.from) : ("From", s.from)
        let form = Self.formEncode([("To", message.to), sender, ("Body", message.body)])
        let r: CurlTransfer.Result
        do {
            r = try await thread.run { () -> CurlTransfer.Result in
                let t = CurlTransfer()
                t.set(CURLOPT_URL, url)
                t.set(CURLOPT_POST, 1)
                t.set(CURLOPT_COPYPOSTFIELDS, form)
                t.set(CURLOPT_HTTPAUTH, 1)  // CURLAUTH_BASIC
                t.set(CURLOPT_USERNAME, s.accountSID)
                t.set(CURLOPT_PASSWORD, s.authToken)
                t.set(
                    CURLOPT_HTTPHEADER,
                    list: [
                        "Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
                        "Idempotency-Key: \(message.eventID)", "Expect:",
                    ])
                if let ca = s.caFile { t.set(CURLOPT_CAINFO, ca) }
                t.set(CURLOPT_SSL_VERIFYPEER, s.verifyPeer ? 1 : 0)
                t.set(CURLOPT_SSL_VERIFYHOST, s.verifyPeer ? 2 : 0)
                t.set(CURLOPT_CONNECTTIMEOUT_MS, s.connectTimeoutMS)
                t.set(CURLOPT_TIMEOUT_MS, s.timeoutMS)
                return t.perform()
            }
        } catch {
            throw TransportError(.transient, .notSent, "SMSClient", "\(error)")
        }
        let status = r.responseCode
        let body = String(decoding: r.body.prefix(300), as: UTF8.self)
        if r.ok && (200..<300).contains(status) { return }
        if r.ok {
            if status == 429 || status >= 500 {
                return try fail(.transient, "HTTP\(status)", body)
            }
            return try fail(.permanent, "HTTP\(status)", body)
        }
        switch r.code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST:
            throw TransportError(.transient, .notSent, "SMSConnect", r.errorText)
        default:
            throw TransportError(.transient, .unknown, "SMSTransfer", r.errorText)
        }
    }

    private func fail(_ kind: HandlerError.Kind, _ cls: String, _ body: String) throws(TransportError) {
        let text = Redaction.redact(body, secrets: [settings.authToken])
        throw TransportError(kind, .notSent, cls, text.isEmpty ? "no body" : text)
    }
}
