import Foundation
import PayfleetCore
import PayfleetTestKit
import Testing

@testable import PayfleetReceipts

/// Opt-in throughput figure: `PAYFLEET_RECEIPTS_BENCH=N swift test --filter ReceiptBenchmark`
/// sends N receipts through the sandbox and through SMTP to aiosmtpd (no rate limit) and prints
/// receipts per second (backlog already queued; worker start-up excluded).
@Suite(.serialized) struct ReceiptBenchmark {
    static let n = Int(ProcessInfo.processInfo.environment["PAYFLEET_RECEIPTS_BENCH"] ?? "") ?? 0

    @Test(.enabled(if: n > 0), arguments: ["sandbox", "smtp"])
    func throughput(transport: String) async throws {
        let dir = TestEnvironment.makeTempDir("rcpt-bench")
        let sink = SMTPSink(dir: dir)
        if transport == "smtp" { try await sink.start() }
        defer { sink.kill() }
        var section = ["sms_transport: none"]
        if transport == "smtp" {
            section = [
                "email_transport: smtp", "sms_transport: none", "smtp:", "  host: 127.0.0.1", "  port: \(sink.port)",
                "  tls: none", "  rate_limit: 0", "  connections: 4",
            ]
        }
        try await WorkerProcess.receipts(prefix: "rcpt-bench", section: section) { fleet in
            try fleet.start()
            try await fleet.waitReady()
            let p = "bench\(UInt32.random(in: 0...UInt32.max))"
            let events = (0..<Self.n).map {
                receiptEvent($0, prefix: p, currency: ["GBP", "JPY", "BHD"][$0 % 3], amount: Int64(100 + $0))
            }
            let pub = fleet.publisher()
            let start = ContinuousClock.now
            try await fleet.publish(events, via: pub)
            let done = await eventually(timeout: .seconds(600), every: .milliseconds(50)) {
                transport == "smtp" ? sink.count == Self.n : fleet.files(withSuffix: ".eml").count == Self.n
            }
            let elapsed = ContinuousClock.now - start
            #expect(done)
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                "receipt-sender \(transport): \(Self.n) receipts in \(String(format: "%.2f", secs)) s = \(String(format: "%.0f", Double(Self.n) / secs)) receipts/s"
            )
            pub.close()
        }
    }
}
