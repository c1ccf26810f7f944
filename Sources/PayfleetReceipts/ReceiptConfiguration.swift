import Foundation
import PayfleetCore

/// The `receipt-sender:` section of `config/payfleet.yaml` (beside the runtime's keys).
///
/// Keys (all optional):
/// - `email_transport` (`sandbox` | `smtp` | `none`, `sandbox`)
/// - `sms_transport` (`sandbox` | `twilio` | `none`, `sandbox`)
/// - `mail_dir` (string, `<state_dir>/mail`): where the sandbox writes `*.eml` and `*.sms.json`
/// - `from` (string, `Payfleet Receipts <receipts@payfleet.localhost>`): the sender mailbox
/// - `message_id_domain` (string, the domain of `from`): right-hand side of every Message-ID
/// - `types` (list, `[payment.succeeded, payment.refunded]`): event types that get a receipt
/// - `channels` (list, `[email, sms]`): `email` and/or `sms`
/// - `locale` (string, `en`): template locale when the event's `metadata.locale` has none
/// - `templates_dir` (string): Mustache templates, see `ReceiptTemplates`; built-in English ones otherwise
/// - `outcome_unknown` (`review` | `resend`, `review`): what a redelivery does with a receipt
///   whose send started but whose outcome was never recorded (a crash mid-send): `review`
///   dead-letters it as `OutcomeUnknown` for an operator (`payfleet dlq replay` then sends it
///   with the same Message-ID); `resend` sends it again at once with the same Message-ID.
/// - `per_merchant` (list of `{id, types, channels, locale, from, enabled}`): overrides per merchant
/// - `smtp` (mapping): `host` (required with smtp), `port` (587; 465 with `tls: implicit`),
///   `tls` (`starttls` | `opportunistic` | `implicit` | `none`, `starttls`), `username`,
///   `password` / `password_file`, `connect_timeout` (10s), `timeout` (60s), `ca_file`,
///   `verify_peer` (true), `helo_name`, `connections` (SMTP sessions at once, 2),
///   `rate_limit` (messages/s, 10; 0 = no limit)
/// - `sms` (mapping): `base_url` (`https://api.twilio.com`), `account_sid` (required with twilio),
///   `auth_token` / `auth_token_file` (required with twilio), `from` (E.164 or `MG…` service SID,
///   required with twilio), `connect_timeout` (10s), `timeout` (30s), `ca_file`, `verify_peer`
///   (true), `rate_limit` (messages/s, 1; 0 = no limit)
public struct ReceiptConfiguration: Sendable {
    public enum EmailTransportKind: String, Sendable { case sandbox, smtp, none }
    public enum SMSTransportKind: String, Sendable { case sandbox, twilio, none }
    public enum OutcomeUnknownPolicy: String, Sendable { case review, resend }
    public enum Channel: String, Sendable, CaseIterable { case email, sms }

    public struct Rule: Sendable {
        public var enabled = true
        public var types: Set<String>
        public var channels: Set<Channel>
        public var locale: String
        public var from: MailAddress
    }

    public var emailTransport: EmailTransportKind = .sandbox
    public var smsTransport: SMSTransportKind = .sandbox
    public var mailDir: String
    public var messageIDDomain: String
    public var defaultRule: Rule
    public var perMerchant: [String: Rule] = [:]
    public var templatesDir: String?
    public var outcomeUnknown: OutcomeUnknownPolicy = .review
    public var smtp: SMTPSettings?
    public var smtpRateLimit: Double = 10
    public var sms: SMSSettings?
    public var smsRateLimit: Double = 1

    public func rule(for merchant: String) -> Rule { perMerchant[merchant] ?? defaultRule }

    static let receiptTypes: Set<String> = ["payment.succeeded", "payment.refunded"]

    static func readTypes(_ s: ConfigSection, default def: Set<String>) throws(ConfigError) -> Set<String> {
        guard let list = try s.stringList("types") else { return def }
        for t in list where !receiptTypes.contains(t) {
            throw ConfigError(
                key: s.dotted("types"), message: "'\(t)' gets no receipt (payment.succeeded, payment.refunded)")
        }
        return Set(list)
    }

    static func readChannels(_ s: ConfigSection, default def: Set<Channel>) throws(ConfigError) -> Set<Channel> {
        guard let list = try s.stringList("channels") else { return def }
        var out = Set<Channel>()
        for c in list {
            guard let ch = Channel(rawValue: c) else {
                throw ConfigError(key: s.dotted("channels"), message: "'\(c)' is not a channel (email, sms)")
            }
            out.insert(ch)
        }
        return out
    }

    static func readFrom(_ s: ConfigSection, default def: MailAddress) throws(ConfigError) -> MailAddress {
        guard let text = try s.string("from") else { return def }
        guard let a = MailAddress(parsing: text) else {
            throw ConfigError(key: s.dotted("from"), message: "'\(text)' is not a mailbox (Name <addr@domain>)")
        }
        return a
    }

    static func rate(_ s: ConfigSection, default def: Double) throws(ConfigError) -> Double {
        guard let text = try s.string("rate_limit") else { return def }
        guard let v = Double(text), v >= 0, v.isFinite else {
            throw ConfigError(key: s.dotted("rate_limit"), message: "'\(text)' is not a rate in messages per second")
        }
        return v
    }

    public static func read(section s: ConfigSection, root: ConfigSection) throws(ConfigError) -> ReceiptConfiguration {
        // The worker's own directory (`<section>.state_dir`) where production gives each process one.
        let stateDir = try s.string("state_dir", default: try root.stateDir())
        let emailText = try s.string("email_transport", default: "sandbox")
        guard let email = EmailTransportKind(rawValue: emailText) else {
            throw ConfigError(key: s.dotted("email_transport"), message: "'\(emailText)' is not sandbox, smtp or none")
        }
        let smsText = try s.string("sms_transport", default: "sandbox")
        guard let smsKind = SMSTransportKind(rawValue: smsText) else {
            throw ConfigError(key: s.dotted("sms_transport"), message: "'\(smsText)' is not sandbox, twilio or none")
        }
        let policyText = try s.string("outcome_unknown", default: "review")
        guard let policy = OutcomeUnknownPolicy(rawValue: policyText) else {
            throw ConfigError(key: s.dotted("outcome_unknown"), message: "'\(policyText)' is not review or resend")
        }
        let from = try readFrom(
            s, default: MailAddress(name: "Payfleet Receipts", address: "receipts@payfleet.localhost"))
        let defaultRule = Rule(
            types: try readTypes(s, default: receiptTypes),
            channels: try readChannels(s, default: Set(Channel.allCases)),
            locale: try s.string("locale", default: "en"), from: from)
        var c = ReceiptConfiguration(
            emailTransport: email, smsTransport: smsKind,
            mailDir: try s.string("mail_dir", default: (stateDir as NSString).appendingPathComponent("mail")),
            messageIDDomain: try s.string("message_id_domain", default: from.domain), defaultRule: defaultRule)
        c.outcomeUnknown = policy
        c.templatesDir = try s.string("templates_dir")
        for m in try s.sectionList("per_merchant") {
            let id = try m.requiredString("id")
            var r = defaultRule
            r.enabled = try m.bool("enabled", default: true)
            r.types = try readTypes(m, default: defaultRule.types)
            r.channels = try readChannels(m, default: defaultRule.channels)
            r.locale = try m.string("locale", default: defaultRule.locale)
            r.from = try readFrom(m, default: defaultRule.from)
            guard c.perMerchant.updateValue(r, forKey: id) == nil else {
                throw ConfigError(key: m.dotted("id"), message: "duplicate merchant '\(id)'")
            }
        }

        let smtpSection = try s.section("smtp")
        if email == .smtp || s.has("smtp") {
            let tlsText = try smtpSection.string("tls", default: "starttls")
            guard let tls = SMTPSettings.TLS(rawValue: tlsText) else {
                throw ConfigError(
                    key: smtpSection.dotted("tls"),
                    message: "'\(tlsText)' is not starttls, opportunistic, implicit or none")
            }
            let host: String
            if email == .smtp {
                host = try smtpSection.requiredString("host")
            } else {
                host = try smtpSection.string("host", default: "")
            }
            let username = try smtpSection.string("username")
            let password = try smtpSection.secret("password")
            if username != nil && password == nil {
                throw ConfigError(
                    key: smtpSection.dotted("password"), message: "required with username (or password_file)")
            }
            c.smtp = SMTPSettings(
                host: host, port: try smtpSection.int("port", default: tls == .implicit ? 465 : 587, range: 1...65535),
                tls: tls, username: username, password: password,
                connectTimeoutMS: try smtpSection.durationMS("connect_timeout", default: 10_000),
                timeoutMS: try smtpSection.durationMS("timeout", default: 60_000),
                caFile: try smtpSection.string("ca_file"),
                verifyPeer: try smtpSection.bool("verify_peer", default: true),
                heloName: try smtpSection.string("helo_name"),
                connections: try smtpSection.int("connections", default: 2, range: 1...32))
            c.smtpRateLimit = try rate(smtpSection, default: 10)
        }
        let smsSection = try s.section("sms")
        if smsKind == .twilio || s.has("sms") {
            let required = smsKind == .twilio
            func value(_ k: String) throws(ConfigError) -> String {
                if required { return try smsSection.requiredString(k) }
                return try smsSection.string(k, default: "")
            }
            let sid = try value("account_sid")
            let token = try smsSection.secret("auth_token")
            if required && (token ?? "").isEmpty {
                throw ConfigError(
                    key: smsSection.dotted("auth_token"),
                    message: "required with sms_transport: twilio (or auth_token_file)")
            }
            let sender = try value("from")
            if required && !(E164.isValid(sender) || sender.hasPrefix("MG")) {
                throw ConfigError(
                    key: smsSection.dotted("from"),
                    message: "'\(sender)' is not an E.164 number or a messaging service SID")
            }
            let base = try smsSection.string("base_url", default: "https://api.twilio.com")
            guard base.hasPrefix("https://") || base.hasPrefix("http://") else {
                throw ConfigError(key: smsSection.dotted("base_url"), message: "'\(base)' is not an http(s) URL")
            }
            c.sms = SMSSettings(
                baseURL: base, accountSID: sid, authToken: token ?? "", from: sender,
                connectTimeoutMS: try smsSection.durationMS("connect_timeout", default: 10_000),
                timeoutMS: try smsSection.durationMS("timeout", default: 30_000),
                caFile: try smsSection.string("ca_file"), verifyPeer: try smsSection.bool("verify_peer", default: true))
            c.smsRateLimit = try rate(smsSection, default: 1)
        }
        return c
    }
}
