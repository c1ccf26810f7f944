import Foundation
import PayfleetCore

/// The edits `payfleet dlq edit` applies to a dead letter's JSON body before validating and
/// replaying it: `--set path=value` (dotted path, `[i]` for array items) and `--patch FILE`
/// (an RFC 7396 JSON merge patch).
public enum DLQEdit {
    /// One changed leaf, for the audit log.
    public struct Change: Equatable, Sendable {
        public var path: String
        public var before: String?
        public var after: String?
        public var json: [String: Any] {
            ["path": path, "before": orNull(before), "after": orNull(after)]
        }
    }

    enum Step: Equatable {
        case key(String)
        case index(Int)
    }

    static func parsePath(_ path: String) throws -> [Step] {
        var steps: [Step] = []
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            let before = steps.count
            var s = part
            let name = s.prefix { $0 != "[" }
            if !name.isEmpty { steps.append(.key(String(name))) }
            s = s.dropFirst(name.count)
            while s.first == "[" {
                guard let close = s.firstIndex(of: "]"), let i = Int(s[s.index(after: s.startIndex)..<close]), i >= 0 else {
                    throw CLIFailure("--set: '\(path)' is not a path (like payment.id or items[0].sku)")
                }
                steps.append(.index(i))
                s = s[s.index(after: close)...]
            }
            guard s.isEmpty, steps.count > before else {
                throw CLIFailure("--set: '\(path)' is not a path (like payment.id or items[0].sku)")
            }
        }
        return steps
    }

    /// `path=value` applied to `object`. The value keeps the type of the field it replaces: a
    /// string field takes the text as it is (`"…"` JSON quoting optional), a number field needs
    /// an integer, a boolean `true`/`false`; a new field takes JSON when the text is JSON, else
    /// the text. `null` sets null.
    public static func set(_ assignment: String, in object: inout Any) throws {
        guard let eq = assignment.firstIndex(of: "=") else {
            throw CLIFailure("--set: '\(assignment)' is not path=value")
        }
        let path = String(assignment[..<eq])
        let text = String(assignment[assignment.index(after: eq)...])
        let steps = try parsePath(path)
        let kind = get(steps, in: object).flatMap(jsonText).map(kindOf)
        let value: Any
        if text == "null" {
            value = NSNull()
        } else if kind == "string" || ((kind == nil || kind == "null") && !looksLikeJSON(text)) {
            if text.hasPrefix("\""),
                let s = (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)) as? String
            {
                value = s
            } else {
                value = text
            }
        } else if kind == "number" {
            guard let i = Int(text) else {
                throw CLIFailure("--set: \(path) holds a number; '\(text)' is not an integer (amounts are minor units)")
            }
            value = i
        } else if kind == "bool" {
            guard text == "true" || text == "false" else { throw CLIFailure("--set: \(path) holds true or false, not '\(text)'") }
            value = text == "true"
        } else {
            guard let v = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed) else {
                throw CLIFailure("--set: \(path): '\(text)' is not valid JSON")
            }
            value = v
        }
        object = try put(value, at: steps[...], in: object, path: path)
    }

    static func looksLikeJSON(_ text: String) -> Bool {
        guard let first = text.first else { return false }
        if "{[\"".contains(first) || text == "true" || text == "false" { return true }
        return Int64(text) != nil
    }

    /// A JSON value's text: its kind is read from that, the same on every platform (booleans
    /// and numbers are both NSNumber after JSONSerialization).
    static func jsonText(_ v: Any) -> String? {
        (try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed, .sortedKeys]))
            .map { String(decoding: $0, as: UTF8.self) }
    }

    static func kindOf(_ text: String) -> String {
        if text.hasPrefix("\"") { return "string" }
        if text == "true" || text == "false" { return "bool" }
        if text == "null" { return "null" }
        if text.hasPrefix("{") || text.hasPrefix("[") { return "container" }
        return "number"
    }

    static func get(_ steps: [Step], in object: Any) -> Any? {
        var cur: Any? = object
        for s in steps {
            switch s {
            case .key(let k): cur = (cur as? [String: Any])?[k]
            case .index(let i):
                guard let a = cur as? [Any], i < a.count else { return nil }
                cur = a[i]
            }
        }
        return cur
    }

    static func put(_ value: Any, at steps: ArraySlice<Step>, in object: Any?, path: String) throws -> Any {
        guard let step = steps.first else { return value }
        switch step {
        case .key(let k):
            guard object == nil || object is NSNull || object is [String: Any] else {
                throw CLIFailure("--set: \(path): '\(k)' is inside a value that is not an object")
            }
            var d = object as? [String: Any] ?? [:]
            d[k] = try put(value, at: steps.dropFirst(), in: d[k], path: path)
            return d
        case .index(let i):
            guard var a = object as? [Any], i <= a.count else {
                throw CLIFailure("--set: \(path): index \(i) is outside the array")
            }
            if i == a.count { a.append(NSNull()) }
            a[i] = try put(value, at: steps.dropFirst(), in: a[i], path: path)
            return a
        }
    }

    /// RFC 7396: objects merge recursively, `null` removes a member, anything else replaces.
    public static func mergePatch(_ target: Any?, _ patch: Any) -> Any {
        guard let p = patch as? [String: Any] else { return patch }
        var t = target as? [String: Any] ?? [:]
        for (k, v) in p {
            if v is NSNull { t.removeValue(forKey: k) } else { t[k] = mergePatch(t[k], v) }
        }
        return t
    }

    /// Every leaf that differs, by path, with JSON texts of the old and new values.
    public static func diff(_ a: Any, _ b: Any) -> [Change] {
        var fa: [String: String] = [:]
        var fb: [String: String] = [:]
        flatten(a, "", &fa)
        flatten(b, "", &fb)
        return Set(fa.keys).union(fb.keys).sorted().compactMap { k in
            fa[k] == fb[k] ? nil : Change(path: k, before: fa[k], after: fb[k])
        }
    }

    static func flatten(_ v: Any, _ path: String, _ out: inout [String: String]) {
        if let d = v as? [String: Any], !d.isEmpty {
            for (k, x) in d { flatten(x, path.isEmpty ? k : "\(path).\(k)", &out) }
        } else if let a = v as? [Any], !a.isEmpty {
            for (i, x) in a.enumerated() { flatten(x, "\(path)[\(i)]", &out) }
        } else {
            let data = try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
            out[path] = data.map { String(decoding: $0, as: UTF8.self) } ?? "\(v)"
        }
    }

    /// Applies the edits to a body; returns the new body (sorted keys) and the changes.
    /// Fails, naming the problem, when the body is not a JSON object, the result is not a valid
    /// event, the id would change, or nothing changes.
    public static func apply(sets: [String], patch: Any?, to body: [UInt8]) throws -> (body: [UInt8], changes: [Change]) {
        guard let original = try? JSONSerialization.jsonObject(with: Data(body)), original is [String: Any] else {
            throw CLIFailure("the dead letter's body is not a JSON object; it cannot be edited field by field")
        }
        var edited: Any = original
        if let patch { edited = mergePatch(edited, patch) }
        for s in sets { try set(s, in: &edited) }
        let changes = diff(original, edited)
        guard !changes.isEmpty else { throw CLIFailure("the edit changes nothing") }
        if changes.contains(where: { $0.path == "id" }) {
            throw CLIFailure("id cannot be edited: workers deduplicate on it (publish a new event instead)")
        }
        let data = try JSONSerialization.data(withJSONObject: edited, options: [.sortedKeys, .withoutEscapingSlashes])
        do { _ = try EventCodec.decode(data) } catch {
            throw CLIFailure("the edited event is still invalid: \(error)")
        }
        return (Array(data), changes)
    }
}
