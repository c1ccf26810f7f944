/// A receipt template compiled once into text and value slots, rendered by appending strings:
/// what `MustacheTemplate` does for the tags receipts use, without its per-render dynamic
/// look-ups and casts (issue 17: template rendering was the largest share of receipt-sender's
/// CPU). It covers exactly the subset the built-in templates use and most merchants' will:
/// `{{name}}`, `{{{name}}}`, `{{&name}}`, `{{#name}}…{{/name}}`, `{{^name}}…{{/name}}`,
/// `{{! comment}}`, names without dots, no tag alone on its line (Mustache's standalone-line
/// rule). A template with anything else (partials, set delimiters, dotted names, `{{.}}`,
/// standalone tags) does not compile, and `ReceiptTemplates` renders it with swift-mustache.
///
/// The values receipts give a template are strings and one Bool (`ReceiptContext`); rendered as
/// swift-mustache renders them: a String (even empty) is truthy, a Bool is itself, a missing
/// name is falsy and renders empty; `&<>"'` are escaped in HTML parts as swift-mustache escapes
/// them. `RenderingTests` compares both renderers byte for byte.
struct CompiledTemplate: Sendable {
    indirect enum Node: Sendable {
        case text(String)
        case value(String, escaped: Bool)
        case section(String, inverted: Bool, [Node])
    }

    let nodes: [Node]

    /// nil when `source` uses anything beyond the subset above.
    init?(source: String, html: Bool) {
        var stack: [(name: String, inverted: Bool, nodes: [Node])] = [("", false, [])]
        var rest = Substring(source)
        func append(_ n: Node) { stack[stack.count - 1].nodes.append(n) }
        while let open = rest.range(of: "{{") {
            let before = rest[..<open.lowerBound]
            if !before.isEmpty { append(.text(String(before))) }
            var after = rest[open.upperBound...]
            let triple = after.hasPrefix("{")
            if triple { after = after.dropFirst() }
            guard let close = after.range(of: triple ? "}}}" : "}}") else { return nil }
            let inner = after[..<close.lowerBound]
            let tagEnd = close.upperBound
            var tag = inner.trimmingCharacters(in: .whitespaces)
            let sigil = triple ? nil : tag.first.flatMap { "#^/&!".contains($0) ? $0 : nil }
            if sigil != nil { tag = String(tag.dropFirst()).trimmingCharacters(in: .whitespaces) }
            // A section, closing or comment tag alone on its line would take the line with it.
            if sigil.map({ "#^/!".contains($0) }) == true {
                let lineStart = source[..<open.lowerBound].lastIndex(of: "\n").map { source.index(after: $0) } ?? source.startIndex
                let lineEnd = source[tagEnd...].firstIndex(of: "\n") ?? source.endIndex
                let lead = source[lineStart..<open.lowerBound], trail = source[tagEnd..<lineEnd]
                if lead.allSatisfy({ $0 == " " || $0 == "\t" }) && trail.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) {
                    return nil
                }
            }
            rest = source[tagEnd...]
            if sigil == "!" { continue }
            guard !tag.isEmpty, tag.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
            switch sigil {
            case "#", "^":
                stack.append((tag, sigil == "^", []))
            case "/":
                guard stack.count > 1, stack[stack.count - 1].name == tag else { return nil }
                let done = stack.removeLast()
                append(.section(done.name, inverted: done.inverted, done.nodes))
            case "&":
                append(.value(tag, escaped: false))
            default:
                append(.value(tag, escaped: html && !triple))
            }
        }
        if !rest.isEmpty { append(.text(String(rest))) }
        guard stack.count == 1 else { return nil }
        nodes = stack[0].nodes
    }

    /// The template over `context`, or nil when a value is neither a String nor a Bool (the
    /// caller then renders with swift-mustache).
    func render(_ context: [String: Any]) -> String? {
        var out = ""
        out.reserveCapacity(512)
        return Self.render(nodes, context, into: &out) ? out : nil
    }

    private static func render(_ nodes: [Node], _ context: [String: Any], into out: inout String) -> Bool {
        for node in nodes {
            switch node {
            case .text(let t):
                out += t
            case .value(let name, let escaped):
                switch context[name] {
                case nil: break
                case let s as String: if escaped { escape(s, into: &out) } else { out += s }
                case let b as Bool: out += b ? "true" : "false"
                default: return false
                }
            case .section(let name, let inverted, let body):
                let truthy: Bool
                switch context[name] {
                case nil: truthy = false
                case let b as Bool: truthy = b
                case is String: truthy = true
                default: return false
                }
                if truthy != inverted, !render(body, context, into: &out) { return false }
            }
        }
        return true
    }

    /// swift-mustache's HTML escaping: `<` `>` `&` `"` `'`.
    static func escape(_ s: String, into out: inout String) {
        guard s.utf8.contains(where: { $0 == 0x3C || $0 == 0x3E || $0 == 0x26 || $0 == 0x22 || $0 == 0x27 }) else {
            out += s
            return
        }
        for c in s.unicodeScalars {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
    }
}
