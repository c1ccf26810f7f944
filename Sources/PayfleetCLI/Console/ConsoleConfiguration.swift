import Foundation
import PayfleetCore

/// The `console:` section of `config/payfleet.yaml` (`payfleet console`).
///
/// Keys:
/// - `host` (string, default `127.0.0.1`): the address the console listens on. Anything but a
///   loopback address needs `allow_remote: true` (put a TLS proxy in front: the console speaks
///   plain HTTP).
/// - `port` (int, default `9180`; 0 picks a free port, which the console prints).
/// - `allow_remote` (bool, default false).
/// - `password_file` (path): a file holding one line `pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and
///   hash base64), as `payfleet console hash-password` prints it. Or
/// - `token_file` (path): a file holding a token of at least 32 printable characters, typed
///   into the login form instead of a password.
///   Exactly one of the two. `${CREDENTIALS_DIRECTORY}` is expanded (systemd `LoadCredential=`).
///   Inline `password` / `token` keys are refused: secrets are never inline.
/// - `session_ttl` (duration, default `8h`): how long a login lasts.
public struct ConsoleConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 9180
    public var allowRemote = false
    public var credential: ConsoleCredential
    public var sessionTTLMS = 8 * 3_600_000

    public static let section = "console"

    public init(credential: ConsoleCredential) { self.credential = credential }

    /// Reads and validates the section; unknown keys are errors.
    public static func read(_ root: ConfigSection) throws -> ConsoleConfiguration {
        let s = try root.section(section)
        for inline in ["password", "token", "password_hash"] where s.has(inline) {
            throw ConfigError(key: s.dotted(inline), message: "secrets are not inline: use password_file or token_file")
        }
        let hasPassword = s.has("password_file")
        let hasToken = s.has("token_file")
        guard hasPassword != hasToken else {
            throw ConfigError(
                key: s.dotted(hasPassword ? "token_file" : "password_file"),
                message: hasPassword
                    ? "give password_file or token_file, not both"
                    : "the console needs a login: set password_file (payfleet console hash-password) or token_file")
        }
        let credential: ConsoleCredential
        if hasPassword {
            let line = (try s.secret("password") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            do { credential = .password(try PasswordHash(parsing: line)) } catch let e as PasswordHash.FormatError {
                throw ConfigError(key: s.dotted("password_file"), message: e.message)
            }
        } else {
            let t = (try s.secret("token") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard t.count >= 32 else {
                throw ConfigError(key: s.dotted("token_file"), message: "the token must be at least 32 characters")
            }
            guard t.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 }) else {
                throw ConfigError(key: s.dotted("token_file"), message: "the token must be printable ASCII without spaces")
            }
            credential = .token(Array(t.utf8))
        }
        var c = ConsoleConfiguration(credential: credential)
        c.host = try s.string("host", default: c.host)
        c.port = try s.int("port", default: c.port, range: 0...65535)
        c.allowRemote = try s.bool("allow_remote", default: false)
        c.sessionTTLMS = try s.durationMS("session_ttl", default: c.sessionTTLMS)
        guard c.sessionTTLMS >= 60_000 else {
            throw ConfigError(key: s.dotted("session_ttl"), message: "at least 1m")
        }
        if !c.allowRemote && !isLoopback(c.host) {
            throw ConfigError(
                key: s.dotted("host"),
                message: "'\(c.host)' is not a loopback address: the console serves plain HTTP; set allow_remote: true behind a TLS proxy")
        }
        try s.finish()
        return c
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

/// What the login form's secret is checked against.
public enum ConsoleCredential: Sendable {
    case password(PasswordHash)
    case token([UInt8])
}
