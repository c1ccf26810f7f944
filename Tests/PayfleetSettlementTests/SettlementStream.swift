import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetSettlement
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker

/// A deterministic event stream over merchants in Europe/London, America/New_York (02:00
/// cut-off), Asia/Tokyo (JPY) and Asia/Bahrain (BHD), on days around midnight and across DST
/// changes, with duplicates and shuffled order — and the totals expected, computed here from the
/// stream without the worker's code: each event is built from a local wall-clock time, so its
/// business day is known by construction.
struct SettlementStream {
    static let merchants = [
        Merchant(id: "m_lon", timeZone: "Europe/London", cutoffMinutes: 0, currencies: ["GBP", "EUR"]),
        Merchant(id: "m_nyc", timeZone: "America/New_York", cutoffMinutes: 120, currencies: ["USD"]),
        Merchant(id: "m_tyo", timeZone: "Asia/Tokyo", cutoffMinutes: 0, currencies: ["JPY"]),
        Merchant(id: "m_bah", timeZone: "Asia/Bahrain", cutoffMinutes: 0, currencies: ["BHD"]),
    ]

    /// Days around the 2026 DST changes (London 29 Mar / 25 Oct, New York 8 Mar / 1 Nov).
    static let days = ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-28", "2026-03-29", "2026-03-30",
                       "2026-10-24", "2026-10-25", "2026-10-26", "2026-10-31", "2026-11-01", "2026-11-02"]

    static var merchantsYAML: String {
        "merchants:\n" + merchants.map { m in
            "  - id: \(m.id)\n    timezone: \(m.timeZone)\n"
                + "    cutoff: \"\(String(format: "%02d:%02d", m.cutoffMinutes / 60, m.cutoffMinutes % 60))\"\n"
                + "    currencies: [\(m.currencies.joined(separator: ", "))]\n"
        }.joined()
    }

    struct Key: Hashable, Comparable {
        var merchant: String, currency: String, day: String
        static func < (l: Key, r: Key) -> Bool { (l.day, l.merchant, l.currency) < (r.day, r.merchant, r.currency) }
    }
    struct Totals: Equatable {
        var count: Int64 = 0, gross: Int64 = 0, refunds: Int64 = 0, disputes: Int64 = 0, fees: Int64 = 0
        var failed: Int64 = 0, payouts: Int64 = 0
        var net: Int64 { gross - refunds - disputes - fees }
    }

    /// Events in delivery order (duplicates included).
    var events: [PaymentEvent] = []
    var expected: [Key: Totals] = [:]
    var uniqueCount = 0

    /// The instant of local wall-clock `h:m:s` on `day` in `tz`, and the business day it
    /// belongs to by construction (the previous day before the cut-off).
    static func instant(_ day: String, _ h: Int, _ m: Int, _ s: Int, _ merchant: Merchant) -> (Date, String) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: merchant.timeZone)!
        let p = day.split(separator: "-").map { Int($0)! }
        let date = cal.date(from: DateComponents(year: p[0], month: p[1], day: p[2], hour: h, minute: m, second: s))!
        let business = h * 60 + m < merchant.cutoffMinutes ? CalendarDay(day)!.adding(days: -1).description : day
        return (date, business)
    }

    init(total: Int, seed: UInt64, prefix: String) {
        var rng = SplitMix(seed: seed)
        var unique: [PaymentEvent] = []
        var payments: [(merchant: Merchant, currency: Currency, id: String, amount: Int64, fee: Int64, day: String)] = []
        // Fixed edge instants: the last second before and the first at each merchant's cut-off.
        var edges: [(Merchant, String, Int, Int, Int)] = []
        for m in Self.merchants {
            for d in Self.days {
                let c = m.cutoffMinutes
                let before = (c == 0 ? 23 : (c - 1) / 60, c == 0 ? 59 : (c - 1) % 60)
                edges.append((m, d, before.0, before.1, 59))
                edges.append((m, d, c / 60, c % 60, 0))
            }
        }
        var n = 0
        func add(_ type: PaymentEvent.EventType, _ m: Merchant, _ cur: Currency, at: (Date, String), amount: Int64,
                 fee: Int64?, paymentID: String, metadata: [String: String] = [:], countedOn: String? = nil) {
            let eid = "\(prefix)-\(n)"
            n += 1
            let e = PaymentEvent(
                id: PaymentEvent.canonicalID(provider: "stripe", eventID: eid), type: type, occurredAt: at.0,
                receivedAt: at.0, source: .init(provider: "stripe", eventID: eid), merchantID: m.id,
                customer: .init(id: "cus_\(n % 13)"), payment: .init(id: paymentID, channel: "online", method: "card"),
                amount: Money(value: amount, currency: cur), fee: fee.map { Money(value: $0, currency: cur) },
                metadata: metadata)
            unique.append(e)
            // A late fee counts on its payment's day; everything else on its own.
            let k = Key(merchant: m.id, currency: cur.code, day: countedOn ?? at.1)
            var t = expected[k] ?? Totals()
            switch type {
            case .paymentSucceeded:
                t.count += 1
                t.gross += amount
                t.fees += fee ?? 0
            case .paymentFailed: t.failed += 1
            case .paymentRefunded: t.refunds += amount
            case .paymentDisputed:
                t.disputes += amount
                t.fees += fee ?? 0
            case .disputeClosed:
                if metadata["outcome"] == "won" {
                    t.disputes -= amount
                    t.fees -= fee ?? 0
                }
            case .payoutPaid: t.payouts += amount
            case .refundFailed: t.refunds -= amount
            case .paymentReversed:
                t.count -= 1
                t.gross -= amount
                t.fees -= fee ?? 0
            case .payoutFailed: t.payouts -= amount
            case .feeAssessed: t.fees += amount
            default: break
            }
            expected[k] = t
        }
        func amount(_ cur: Currency) -> Int64 {
            switch cur.exponent {
            case 0: return Int64(rng.next(50...250_000))  // yen
            case 3: return Int64(rng.next(100...900_000))  // fils
            default: return Int64(rng.next(50...500_000))
            }
        }
        var i = 0
        while unique.count < total {
            let at: (Date, String)
            let m: Merchant
            let edge = i < edges.count
            if edge {
                let e = edges[i]
                m = e.0
                at = Self.instant(e.1, e.2, e.3, e.4, m)
            } else {
                m = Self.merchants[rng.next(0...(Self.merchants.count - 1))]
                at = Self.instant(Self.days[rng.next(0...(Self.days.count - 1))], rng.next(0...23), rng.next(0...59), rng.next(0...59), m)
            }
            i += 1
            let cur = Currency(code: m.currencies[rng.next(0...(m.currencies.count - 1))])!
            let roll = rng.next(0...99)
            if edge || roll < 55 || payments.isEmpty {
                let a = amount(cur)
                let pid = "pi_\(prefix)_\(n)"
                add(.paymentSucceeded, m, cur, at: at, amount: a, fee: a / 40 + 20, paymentID: pid)
                payments.append((m, cur, pid, a, a / 40 + 20, at.1))
            } else if roll < 63 {
                add(.paymentFailed, m, cur, at: at, amount: amount(cur), fee: nil, paymentID: "pi_\(prefix)_f\(n)")
            } else {
                let p = payments[rng.next(0...(payments.count - 1))]
                let pat = Self.instant(Self.days[rng.next(0...(Self.days.count - 1))], rng.next(0...23), rng.next(0...59), 0, p.merchant)
                if roll < 75 {
                    let r = max(1, p.amount / Int64(rng.next(1...4)))
                    let rid = "re_\(prefix)_\(n)"
                    add(.paymentRefunded, p.merchant, p.currency, at: pat, amount: r, fee: nil, paymentID: p.id,
                        metadata: ["refund_id": rid])
                    if rng.next(0...3) == 0 {
                        // The refund fails later: it counts on its own business day.
                        let fat = Self.instant(Self.days[rng.next(0...(Self.days.count - 1))], rng.next(0...23), rng.next(0...59), 0, p.merchant)
                        add(.refundFailed, p.merchant, p.currency, at: fat, amount: r, fee: nil, paymentID: p.id,
                            metadata: ["refund_id": rid])
                    }
                } else if roll < 83 {
                    add(.paymentDisputed, p.merchant, p.currency, at: pat, amount: p.amount, fee: p.currency.exponent == 0 ? 2000 : 1500, paymentID: p.id)
                    if rng.next(0...1) == 0 {
                        let won = rng.next(0...2) > 0
                        add(.disputeClosed, p.merchant, p.currency, at: pat, amount: p.amount, fee: won && rng.next(0...1) == 0 ? 1500 : nil,
                            paymentID: p.id, metadata: ["outcome": won ? "won" : "lost"])
                    }
                } else if roll < 89 {
                    let po = amount(p.currency) * 3
                    let pid = "po_\(prefix)_\(n)"
                    add(.payoutPaid, p.merchant, p.currency, at: pat, amount: po, fee: nil, paymentID: pid)
                    if rng.next(0...2) == 0 {
                        add(.payoutFailed, p.merchant, p.currency, at: pat, amount: po, fee: nil, paymentID: pid)
                    }
                } else if roll < 95 {
                    // A fee learnt on another day counts on the payment's business day.
                    add(.feeAssessed, p.merchant, p.currency, at: pat, amount: p.amount / 100 + 1, fee: nil, paymentID: p.id,
                        countedOn: p.day)
                } else {
                    add(.paymentReversed, p.merchant, p.currency, at: pat, amount: p.amount, fee: p.fee, paymentID: p.id)
                }
            }
        }
        uniqueCount = unique.count
        // Duplicates (a tenth, as redelivered webhooks), then any order.
        var all = unique
        for _ in 0..<(unique.count / 10) { all.append(unique[rng.next(0...(unique.count - 1))]) }
        for j in stride(from: all.count - 1, to: 0, by: -1) { all.swapAt(j, rng.next(0...j)) }
        events = all
    }
}

/// The stream's generator: PayfleetCore's SplitMix64 with the draws the stream uses.
typealias SplitMix = SplitMix64

extension SplitMix64 {
    mutating func nextRaw() -> UInt64 { next() }
    mutating func next(_ r: ClosedRange<Int>) -> Int {
        r.lowerBound + Int(next() % UInt64(r.count))
    }
}

/// A settlement store built in-process (for unit tests, the CLI's `--state-file` and HTML).
enum LocalSettlement {
    static func store(_ dir: String, name: String = "settlement.sqlite") async throws -> Store {
        try await Store(path: dir + "/" + name, migrations: HandlerHarness.migrations(SettlementHandler()))
    }

    /// Feeds `events` through the runtime's own batch step (`HandlerHarness`), the handler
    /// seeing `now` as every event's arrival; a refused event's error is thrown after the batch
    /// committed without it.
    static func apply(_ events: [PaymentEvent], handler: SettlementHandler, store: Store, now: Date = Date()) async throws {
        let harness = try await HandlerHarness(handler: SettlementAt(handler: handler, now: now), store: store)
        try await harness.apply(events, batch: max(1, events.count))
    }

    /// `payfleet settlement report --json` parsed into totals per key.
    static func parseReport(_ text: String) throws -> [SettlementStream.Key: SettlementStream.Totals] {
        let array = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
        var out: [SettlementStream.Key: SettlementStream.Totals] = [:]
        for o in array {
            func i(_ k: String) -> Int64 { (o[k] as? NSNumber)?.int64Value ?? -999_999 }
            let k = SettlementStream.Key(
                merchant: o["merchant_id"] as? String ?? "", currency: o["currency"] as? String ?? "", day: o["date"] as? String ?? "")
            var t = SettlementStream.Totals()
            t.count = i("count")
            t.gross = i("gross")
            t.refunds = i("refunds")
            t.disputes = i("disputes")
            t.fees = i("fees")
            t.failed = i("failed_count")
            t.payouts = i("payouts")
            guard i("net") == t.net else { throw SettlementError("net \(i("net")) != gross − refunds − disputes − fees for \(k)") }
            out[k] = t
        }
        return out
    }
}

/// The settlement handler with a fixed arrival time (`apply(_:db:)` uses the clock).
struct SettlementAt: WorkerHandler {
    let handler: SettlementHandler
    let now: Date
    var migrations: [Migration] { handler.migrations }
    func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> NoEffect? {
        _ = try handler.apply(event, db: db, now: now)
        return nil
    }
}

/// A quorum queue on the private broker bound to `payfleet.events` by `keys` for the length of
/// `body`, then deleted (also when `body` throws).
func withEventsQueue(
    _ amqp: AMQPConfiguration, prefix: String, keys: [String], _ body: (AMQPSession, String) async throws -> Void
) async throws {
    let queue = TestEnvironment.uniqueName(prefix)
    let s = try await AMQPSession.connect(amqp)
    var failure: Error?
    do {
        try await s.declare { d in
            try d.exchange(ExchangeSpec(name: Topology.eventsExchange, type: "topic"))
            try d.queue(QueueSpec(name: queue, arguments: ["x-queue-type": .string("quorum")]))
            for key in keys {
                try d.bind(BindingSpec(source: Topology.eventsExchange, destination: queue, destinationType: .queue, routingKey: key))
            }
        }
        try await body(s, queue)
    } catch { failure = error }
    _ = try? await s.declare { try $0.delete(queue: queue) }
    await s.close()
    if let failure { throw failure }
}
