import Foundation
import PayfleetCore

/// Where and how to connect: parsed from an `amqp://` or `amqps://` URL plus TLS files.
///
/// URL form: `amqp[s]://user:password@host:port/vhost?heartbeat=30&connection_timeout=5`.
/// The default vhost (`/`) is written as an empty path or `%2F`.
public struct AMQPConfiguration: Sendable, CustomStringConvertible {
    /// One broker node.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }

        /// `host:port` (the port defaults to `defaultPort`).
        public static func parse(_ text: String, defaultPort: Int) -> Endpoint? {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard let h = parts.first, !h.isEmpty, parts.count <= 2 else { return nil }
            if parts.count == 2 {
                guard let p = Int(parts[1]), (1...65535).contains(p) else { return nil }
                return Endpoint(host: String(h), port: p)
            }
            return Endpoint(host: String(h), port: defaultPort)
        }
    }

    /// The node connected to (the URL's host, or the endpoint `AMQPConnection.open` chose).
    public var host: String
    public var port: Int
    /// The nodes of a cluster, tried in this order on every (re)connect, starting with the one
    /// that last answered; empty = the URL's host only (`broker.hosts`).
    public var endpoints: [Endpoint] = []
    public var user: String
    public var password: String
    public var vhost: String
    public var tls: Bool
    /// CA bundle to verify the broker with (amqps).
    public var caFile: String?
    /// Client certificate and key for mutual TLS (amqps).
    public var certFile: String?
    public var keyFile: String?
    public var verifyPeer: Bool = true
    public var heartbeatSeconds: Int = 30
    public var connectTimeoutSeconds: Int = 5
    /// Reconnect backoff: first delay and cap, in milliseconds (full jitter).
    /// Declare `payfleet.events` on connect (needs `configure` on it), else only check that it
    /// exists (passive): production broker users have no `configure` on the exchange, which
    /// would let them delete it; the operator declares it (`payfleet topology declare`).
    public var declareEventsExchange = true
    public var reconnectInitialMS: Int = 200
    public var reconnectMaxMS: Int = 15_000

    public init(url: String) throws(AMQPError) {
        guard let comps = URLComponents(string: url), let scheme = comps.scheme?.lowercased(),
            scheme == "amqp" || scheme == "amqps"
        else { throw AMQPError(.invalidConfiguration, "'\(Self.redact(url))' is not an amqp:// or amqps:// URL") }
        tls = scheme == "amqps"
        host = comps.host ?? "localhost"
        if host.isEmpty { host = "localhost" }
        port = comps.port ?? (tls ? 5671 : 5672)
        user = comps.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? "guest"
        password = comps.percentEncodedPassword.flatMap { $0.removingPercentEncoding } ?? "guest"
        var path = comps.percentEncodedPath
        if path.hasPrefix("/") { path.removeFirst() }
        vhost = path.isEmpty ? "/" : (path.removingPercentEncoding ?? path)
        for item in comps.queryItems ?? [] {
            switch item.name {
            case "heartbeat":
                guard let v = item.value.flatMap(Int.init), v >= 0 else {
                    throw AMQPError(.invalidConfiguration, "heartbeat must be a number of seconds")
                }
                heartbeatSeconds = v
            case "connection_timeout":
                guard let v = item.value.flatMap(Int.init), v > 0 else {
                    throw AMQPError(.invalidConfiguration, "connection_timeout must be a number of seconds")
                }
                connectTimeoutSeconds = v
            case "cacertfile": caFile = item.value
            case "certfile": certFile = item.value
            case "keyfile": keyFile = item.value
            case "verify": verifyPeer = item.value != "verify_none"
            default:
                throw AMQPError(.invalidConfiguration, "unknown URL option '\(item.name)'")
            }
        }
    }

    /// `amqp://user@host:port/vhost` — never the password.
    public var description: String {
        let where_ = endpoints.count > 1 ? endpoints.map(\.description).joined(separator: ",") : "\(host):\(port)"
        return "\(tls ? "amqps" : "amqp")://\(user)@\(where_)/\(vhost == "/" ? "" : vhost)"
    }

    /// Removes a password from a URL for error messages and logs.
    public static func redact(_ url: String) -> String {
        guard var c = URLComponents(string: url), c.password != nil else { return url }
        c.password = "***"
        return c.string ?? "<url>"
    }
}
