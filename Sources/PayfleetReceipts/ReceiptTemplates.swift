import Foundation
import Mustache
import PayfleetCore

/// The four parts of a receipt for one event type: email subject, plain text, HTML, SMS text.
public enum TemplatePart: String, CaseIterable, Sendable {
    case subject, text, html, sms
    var fileExtension: String {
        switch self {
        case .subject: return "subject"
        case .text: return "txt"
        case .html: return "html"
        case .sms: return "sms"
        }
    }
}

/// A template that failed to load or names a variable receipts do not have: a start-up error.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    public let template: String
    public let message: String
    public var description: String { "template \(template): \(message)" }
}

/// Mustache templates per merchant, locale, event type and part, checked when loaded.
///
/// Look-up order for `(merchant, locale, type, part)`: `<merchant>/<locale>`, `<merchant>`,
/// `default/<locale>`, `default`, then the built-in English templates. Files live in
/// `templates_dir` as `<merchant|default>[/<locale>]/<type>.<subject|txt|html|sms>.mustache`
/// (e.g. `m_acme/fr/payment.succeeded.subject.mustache`). Only subject/txt/sms are rendered
/// without HTML escaping.
public struct ReceiptTemplates: Sendable {
    /// Variables a template may use (any other name is a start-up error: it would render empty).
    public static let variables: Set<String> = [
        "customer_name", "merchant_name", "merchant_id", "amount", "amount_major", "currency", "currency_symbol",
        "card", "card_brand", "card_last4", "payment_id", "reference", "invoice_id", "event_id", "date", "type",
        "is_refund", "channel",
    ]

    private var templates: [String: MustacheTemplate] = [:]
    /// The same templates compiled (`CompiledTemplate`), for those within its subset.
    private var compiled: [String: CompiledTemplate] = [:]
    public private(set) var loadedFiles: [String] = []

    /// Key: `scope/locale/type.part` with `scope` a merchant id or `default`, `locale` possibly empty.
    static func key(_ scope: String, _ locale: String, _ type: String, _ part: TemplatePart) -> String {
        "\(scope)/\(locale)/\(type).\(part.rawValue)"
    }

    public init(directory: String?) throws(TemplateError) {
        for type in ["payment.succeeded", "payment.refunded"] {
            for part in TemplatePart.allCases {
                let source = BuiltInTemplates.source(type: type, part: part)
                try add(
                    key: Self.key("builtin", "", type, part), name: "built-in \(type).\(part.fileExtension)",
                    source: source, part: part)
            }
        }
        guard let directory else { return }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw TemplateError(template: directory, message: "templates_dir is not a directory")
        }
        guard let e = FileManager.default.enumerator(atPath: directory) else { return }
        var files: [String] = []
        while let rel = e.nextObject() as? String {
            var d: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: directory + "/" + rel, isDirectory: &d)
            if !d.boolValue { files.append(rel) }
        }
        for rel in files.sorted() {
            let comps = rel.split(separator: "/").map(String.init)
            guard comps.count == 2 || comps.count == 3, comps.last!.hasSuffix(".mustache") else {
                throw TemplateError(
                    template: rel, message: "expected <merchant|default>[/<locale>]/<type>.<part>.mustache")
            }
            let fileName = String(comps.last!.dropLast(".mustache".count))
            guard let dot = fileName.lastIndex(of: ".") else {
                throw TemplateError(template: rel, message: "file name needs <type>.<part>")
            }
            let type = String(fileName[..<dot])
            let ext = String(fileName[fileName.index(after: dot)...])
            guard let part = TemplatePart.allCases.first(where: { $0.fileExtension == ext }) else {
                throw TemplateError(template: rel, message: "unknown part '\(ext)' (subject, txt, html, sms)")
            }
            guard ["payment.succeeded", "payment.refunded"].contains(type) else {
                throw TemplateError(template: rel, message: "unknown event type '\(type)'")
            }
            let source: String
            do { source = try String(contentsOfFile: directory + "/" + rel, encoding: .utf8) } catch {
                throw TemplateError(template: rel, message: "unreadable: \(error.localizedDescription)")
            }
            try add(
                key: Self.key(comps[0], comps.count == 3 ? comps[1] : "", type, part), name: rel, source: source,
                part: part)
            loadedFiles.append(rel)
        }
    }

    private mutating func add(key: String, name: String, source: String, part: TemplatePart) throws(TemplateError) {
        for v in Self.tagNames(in: source) where !Self.variables.contains(v) {
            throw TemplateError(
                template: name,
                message: "unknown variable '\(v)' (known: \(Self.variables.sorted().joined(separator: ", ")))")
        }
        let text = part == .html ? source : "{{% CONTENT_TYPE: TEXT}}" + source
        do { templates[key] = try MustacheTemplate(string: text) } catch {
            throw TemplateError(template: name, message: "does not parse: \(error)")
        }
        compiled[key] = CompiledTemplate(source: source, html: part == .html)
    }

    /// Names used in `{{x}}`, `{{{x}}}`, `{{&x}}`, `{{#x}}`, `{{^x}}` tags (first path component).
    static func tagNames(in source: String) -> [String] {
        var names: [String] = []
        var rest = Substring(source)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            guard let close = rest.range(of: "}}") else { break }
            var tag = rest[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            rest = rest[close.upperBound...]
            if tag.hasPrefix("{") { tag.removeFirst() }
            guard let first = tag.first else { continue }
            if "!%>=/<$".contains(first) { continue }
            if "#^&".contains(first) { tag.removeFirst() }
            let name = tag.trimmingCharacters(in: .whitespaces).split(separator: ".").first.map(String.init) ?? ""
            if !name.isEmpty { names.append(name) }
        }
        return names
    }

    /// Renders one part, looking the template up from the most to the least specific scope.
    public func render(_ part: TemplatePart, type: String, merchant: String, locale: String, context: [String: Any])
        -> String
    {
        for k in Self.candidates(part, type: type, merchant: merchant, locale: locale) {
            guard let t = templates[k] else { continue }
            if let c = compiled[k], let text = c.render(context) { return text }
            return t.render(context)
        }
        return ""
    }

    /// `render` by swift-mustache alone (the reference `CompiledTemplate` is tested against).
    func renderWithMustache(_ part: TemplatePart, type: String, merchant: String, locale: String, context: [String: Any])
        -> String
    {
        return Self.candidates(part, type: type, merchant: merchant, locale: locale).lazy.compactMap { templates[$0] }.first?.render(context) ?? ""
    }

    /// The keys a part is looked up by, from the most to the least specific scope.
    static func candidates(_ part: TemplatePart, type: String, merchant: String, locale: String) -> [String] {
        [
            key(merchant, locale, type, part), key(merchant, "", type, part),
            key("default", locale, type, part), key("default", "", type, part),
            key("builtin", "", type, part),
        ]
    }

    /// Whether the template `key` renders through `CompiledTemplate`.
    func isCompiled(_ key: String) -> Bool { compiled[key] != nil }

    /// Which templates a merchant/locale resolves to for each part (for `--check-config` and tests).
    public func has(_ key: String) -> Bool { templates[key] != nil }
}

/// The English templates used when `templates_dir` has none for a merchant.
enum BuiltInTemplates {
    static func source(type: String, part: TemplatePart) -> String {
        let refund = type == "payment.refunded"
        switch part {
        case .subject:
            return refund
                ? "Refund of {{amount}} from {{merchant_name}}" : "Your receipt from {{merchant_name}}: {{amount}}"
        case .text:
            return refund
                ? """
                Hello {{customer_name}},

                {{merchant_name}} has refunded {{amount}}{{#card}} to your {{card}}{{/card}}.
                {{#reference}}Reference: {{reference}}
                {{/reference}}Payment: {{payment_id}}
                Date: {{date}}

                It may take a few days to appear on your statement.
                """
                : """
                Hello {{customer_name}},

                Thank you for your payment of {{amount}} to {{merchant_name}}.
                {{#card}}Paid with: {{card}}
                {{/card}}{{#reference}}Reference: {{reference}}
                {{/reference}}{{#invoice_id}}Invoice: {{invoice_id}}
                {{/invoice_id}}Payment: {{payment_id}}
                Date: {{date}}
                """
        case .html:
            return refund
                ? """
                <!DOCTYPE html>
                <html><body>
                <p>Hello {{customer_name}},</p>
                <p>{{merchant_name}} has refunded <strong>{{amount}}</strong>{{#card}} to your {{card}}{{/card}}.</p>
                <table>{{#reference}}<tr><td>Reference</td><td>{{reference}}</td></tr>{{/reference}}<tr><td>Payment</td><td>{{payment_id}}</td></tr><tr><td>Date</td><td>{{date}}</td></tr></table>
                </body></html>
                """
                : """
                <!DOCTYPE html>
                <html><body>
                <p>Hello {{customer_name}},</p>
                <p>Thank you for your payment of <strong>{{amount}}</strong> to {{merchant_name}}.</p>
                <table>{{#card}}<tr><td>Paid with</td><td>{{card}}</td></tr>{{/card}}{{#reference}}<tr><td>Reference</td><td>{{reference}}</td></tr>{{/reference}}{{#invoice_id}}<tr><td>Invoice</td><td>{{invoice_id}}</td></tr>{{/invoice_id}}<tr><td>Payment</td><td>{{payment_id}}</td></tr><tr><td>Date</td><td>{{date}}</td></tr></table>
                </body></html>
                """
        case .sms:
            return refund
                ? "{{merchant_name}}: refund of {{amount}} issued{{#card}} to {{card}}{{/card}}. Ref {{payment_id}}"
                : "{{merchant_name}}: payment of {{amount}} received{{#card}} ({{card}}){{/card}}. Thank you! Ref {{payment_id}}"
        }
    }
}

/// The values a template sees for one event. Money is formatted from integer minor units with
/// the currency's exponent and symbol; the card is brand and last four digits only.
public enum ReceiptContext {
    public static func make(event: PaymentEvent, merchant: Merchant?, channel: String) -> [String: Any] {
        var c: [String: Any] = [
            "merchant_name": merchant?.name ?? event.merchantID,
            "merchant_id": event.merchantID,
            "customer_name": event.customer?.name ?? "customer",
            "amount": event.amount.formatted,
            "amount_major": event.amount.majorString,
            "currency": event.amount.currency.code,
            "currency_symbol": Trim.whitespaces(event.amount.currency.symbol),
            "payment_id": event.payment?.id ?? event.id,
            "event_id": event.id,
            "type": event.type.rawValue,
            "channel": channel,
            "is_refund": event.type == .paymentRefunded,
            "date": merchant.map { $0.businessDay(for: event.occurredAt) }
                ?? String(RFC3339.format(event.occurredAt).prefix(10)),
        ]
        if let r = event.reference, !r.isEmpty { c["reference"] = r }
        if let i = event.invoiceID, !i.isEmpty { c["invoice_id"] = i }
        if let card = event.payment?.card {
            let brand = card.brand.map(displayBrand)
            // Never more than four digits, whatever the event carries.
            let last4 = card.last4.map { String($0.filter(\.isNumber).suffix(4)) }.flatMap { $0.isEmpty ? nil : $0 }
            if let brand { c["card_brand"] = brand }
            if let last4 { c["card_last4"] = last4 }
            switch (brand, last4) {
            case (let b?, let l?): c["card"] = "\(b) ending \(l)"
            case (nil, let l?): c["card"] = "card ending \(l)"
            case (let b?, nil): c["card"] = b
            default: break
            }
        }
        return c
    }

    static func displayBrand(_ raw: String) -> String {
        switch raw.lowercased() {
        case "visa": return "Visa"
        case "mastercard", "mc": return "Mastercard"
        case "amex", "american_express": return "American Express"
        case "discover": return "Discover"
        case "jcb": return "JCB"
        case "diners": return "Diners Club"
        case "unionpay": return "UnionPay"
        default:
            // A brand is a word, never digits: anything else is dropped rather than shown.
            let cleaned = raw.filter { $0.isLetter || $0 == " " || $0 == "_" || $0 == "-" }
            return cleaned.isEmpty ? "card" : cleaned.prefix(1).uppercased() + cleaned.dropFirst()
        }
    }
}
