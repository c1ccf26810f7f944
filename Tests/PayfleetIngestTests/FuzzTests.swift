import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import PayfleetCore
import PayfleetIngest
import Testing

/// Mutated bodies and headers never crash the server, never answer 5xx, and whatever reaches
/// the outbox is a valid canonical event without a card number.
@Suite struct FuzzTests {
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    static func mutate(_ body: [UInt8], _ rng: inout SplitMix) -> [UInt8] {
        var b = body
        let tokens: [[UInt8]] = ["4111111111111111", "null", "-1", "1e400", "\"", "{", "]", "\\u0000", "19.99", "\"JPY\""]
            .map { Array($0.utf8) }
        for _ in 0..<(1 + rng.int(4)) {
            guard !b.isEmpty else { break }
            let i = rng.int(b.count)
            switch rng.int(5) {
            case 0: b[i] = UInt8(truncatingIfNeeded: rng.next())
            case 1: b.removeSubrange(i..<min(b.count, i + 1 + rng.int(8)))
            case 2: b.insert(contentsOf: tokens[rng.int(tokens.count)], at: i)
            case 3: b = Array(b.prefix(i))
            default: b.insert(contentsOf: b[i..<min(b.count, i + rng.int(16))], at: rng.int(b.count))
            }
        }
        return b
    }

    @Test func mutatedRequestsNeverCrashOrPublishInvalidEvents() async throws {
        try await TestIngest.withApp { client, config in
            var rng = SplitMix(state: 20_261_124)
            var payout = TestIngest.object("payout")
            payout["status"] = "paid"
            var pi = TestIngest.object("payment_intent")
            pi["customer"] = "cus_1"
            let stripeSeeds = [
                TestIngest.stripeEvent(id: "evt_f1", type: "payout.paid", object: payout),
                TestIngest.stripeEvent(id: "evt_f2", type: "payment_intent.succeeded", object: pi),
            ]
            let adyenSeed = TestIngest.adyenBody([TestIngest.adyenItem(psp: "8813547924770700", code: "AUTHORISATION")])
            let canonicalSeed = TestIngest.canonical(eventID: "fuzz")
            let allowed: Set<Int> = [200, 202, 400, 401, 403, 404, 409, 413, 422]
            let rounds = Int(ProcessInfo.processInfo.environment["PAYFLEET_FUZZ_ROUNDS"] ?? "1000") ?? 1000
            var statuses: [Int: Int] = [:]
            for round in 0..<rounds {
                // Stripe: re-signed mutations reach the parser and mapper; unsigned ones must be 401.
                let s = Self.mutate(stripeSeeds[round % 2], &rng)
                let resign = rng.int(4) != 0
                let sh = resign ? TestIngest.stripeHeaders(s) : TestIngest.stripeHeaders(stripeSeeds[round % 2])
                let r1 = try await client.execute(uri: "/webhooks/stripe", method: .post, headers: sh, body: ByteBuffer(bytes: s))
                if !resign && s != stripeSeeds[round % 2] { #expect(r1.status == .unauthorized) }
                // Adyen: mutated JSON (signatures mostly break).
                let a = Self.mutate(adyenSeed, &rng)
                let r2 = try await client.execute(
                    uri: "/webhooks/adyen", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(bytes: a))
                // Canonical API with a valid key and mutated headers now and then.
                let c = Self.mutate(canonicalSeed, &rng)
                var h: HTTPFields = [.authorization: "Bearer \(TestIngest.apiKey)", HTTPField.Name("Idempotency-Key")!: "f\(round)"]
                if rng.int(10) == 0 { h[.authorization] = "Bearer \(TestIngest.apiKey)\(rng.int(9))" }
                if rng.int(10) == 0 { h[HTTPField.Name("Idempotency-Key")!] = String(repeating: "k", count: 300) }
                let r3 = try await client.execute(uri: "/v1/events", method: .post, headers: h, body: ByteBuffer(bytes: c))
                for r in [r1, r2, r3] {
                    statuses[r.status.code, default: 0] += 1
                    #expect(allowed.contains(r.status.code), "status \(r.status.code)")
                }
            }
            // Everything in the outbox decodes and validates and carries no card number.
            for body in try TestIngest.outboxBodies(config) {
                #expect(throws: Never.self) { try EventCodec.decode(Data(body.utf8)) }
                // The pspReference is a provider identifier, exempt and kept as sent (DESIGN §3).
                #expect(!PANGuard.containsPAN(body.replacingOccurrences(of: "8813547924770700", with: "psp")))
            }
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            print("fuzz statuses: \(statuses.sorted(by: { $0.key < $1.key }))")
        }
    }
}
