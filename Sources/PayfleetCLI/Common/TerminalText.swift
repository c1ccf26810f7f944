/// Text from messages (ids, errors, headers, bodies) made safe for a terminal: control
/// characters (C0, DEL, C1 — escape sequences among them) are shown as `\u{…}`, never sent raw,
/// so a dead letter cannot rewrite the operator's screen.
enum TerminalText {
    static func safe(_ s: String, keepNewlines: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            let v = u.value
            let control = v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || v == 0x2028 || v == 0x2029
            if control && !(keepNewlines && v == 0x0A) {
                out += "\\u{\(String(v, radix: 16))}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
