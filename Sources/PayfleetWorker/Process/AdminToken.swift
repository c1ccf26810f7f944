import Foundation
import Hummingbird
import NIOCore
import PayfleetCore

/// The bearer token that guards an admin listener's read APIs with personal data (DESIGN §1:
/// `admin_token_file`). Without a configured token those APIs answer 403: customer data is
/// never served to whoever can reach the port.
///
/// Key (in the worker's section): `admin_token_file` (path; `${CREDENTIALS_DIRECTORY}` is
/// expanded, for systemd `LoadCredential=`): a file holding the token, at least 32
/// characters, surrounding newlines ignored. An inline `admin_token` is refused: secrets are
/// never inline.
public struct AdminToken: Sendable {
    /// The smallest token accepted (32 characters: 192 bits of base64, 128 of hex).
    public static let minimumLength = 32
    let token: [UInt8]?
    /// The key that configures it, for messages (`crm-sync.admin_token_file`).
    public let key: String

    public init(token: String?, key: String) {
        self.token = token.map { Array($0.utf8) }
        self.key = key
    }

    /// Reads `admin_token_file` from `section`; nil token when the key is absent.
    public static func read(_ section: ConfigSection) throws(ConfigError) -> AdminToken {
        let key = section.dotted("admin_token_file")
        if section.has("admin_token") {
            throw ConfigError(
                key: section.dotted("admin_token"),
                message: "secrets are not inline: put the token in a file, admin_token_file")
        }
        guard section.has("admin_token_file") else { return AdminToken(token: nil, key: key) }
        let t = (try section.secret("admin_token") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.count >= minimumLength else {
            throw ConfigError(key: key, message: "the token must be at least \(minimumLength) characters")
        }
        guard t.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 }) else {
            throw ConfigError(key: key, message: "the token must be printable ASCII without spaces")
        }
        return AdminToken(token: t, key: key)
    }

    public var isConfigured: Bool { token != nil }

    /// nil when `request` carries `Authorization: Bearer <the token>`; otherwise the answer to
    /// send (401 with `WWW-Authenticate`, or 403 when no token is configured). The comparison
    /// takes the same time wherever the tokens differ.
    public func refusal(_ request: Request) -> Response? {
        guard let token else {
            return Self.error(
                .forbidden, "forbidden", "customer data needs a bearer token: configure \(key)", bearer: false)
        }
        let header = request.headers[.authorization] ?? ""
        let prefix = "bearer "
        guard header.count > prefix.count, header.prefix(prefix.count).lowercased() == prefix else {
            return Self.error(
                .unauthorized, "unauthorized", "Authorization: Bearer <admin token> required", bearer: true)
        }
        let given = Array(header.dropFirst(prefix.count).utf8)
        var diff = UInt8(given.count == token.count ? 0 : 1)
        for i in 0..<token.count { diff |= token[i] ^ (i < given.count ? given[i] : 0) }
        if diff != 0 {
            return Self.error(.unauthorized, "unauthorized", "wrong admin token", bearer: true)
        }
        return nil
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String, bearer: Bool) -> Response {
        let body = "{\"error\": {\"code\": \"\(code)\", \"message\": \"\(message)\"}}\n"
        var h: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if bearer { h[.wwwAuthenticate] = "Bearer realm=\"payfleet-admin\"" }
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
