import Foundation

/// RFC 4180 CSV: quoted fields with `""` escapes, CRLF or LF line ends, a UTF-8 BOM ignored.
public enum CSV {
    public static func parse(_ text: String) throws -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field = ""
        var quoted = false
        var afterQuote = false
        var line = 1
        var chars = Array(text.unicodeScalars)
        if chars.first == "\u{FEFF}" { chars.removeFirst() }
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if quoted {
                if c == "\"" {
                    if i + 1 < chars.count, chars[i + 1] == "\"" {
                        field.unicodeScalars.append("\"")
                        i += 1
                    } else {
                        quoted = false
                        afterQuote = true
                    }
                } else {
                    if c == "\n" { line += 1 }
                    field.unicodeScalars.append(c)
                }
            } else {
                switch c {
                case ",":
                    row.append(field)
                    field = ""
                    afterQuote = false
                case "\r":
                    break
                case "\n":
                    row.append(field)
                    rows.append(row)
                    row = []
                    field = ""
                    afterQuote = false
                    line += 1
                case "\"":
                    guard field.isEmpty, !afterQuote else {
                        throw SettlementError("CSV line \(line): a quote inside an unquoted field")
                    }
                    quoted = true
                default:
                    guard !afterQuote else { throw SettlementError("CSV line \(line): text after a closing quote") }
                    field.unicodeScalars.append(c)
                }
            }
            i += 1
        }
        if quoted { throw SettlementError("CSV line \(line): a quoted field is never closed") }
        if !field.isEmpty || !row.isEmpty {
            row.append(field)
            rows.append(row)
        }
        return rows.filter { !($0.count == 1 && $0[0].trimmingCharacters(in: .whitespaces).isEmpty) }
    }
}
