import Foundation
import Yams

/// A configuration error; `key` is the dotted path of the offending key (`broker.url`).
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let key: String
    public let message: String
    public init(key: String, message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { "configuration: \(key): \(message)" }
}

/// One section of `config/payfleet.yaml`, read key by key.
///
/// Every read is checked: values have the right type and range, environment variables
/// (`PAYFLEET_` + the path upper-cased, `.` and `-` as `_`, e.g. `PAYFLEET_BROKER_URL`) override
/// the file, secrets come from `key_file` when `key` is absent, and `finish()` refuses any key
/// that nobody read — a misspelt key is a start-up error naming it, never silently ignored.
public final class ConfigSection: @unchecked Sendable {
    public let path: [String]
    let values: [String: Any]
    let environment: [String: String]
    private var used: Set<String> = []
    private var children: [ConfigSection] = []

    public init(path: [String], values: [String: Any], environment: [String: String]) {
        self.path = path
        self.values = values
        self.environment = environment
    }

    /// Loads a YAML file (an empty or absent root is an empty section).
    public static func load(file: String, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ConfigError) -> ConfigSection
    {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw ConfigError(key: file, message: "cannot read the configuration file")
        }
        return try parse(yaml: text, environment: environment, origin: file)
    }

    public static func parse(yaml: String, environment: [String: String] = [:], origin: String = "config")
        throws(ConfigError) -> ConfigSection
    {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw ConfigError(key: origin, message: "not valid YAML: \(error)")
        }
        if root == nil { return ConfigSection(path: [], values: [:], environment: environment) }
        guard let dict = root as? [String: Any] else {
            throw ConfigError(key: origin, message: "the top level must be a mapping")
        }
        return ConfigSection(path: [], values: dict, environment: environment)
    }

    public func dotted(_ key: String) -> String { (path + [key]).joined(separator: ".") }

    /// `PAYFLEET_BROKER_URL` for `broker.url`.
    public func environmentName(_ key: String) -> String {
        "PAYFLEET_" + (path + [key]).joined(separator: "_").uppercased()
            .map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    /// The keys present in the file for this section (sorted), e.g. to read a free-form mapping.
    public var keys: [String] { values.keys.sorted() }

    public func has(_ key: String) -> Bool {
        values[key] != nil || environment[environmentName(key)] != nil
    }

    private func raw(_ key: String) -> Any? {
        used.insert(key)
        if let e = environment[environmentName(key)] { return e }
        return values[key]
    }

    public func string(_ key: String) throws(ConfigError) -> String? {
        guard let v = raw(key) else { return nil }
        switch v {
        case let s as String: return s
        case let i as Int: return String(i)
        case let b as Bool: return b ? "true" : "false"
        default: throw ConfigError(key: dotted(key), message: "expected a string")
        }
    }

    public func string(_ key: String, default def: String) throws(ConfigError) -> String {
        try string(key) ?? def
    }

    public func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key), !s.isEmpty else {
            throw ConfigError(key: dotted(key), message: "required value missing")
        }
        return s
    }

    public func int(_ key: String, default def: Int, range: ClosedRange<Int> = Int.min...Int.max)
        throws(ConfigError) -> Int
    {
        guard let v = raw(key) else { return def }
        let i: Int?
        switch v {
        case let n as Int: i = n
        case let s as String: i = Int(s)
        default: i = nil
        }
        guard let i else { throw ConfigError(key: dotted(key), message: "expected an integer") }
        guard range.contains(i) else {
            throw ConfigError(key: dotted(key), message: "\(i) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return i
    }

    /// A number such as a ratio (`0.25`, `1`, or its text from the environment) within `range`.
    public func double(_ key: String, default def: Double, range: ClosedRange<Double>) throws(ConfigError) -> Double {
        guard let v = raw(key) else { return def }
        let d: Double?
        switch v {
        case let n as Double: d = n
        case let n as Int: d = Double(n)
        case let s as String: d = Double(s)
        default: d = nil
        }
        guard let d, d.isFinite, range.contains(d) else {
            throw ConfigError(key: dotted(key), message: "expected a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return d
    }

    public func bool(_ key: String, default def: Bool) throws(ConfigError) -> Bool {
        guard let v = raw(key) else { return def }
        switch v {
        case let b as Bool: return b
        case let s as String where ["true", "yes", "1", "on"].contains(s.lowercased()): return true
        case let s as String where ["false", "no", "0", "off"].contains(s.lowercased()): return false
        default: throw ConfigError(key: dotted(key), message: "expected true or false")
        }
    }

    /// A duration: `500ms`, `10s`, `5m`, `2h`, `35d`, or a bare number of seconds; in milliseconds.
    public func durationMS(_ key: String, default def: Int) throws(ConfigError) -> Int {
        guard let s = try string(key) else { return def }
        guard let ms = Self.parseDurationMS(s) else {
            throw ConfigError(key: dotted(key), message: "'\(s)' is not a duration (like 500ms, 10s, 5m, 2h, 35d)")
        }
        return ms
    }

    public static func parseDurationMS(_ s: String) -> Int? {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where s.hasSuffix(suffix) {
            let num = s.dropLast(suffix.count)
            if suffix == "s", num.hasSuffix("m") { continue }
            if let n = Int(num), n >= 0 { return n * factor }
            return nil
        }
        if let n = Int(s), n >= 0 { return n * 1000 }
        return nil
    }

    public func stringList(_ key: String) throws(ConfigError) -> [String]? {
        guard let v = raw(key) else { return nil }
        if let s = v as? String {  // from the environment: comma-separated
            return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        guard let list = v as? [Any] else { throw ConfigError(key: dotted(key), message: "expected a list") }
        var out: [String] = []
        for (i, item) in list.enumerated() {
            switch item {
            case let s as String: out.append(s)
            case let n as Int: out.append(String(n))
            default: throw ConfigError(key: dotted(key) + "[\(i)]", message: "expected a string")
            }
        }
        return out
    }

    /// A secret: `key` inline (allowed for local sandboxes), or `key_file` naming a file whose
    /// contents (trailing newline trimmed) are the secret, as systemd's `LoadCredential=` provides.
    public func secret(_ key: String) throws(ConfigError) -> String? {
        if let inline = try string(key) { return inline }
        guard let file = try string(key + "_file") else { return nil }
        let resolved = file.replacingOccurrences(
            of: "${CREDENTIALS_DIRECTORY}", with: environment["CREDENTIALS_DIRECTORY"] ?? "")
        guard let data = FileManager.default.contents(atPath: resolved), let s = String(data: data, encoding: .utf8)
        else {
            throw ConfigError(key: dotted(key + "_file"), message: "cannot read secret file '\(resolved)'")
        }
        return s.trimmingCharacters(in: .newlines)
    }

    public func section(_ key: String) throws(ConfigError) -> ConfigSection {
        let v = raw(key)
        guard v == nil || v is [String: Any] else {
            throw ConfigError(key: dotted(key), message: "expected a mapping")
        }
        let child = ConfigSection(path: path + [key], values: (v as? [String: Any]) ?? [:], environment: environment)
        children.append(child)
        return child
    }

    public func sectionList(_ key: String) throws(ConfigError) -> [ConfigSection] {
        guard let v = raw(key) else { return [] }
        guard let list = v as? [Any] else { throw ConfigError(key: dotted(key), message: "expected a list") }
        var out: [ConfigSection] = []
        for (i, item) in list.enumerated() {
            guard let d = item as? [String: Any] else {
                throw ConfigError(key: dotted(key) + "[\(i)]", message: "expected a mapping")
            }
            // List entries are not overridable from the environment: their paths carry an index.
            let child = ConfigSection(path: path + ["\(key)[\(i)]"], values: d, environment: [:])
            children.append(child)
            out.append(child)
        }
        return out
    }

    /// Marks keys as known without reading them (sections owned by other processes).
    public func ignore(_ keys: [String]) { used.formUnion(keys) }

    /// Throws for the first key present in the file that was never read, here or in any child.
    public func finish() throws(ConfigError) {
        for key in values.keys.sorted() where !used.contains(key) {
            throw ConfigError(key: dotted(key), message: "unknown key")
        }
        for child in children { try child.finish() }
    }
}
