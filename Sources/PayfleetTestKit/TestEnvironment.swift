import Foundation
import PayfleetCore

/// Where the private test broker and the built executables are. Integration tests read the
/// broker from `PAYFLEET_TEST_AMQP_URL` (set by `scripts/test.sh`, default the private broker's
/// port 25672) and never touch a system-wide broker.
public enum TestEnvironment {
    public static var amqpURL: String {
        ProcessInfo.processInfo.environment["PAYFLEET_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:25672/"
    }

    public static var managementURL: String {
        ProcessInfo.processInfo.environment["PAYFLEET_TEST_MANAGEMENT_URL"] ?? "http://guest:guest@127.0.0.1:25673/"
    }

    /// The private broker's TLS listener (amqps, port = AMQP port + 6) with the CA and client
    /// certificate `scripts/broker.sh` generated; nil when the broker has none.
    public static var amqpsURL: String? {
        if let u = ProcessInfo.processInfo.environment["PAYFLEET_TEST_AMQPS_URL"] { return u }
        let tls = brokerDir + "/tls"
        guard FileManager.default.fileExists(atPath: tls + "/client.pem"),
            let port = URLComponents(string: amqpURL)?.port
        else { return nil }
        return "amqps://guest:guest@localhost:\(port + 6)/?cacertfile=\(tls)/ca.pem&certfile=\(tls)/client.pem&keyfile=\(tls)/client.key"
    }

    /// The private broker's state directory (for stop/start in fault tests).
    public static var brokerDir: String {
        ProcessInfo.processInfo.environment["PAYFLEET_BROKER_DIR"] ?? "/tmp/payfleet-broker"
    }

    /// The repository root (where Package.swift is).
    public static var repoRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
        }
        return FileManager.default.currentDirectoryPath
    }

    /// Directory of the built executables (beside the test bundle), or `PAYFLEET_BIN_DIR`.
    public static var binDir: String {
        if let d = ProcessInfo.processInfo.environment["PAYFLEET_BIN_DIR"] { return d }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("payfleet-demo-worker").path) {
                return url.path
            }
        }
        return repoRoot + "/.build/debug"
    }

    /// A fresh temporary directory.
    public static func makeTempDir(_ prefix: String = "payfleet-test") -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A short unique name for queues of one test.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(UInt32.random(in: 0...UInt32.max) % 1_000_000)"
    }

    /// Runs `scripts/broker.sh CMD` against the test broker (for stop/start fault tests).
    @discardableResult
    public static func broker(_ command: String) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repoRoot + "/scripts/broker.sh", command, brokerDir]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}

/// A test's own failure with a message naming what did not happen (a process that did not
/// start, a publisher that did not connect).
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
