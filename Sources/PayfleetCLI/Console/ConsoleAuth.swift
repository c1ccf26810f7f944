import Crypto
import Foundation
import PayfleetCore

/// A salted password hash: `pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and hash base64), PBKDF2
/// with HMAC-SHA-256 (RFC 8018 §5.2) over swift-crypto's HMAC. `payfleet console
/// hash-password` writes one; `console.password_file` holds it.
public struct PasswordHash: Sendable, Equatable {
    public let iterations: Int
    public let salt: [UInt8]
    public let hash: [UInt8]

    public static let scheme = "pbkdf2-sha256"
    public static let defaultIterations = 210_000

    public struct FormatError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(iterations: Int, salt: [UInt8], hash: [UInt8]) {
        self.iterations = iterations
        self.salt = salt
        self.hash = hash
    }

    public init(parsing line: String) throws {
        let parts = line.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        let example = "\(Self.scheme)$ITERATIONS$SALT$HASH (payfleet console hash-password prints one)"
        guard parts.count == 4, parts[0] == Self.scheme else {
            throw FormatError(message: "not a password hash: expected \(example)")
        }
        guard let n = Int(parts[1]), (1_000...10_000_000).contains(n) else {
            throw FormatError(message: "the iteration count must be 1000…10000000")
        }
        guard let salt = Data(base64Encoded: parts[2]), salt.count >= 8,
            let hash = Data(base64Encoded: parts[3]), hash.count >= 16
        else {
            throw FormatError(message: "salt (at least 8 bytes) and hash (at least 16) must be base64: expected \(example)")
        }
        self.init(iterations: n, salt: Array(salt), hash: Array(hash))
    }

    /// A new hash of `password` with a random 16-byte salt.
    public static func make(_ password: String, iterations: Int = defaultIterations) -> PasswordHash {
        var rng = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return PasswordHash(
            iterations: iterations, salt: salt, hash: pbkdf2(Array(password.utf8), salt: salt, iterations: iterations, length: 32))
    }

    public var line: String {
        "\(Self.scheme)$\(iterations)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    /// Whether `password` hashes to this; the comparison takes the same time wherever they differ.
    public func matches(_ password: String) -> Bool {
        let candidate = Self.pbkdf2(Array(password.utf8), salt: salt, iterations: iterations, length: hash.count)
        return ConsoleAuth.constantTimeEqual(candidate, hash)
    }

    /// PBKDF2-HMAC-SHA-256 (RFC 8018 §5.2).
    public static func pbkdf2(_ password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var out: [UInt8] = []
        var block: UInt32 = 1
        while out.count < length {
            var first = salt
            withUnsafeBytes(of: block.bigEndian) { first += $0 }
            var u = Array(HMAC<SHA256>.authenticationCode(for: first, using: key))
            var t = u
            if iterations > 1 {
                for _ in 1..<iterations {
                    u = Array(HMAC<SHA256>.authenticationCode(for: u, using: key))
                    for i in 0..<t.count { t[i] ^= u[i] }
                }
            }
            out += t
            block += 1
        }
        return Array(out.prefix(length))
    }
}

/// Logins and sessions of `payfleet console`: an in-memory table of sessions (a restart logs
/// everyone out), each with its operator's name, its expiry and its CSRF token.
public final class ConsoleAuth: @unchecked Sendable {
    public struct Session: Sendable {
        public let id: String
        public let operatorName: String
        public let csrf: String
        public let expires: Date
    }

    let credential: ConsoleCredential
    let ttl: TimeInterval
    private let lock = NSLock()
    private var sessions: [String: Session] = [:]

    public static let cookieName = "payfleet_console"

    public init(credential: ConsoleCredential, ttlMS: Int) {
        self.credential = credential
        ttl = Double(ttlMS) / 1000
    }

    /// Whether `secret` is the password (or the token).
    public func check(_ secret: String) -> Bool {
        switch credential {
        case .password(let h): return h.matches(secret)
        case .token(let t):
            // Digests first: equal lengths, so the comparison says nothing about the token's length.
            return Self.constantTimeEqual(Array(SHA256.hash(data: Array(secret.utf8))), Array(SHA256.hash(data: t)))
        }
    }

    /// A new session for `operatorName`.
    public func open(operatorName: String, now: Date = Date()) -> Session {
        let s = Session(id: Self.randomToken(), operatorName: operatorName, csrf: Self.randomToken(), expires: now.addingTimeInterval(ttl))
        lock.withLock {
            sessions = sessions.filter { $0.value.expires > now }
            sessions[s.id] = s
        }
        return s
    }

    /// The live session with this id, if any.
    public func session(_ id: String?, now: Date = Date()) -> Session? {
        guard let id, id.count == 64 else { return nil }
        return lock.withLock {
            guard let s = sessions[id] else { return nil }
            guard s.expires > now else {
                sessions[id] = nil
                return nil
            }
            return s
        }
    }

    public func close(_ id: String) { lock.withLock { sessions[id] = nil } }

    /// Whether the form's CSRF token is the session's.
    public static func csrfMatches(_ session: Session, _ token: String?) -> Bool {
        guard let token else { return false }
        return constantTimeEqual(Array(SHA256.hash(data: Array(token.utf8))), Array(SHA256.hash(data: Array(session.csrf.utf8))))
    }

    /// 32 random bytes, hex.
    static func randomToken() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// Compares every byte whatever the first difference is.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in 0..<a.count { d |= a[i] ^ b[i] }
        return d == 0
    }
}
