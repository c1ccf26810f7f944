import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit

@testable import PayfleetReceipts

/// One `receipt-sender` process under test (the shared `WorkerProcess`) with the test merchants.
extension WorkerProcess {
    static func receipts(
        prefix: String, section: [String], retryDelays: [String]? = nil, _ body: (WorkerProcess) async throws -> Void
    ) async throws {
        var o = Options.worker("receipt-sender", prefix: prefix)
        o.topLevelYAML = """
            merchants:
              - id: m_acme
                name: Acme Café
                timezone: Europe/London
                currencies: [GBP, BHD]
              - id: m_tokyo
                name: Tokyo Shop
                timezone: Asia/Tokyo
                currencies: [JPY]
            """
        o.sectionYAML = section
        if let retryDelays { o.retryDelays = retryDelays }
        try await with(o, body)
    }

    var mailDir: String { dir + "/state/mail" }

    func files(withSuffix suffix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: mailDir)) ?? [])
            .filter { $0.hasSuffix(suffix) && !$0.hasPrefix(".") }.sorted()
    }

    /// Waits until the worker's admin listener answers (it is up and consuming).
    func waitReady() async throws {
        let ok = await eventually(timeout: .seconds(60)) { await admin("/readyz")?.status == 200 }
        if !ok { throw TestFailure("receipt-sender not ready: \(process?.log ?? "")") }
    }

    func writeSecret(_ name: String, _ value: String) throws -> String {
        let path = dir + "/" + name
        try value.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// A payment with the customer's contact details as given.
func receiptEvent(
    _ n: Int, prefix: String, currency: String, amount: Int64, email: String? = "ada@example.com",
    phone: String? = nil, type: PaymentEvent.EventType = .paymentSucceeded, merchant: String = "m_acme"
) -> PaymentEvent {
    var e = EventFactory.payment(n, prefix: prefix, type: type, amount: amount, currency: currency, merchant: merchant)
    e.customer = .init(id: "cus_\(n)", name: "Ada Lovelace", email: email, phone: phone)
    e.payment?.card = .init(brand: "visa", last4: "4242")
    return e
}

let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

/// A loopback server the test starts: a Python script from this directory on a free port.
final class LoopbackServer: @unchecked Sendable {
    let script: String
    let dir: String
    private(set) var port: Int
    private(set) var process: ChildProcess?

    init(script: String, dir: String, port: Int? = nil) {
        self.script = testsDir + "/" + script
        self.dir = dir
        self.port = port ?? Int.random(in: 50_000...59_999)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// Starts the server and waits for its ready file; on a taken port tries another one (unless
    /// `keepPort`, used when a worker already points at this port).
    func start(_ args: [String], keepPort: Bool = false) async throws {
        for _ in 0..<5 {
            let ready = dir + "/ready-\(port)"
            try? FileManager.default.removeItem(atPath: ready)
            let p = try ChildProcess(
                executable: "/usr/bin/env",
                arguments: ["python3", script, "--port", "\(port)", "--ready-file", ready] + args,
                logPath: dir + "/server-\(port).log")
            let up = await eventually(timeout: .seconds(20)) {
                FileManager.default.fileExists(atPath: ready) || !p.isRunning
            }
            if up && p.isRunning {
                process = p
                return
            }
            await p.killNow()
            if keepPort {
                try await Task.sleep(for: .milliseconds(500))
            } else {
                port = Int.random(in: 50_000...59_999)
            }
        }
        throw TestFailure(
            "\(script) did not start: \((try? String(contentsOfFile: dir + "/server-\(port).log", encoding: .utf8)) ?? "")"
        )
    }

    /// SIGKILL and reap, synchronously (for `defer`): what the server wrote is complete (renamed into place).
    func kill() {
        guard let p = process else { return }
        p.signal(SIGKILL)
        p.process.waitUntilExit()
        process = nil
    }

    func stop() async {
        guard let p = process else { return }
        p.signal(SIGTERM)
        if await p.wait(timeout: .seconds(10)) == nil { await p.killNow() }
        process = nil
    }
}

/// The aiosmtpd sink: what it received, as parsed by Python's email package.
final class SMTPSink: @unchecked Sendable {
    let server: LoopbackServer
    var dir: String { server.dir + "/inbox" }
    var port: Int { server.port }

    init(dir: String, port: Int? = nil) { server = LoopbackServer(script: "smtp_sink.py", dir: dir, port: port) }

    func start(
        auth: String? = nil, tls: (cert: String, key: String)? = nil, implicitTLS: Bool = false,
        killPIDFile: String? = nil, keepPort: Bool = false, failFirst: Int = 0
    ) async throws {
        var args = ["--dir", dir, "--fail-first", "\(failFirst)"]
        if let auth { args += ["--auth", auth] }
        if let tls { args += ["--tls", "\(tls.cert):\(tls.key)"] + (implicitTLS ? ["--implicit-tls"] : []) }
        if let killPIDFile { args += ["--kill-pid-file", killPIDFile] }
        try await server.start(args, keepPort: keepPort)
    }

    func stop() async { await server.stop() }
    func kill() { server.kill() }

    var count: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.count
    }

    /// Each received message: `headers`, `parts` [{content_type, body}], `rcpt_tos`, `auth_login`, …
    func messages() throws -> [[String: Any]] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }
            .sorted()
        return try names.map { n in
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + n))
            return try JSONSerialization.jsonObject(with: data) as! [String: Any]
        }
    }

    func raw() throws -> [String] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".eml") }
            .sorted()
        return try names.map { try String(contentsOfFile: dir + "/" + $0, encoding: .utf8) }
    }
}

/// The Twilio-compatible sink: one JSON line per accepted request.
final class SMSSink: @unchecked Sendable {
    let server: LoopbackServer
    var out: String { server.dir + "/sms.jsonl" }
    var port: Int { server.port }

    init(dir: String) { server = LoopbackServer(script: "sms_sink.py", dir: dir) }

    func start(failFirst: Int = 0) async throws {
        try await server.start(["--out", out, "--fail-first", "\(failFirst)"])
    }

    func stop() async { await server.stop() }
    func kill() { server.kill() }

    func requests() throws -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: out, encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}

/// A self-signed certificate for 127.0.0.1 / localhost (openssl), for the TLS tests.
func makeCertificate(in dir: String) throws -> (cert: String, key: String) {
    let cert = dir + "/cert.pem"
    let key = dir + "/key.pem"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw TestFailure("openssl req failed") }
    return (cert, key)
}
