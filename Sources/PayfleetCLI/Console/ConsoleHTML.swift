import Foundation

/// Who did an action in `payfleet console`, for its audit lines (`AuditLog.console`).
public struct ConsoleAuditContext: Sendable {
    /// The name the operator gave at login.
    public var operatorName: String
    /// The `payfleet` command line the action is equivalent to.
    public var command: String

    public init(operatorName: String, command: String) {
        self.operatorName = operatorName
        self.command = command
    }
}

/// Server-rendered HTML for the console. Every value from outside (event ids, error texts,
/// notes, names: hostile input) goes through `esc` — in text and in attribute values alike.
public enum ConsoleHTML {
    /// HTML-escapes text for element content and quoted attribute values.
    public static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "`": out += "&#96;"
            default:
                // Control characters other than tab and newline are shown, not passed through.
                if ch.value < 0x20 && ch != "\n" && ch != "\t" || ch.value == 0x7f {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(ch)
                }
            }
        }
        return out
    }

    /// A value for a URL query (`?worker=…&id=…`), then HTML-escaped by the caller's `esc`.
    public static func query(_ pairs: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return pairs.map { k, v in
            "\(k)=\(v.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
        }.joined(separator: "&")
    }

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
        header{background:#1d2f4a;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
        header a{color:#cfe0ff;text-decoration:none}header b{margin-right:12px}
        header form{margin-left:auto}main{padding:12px 20px}
        table{border-collapse:collapse;background:#fff;margin:8px 0}
        th,td{border:1px solid #d6dbe1;padding:4px 8px;text-align:left;vertical-align:top}
        th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
        pre{background:#fff;border:1px solid #d6dbe1;padding:8px;overflow:auto;white-space:pre-wrap}
        .bad{color:#a40000}.ok{color:#106010}.warn{color:#8a5a00}
        .box{background:#fff;border:1px solid #d6dbe1;padding:10px 14px;margin:10px 0;max-width:900px}
        button{padding:4px 10px}input,select,textarea{padding:3px;font:inherit}
        .err{max-width:520px;word-break:break-word}
        """

    /// A whole page: header with the navigation (when logged in), then `body`.
    static func page(title: String, session: ConsoleAuth.Session?, nonce: String, body: String) -> String {
        var nav = ""
        if let s = session {
            nav = """
                <a href="/">Status</a><a href="/dlq">Dead letters</a><a href="/trace">Trace</a><a href="/settlement">Settlement</a>
                <form method="post" action="/logout"><span>\(esc(s.operatorName))</span> \(csrfField(s))<button>Log out</button></form>
                """
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(esc(title)) — payfleet console</title>
            <meta name="viewport" content="width=device-width">
            <style>\(style)</style></head>
            <body><header><b>payfleet console</b>\(nav)</header>
            <main><h1>\(esc(title))</h1>
            \(body)
            </main>
            <script nonce="\(nonce)">
            // Filter boxes: show only table rows containing the typed text.
            for (const f of document.querySelectorAll('input[data-filter]')) {
              f.addEventListener('input', () => {
                const t = f.value.toLowerCase();
                for (const r of document.querySelectorAll(f.dataset.filter + ' tbody tr'))
                  r.style.display = r.textContent.toLowerCase().includes(t) ? '' : 'none';
              });
            }
            // A confirm page's button is focused, so Enter confirms and nothing else does.
            const c = document.querySelector('button[data-confirm]'); if (c) c.focus();
            </script>
            </body></html>
            """
    }

    static func csrfField(_ s: ConsoleAuth.Session) -> String {
        "<input type=\"hidden\" name=\"csrf\" value=\"\(esc(s.csrf))\">"
    }

    static func hidden(_ name: String, _ value: String) -> String {
        "<input type=\"hidden\" name=\"\(esc(name))\" value=\"\(esc(value))\">"
    }

    /// A table; `cells` are already HTML (escape them when building).
    static func table(id: String? = nil, header: [String], rows: [[String]], numeric: Set<Int> = []) -> String {
        var h = "<table\(id.map { " id=\"\(esc($0))\"" } ?? "")><thead><tr>"
        h += header.map { "<th>\(esc($0))</th>" }.joined()
        h += "</tr></thead><tbody>"
        for r in rows {
            h += "<tr>" + r.enumerated().map { i, c in numeric.contains(i) ? "<td class=\"n\">\(c)</td>" : "<td>\(c)</td>" }.joined() + "</tr>"
        }
        return h + "</tbody></table>"
    }
}
