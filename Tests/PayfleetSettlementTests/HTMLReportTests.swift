import Foundation
import PayfleetCLI
import PayfleetCore
import PayfleetSettlement
import PayfleetTestKit
import Testing

@Suite struct HTMLReportTests {
    /// A state with 14 days of activity (one negative day), a closed day and a late adjustment.
    static func state() async throws -> (dir: String, file: String) {
        let dir = TestEnvironment.makeTempDir("settle-html")
        let store = try await LocalSettlement.store(dir)
        let h = SettlementHandler(merchants: SettlementStream.merchants)
        var events: [PaymentEvent] = []
        for i in 0..<14 {
            let day = CalendarDay("2026-11-07")!.adding(days: i).description
            events.append(event("h\(i)", .paymentSucceeded, merchant: "m_lon", at: "\(day)T12:00:00Z", amount: 10_000 + Int64(i) * 1_250, currency: "GBP", fee: 150))
            events.append(event("j\(i)", .paymentSucceeded, merchant: "m_tyo", at: "\(day)T03:00:00Z", amount: 5_000 + Int64(i) * 100, currency: "JPY", fee: 180))
        }
        events.append(event("neg", .paymentRefunded, merchant: "m_lon", at: "2026-11-12T15:00:00Z", amount: 30_000, currency: "GBP", payment: "pi_h5"))
        events.append(event("x<&>", .paymentDisputed, merchant: "m_lon", at: "2026-11-20T15:00:00Z", amount: 2_500, currency: "GBP", fee: 1500, payment: "pi_h13"))
        try await LocalSettlement.apply(events, handler: h, store: store)
        let merchants = Dictionary(uniqueKeysWithValues: SettlementStream.merchants.map { ($0.id, $0) })
        _ = try await store.write { db in
            try BusinessDays.closeDue(db, merchants: merchants, graceMS: 0, now: utc("2026-11-21T00:00:00Z"))
        }
        try await LocalSettlement.apply(
            [event("late", .paymentRefunded, merchant: "m_lon", at: "2026-11-20T20:00:00Z", amount: 700, currency: "GBP", payment: "pi_h13")],
            handler: h, store: store, now: utc("2026-11-21T08:30:00Z"))
        return (dir, store.path)
    }

    static func render(_ file: String) throws -> String {
        let c = try PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--format", "html", "--state-file", file])
        return try (c as! SettlementCommand.Report).render(now: utc("2026-11-21T09:00:00Z"))
    }

    @Test("HTML report: self-contained, totals per currency, a 14-bar SVG chart per currency, adjustments listed, text escaped")
    func structure() async throws {
        let (dir, file) = try await Self.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let html = try Self.render(file)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href=") && !html.contains("https://"))
        #expect(html.components(separatedBy: "<div class=\"card\" data-currency=").count - 1 == 2)
        #expect(html.components(separatedBy: "<rect class=\"bar\"").count - 1 == 28)
        #expect(html.contains("data-date=\"2026-11-07\"") && html.contains("data-date=\"2026-11-20\""))
        #expect(html.contains("data-date=\"2026-11-12\" data-net=\"-13900\""))  // a negative day: a red bar below zero
        #expect(html.contains("<tr class=\"adjustment\"><td>m_lon</td><td>GBP</td>"))
        #expect(html.contains("2026-11-21T08:30:00Z") && html.contains("-7.00"))
        #expect(html.contains("¥") && html.contains("£"))
        // GBP on 2026-11-20: gross 10000+13*1250 = 26250, fees 150+1500, dispute 2500 → net 22100.
        #expect(html.contains("£221.00"))
        let csv = try (PayfleetCommand.parseAsRoot(["settlement", "report", "--date", "2026-11-20", "--format", "csv", "--state-file", file]) as! SettlementCommand.Report).render()
        #expect(csv.contains("m_lon,GBP,2026-11-20,1,26250,0,2500,1650,22100,-700,21400,0,0,true"))
    }

    @Test("HTML report renders in headless chromium without errors (DOM dump and screenshot)")
    func chromium() async throws {
        guard let browser = Tool.find(["chromium", "chromium-browser", "google-chrome"]) else {
            print("SKIPPED: chromium is not installed (scripts/install-deps.sh installs Debian's chromium)")
            FileHandle.standardError.write(Data("HTMLReportTests.chromium skipped: chromium is not installed\n".utf8))
            return
        }
        let (dir, file) = try await Self.state()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let page = dir + "/report.html"
        try Self.render(file).write(toFile: page, atomically: true, encoding: .utf8)
        let common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                      "--user-data-dir=\(dir)/chromium-profile", "--enable-logging=stderr", "--v=0"]
        let (status, out) = try Tool.run(browser, common + ["--dump-dom", "file://\(page)"], timeout: 120)
        #expect(status == 0, "chromium exited \(status): \(out.suffix(2000))")
        // The browser parsed the page: the DOM it serialized has the sections, both charts and their bars.
        #expect(out.contains("<section id=\"chart\">") && out.contains("<section id=\"adjustments\">"))
        #expect(out.components(separatedBy: "<rect class=\"bar\"").count - 1 == 28)
        #expect(!out.contains("CONSOLE("), "console messages: \(out)")
        #expect(!out.contains("Uncaught"))
        let shot = dir + "/report.png"
        let (s2, out2) = try Tool.run(browser, common + ["--screenshot=\(shot)", "--window-size=1280,1800", "file://\(page)"], timeout: 120)
        #expect(s2 == 0, "\(out2.suffix(2000))")
        let png = FileManager.default.contents(atPath: shot) ?? Data()
        #expect(png.count > 10_000 && png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        if let keep = ProcessInfo.processInfo.environment["PAYFLEET_SETTLEMENT_SCREENSHOT"] {
            try? FileManager.default.copyItem(atPath: shot, toPath: keep)
        }
    }
}
