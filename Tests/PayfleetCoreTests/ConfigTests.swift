import Foundation
import PayfleetCore
import Testing

struct ConfigTests {
    @Test func unknownKeysAreStartupErrorsNamingTheKey() throws {
        let root = try ConfigSection.parse(yaml: "broker:\n  url: amqp://x\n  hearbeat: 10s\n")
        let b = try root.section("broker")
        _ = try b.string("url")
        _ = try b.durationMS("heartbeat", default: 1)
        #expect(throws: ConfigError(key: "broker.hearbeat", message: "unknown key")) { try root.finish() }
    }

    @Test func environmentOverridesTheFile() throws {
        let root = try ConfigSection.parse(
            yaml: "ledger-writer:\n  batch_size: 10\n", environment: ["PAYFLEET_LEDGER_WRITER_BATCH_SIZE": "300"])
        #expect(try root.section("ledger-writer").int("batch_size", default: 1) == 300)
    }

    @Test func typeAndRangeErrorsNameTheKey() throws {
        let root = try ConfigSection.parse(yaml: "w:\n  batch_size: lots\n  partitions: 0\n")
        let w = try root.section("w")
        #expect(throws: ConfigError(key: "w.batch_size", message: "expected an integer")) {
            try w.int("batch_size", default: 1)
        }
        #expect(throws: ConfigError.self) { try w.int("partitions", default: 1, range: 1...8) }
    }

    @Test func secretsComeFromFiles() throws {
        let path = NSTemporaryDirectory() + "secret-\(UUID())"
        try "s3cret\n".write(toFile: path, atomically: true, encoding: .utf8)
        let root = try ConfigSection.parse(yaml: "broker:\n  url_file: \(path)\n")
        #expect(try root.section("broker").secret("url") == "s3cret")
        let missing = try ConfigSection.parse(yaml: "broker:\n  url_file: /nonexistent/x\n")
        #expect(throws: ConfigError.self) { try missing.section("broker").secret("url") }
    }

    @Test func durations() {
        #expect(ConfigSection.parseDurationMS("500ms") == 500)
        #expect(ConfigSection.parseDurationMS("10s") == 10_000)
        #expect(ConfigSection.parseDurationMS("1m") == 60_000)
        #expect(ConfigSection.parseDurationMS("35d") == 35 * 86_400_000)
        #expect(ConfigSection.parseDurationMS("soon") == nil)
    }

    @Test func merchantsValidateTimeZoneCutoffAndCurrencies() throws {
        let bad = try ConfigSection.parse(yaml: "merchants:\n  - id: m_a\n    timezone: Mars/Olympus\n")
        #expect(throws: ConfigError.self) { try Merchant.read(bad.sectionList("merchants")[0]) }
        let cur = try ConfigSection.parse(yaml: "merchants:\n  - id: m_a\n    currencies: [GBP, XXZ]\n")
        #expect(throws: ConfigError(key: "merchants[0].currencies[1]", message: "'XXZ' is not an ISO 4217 code")) {
            try Merchant.read(cur.sectionList("merchants")[0])
        }
    }
}

struct BusinessDayTests {
    func date(_ s: String) -> Date { RFC3339.parse(s)! }

    @Test func midnightAndCutoffInLondon() {
        let m = Merchant(id: "m_a", timeZone: "Europe/London", cutoffMinutes: 0)
        #expect(m.businessDay(for: date("2026-11-24T23:59:59Z")) == "2026-11-24")
        #expect(m.businessDay(for: date("2026-11-25T00:00:00Z")) == "2026-11-25")
        // BST: 23:30Z on 30 June is 00:30 local on 1 July.
        #expect(m.businessDay(for: date("2026-06-30T23:30:00Z")) == "2026-07-01")
        let cut = Merchant(id: "m_b", timeZone: "Europe/London", cutoffMinutes: 120)
        #expect(cut.businessDay(for: date("2026-11-25T01:59:00Z")) == "2026-11-24")
        #expect(cut.businessDay(for: date("2026-11-25T02:00:00Z")) == "2026-11-25")
    }

    /// The arithmetic business day equals Foundation's Calendar computation (local wall clock,
    /// then the cut-off) for instants all over 2000–2040, in zones with DST, half- and
    /// quarter-hour offsets and a 30-minute DST shift, and cut-offs on and off the hour.
    @Test func equalsTheCalendarComputation() {
        func calendarDay(_ zone: String, _ cutoff: Int, _ instant: Date) -> String {
            var cal = Calendar(identifier: .gregorian)
            cal.timeZone = TimeZone(identifier: zone)!
            let local = cal.dateComponents([.year, .month, .day, .hour, .minute], from: instant)
            var day = cal.date(from: DateComponents(year: local.year, month: local.month, day: local.day, hour: 12))!
            if local.hour! * 60 + local.minute! < cutoff { day = cal.date(byAdding: .day, value: -1, to: day)! }
            let c = cal.dateComponents([.year, .month, .day], from: day)
            return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
        }
        let zones = ["UTC", "Europe/London", "America/New_York", "Asia/Tokyo", "Asia/Kathmandu", "Australia/Lord_Howe",
                     "Pacific/Chatham", "America/St_Johns", "Asia/Bahrain", "Pacific/Kiritimati"]
        let cutoffs = [0, 60, 90, 120, 23 * 60 + 45]
        var seed: UInt64 = 42
        var mismatches: [String] = []
        for i in 0..<20_000 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Some instants right at DST changes and midnights: round to the quarter hour ± 1 s.
            var t = 946_684_800 + Double(seed >> 33) .truncatingRemainder(dividingBy: 1_262_304_000)
            if i % 3 == 0 { t = (t / 900).rounded(.down) * 900 + Double(Int(seed % 3) - 1) }
            let zone = zones[i % zones.count]
            let cutoff = cutoffs[(i / zones.count) % cutoffs.count]
            let m = Merchant(id: "m", timeZone: zone, cutoffMinutes: cutoff)
            let instant = Date(timeIntervalSince1970: t)
            let expected = calendarDay(zone, cutoff, instant)
            if m.businessDay(for: instant) != expected { mismatches.append("\(zone) \(cutoff) \(t): \(expected)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    @Test func acrossDSTInNewYork() {
        let m = Merchant(id: "m_ny", timeZone: "America/New_York", cutoffMinutes: 0)
        // 8 March 2026 (spring forward): 04:59Z is 23:59 EST on the 7th; 05:00Z is 00:00 EST on the 8th.
        #expect(m.businessDay(for: date("2026-03-08T04:59:00Z")) == "2026-03-07")
        #expect(m.businessDay(for: date("2026-03-08T05:00:00Z")) == "2026-03-08")
        // 1 November 2026 (fall back): 03:59Z is 23:59 EDT on 31 October; 04:00Z is 00:00 EDT.
        #expect(m.businessDay(for: date("2026-11-01T03:59:00Z")) == "2026-10-31")
        #expect(m.businessDay(for: date("2026-11-01T04:00:00Z")) == "2026-11-01")
    }

    @Test func accountSegments() {
        #expect(Merchant.accountSegment("m_acme") == "M-acme")
        #expect(Merchant.accountSegment("acme corp") == "Acme-corp")
        #expect(Merchant.accountSegment("_x") == "X-x")
        // The byte-wise ASCII path and the Character walk (non-ASCII, CR) agree on what they map.
        #expect(Merchant.accountSegment("") == "X")
        #expect(Merchant.accountSegment("7-eleven") == "7-eleven")
        #expect(Merchant.accountSegment("zürich") == "Z-rich")
        #expect(Merchant.accountSegment("é") == "X-")
        #expect(Merchant.accountSegment("a\r\nb") == "A-b")
        #expect(Merchant.accountSegment("a\rb") == "A-b")
        #expect(Merchant.accountSegment("{merchant}") == "X-merchant-")
    }
}
