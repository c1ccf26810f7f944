import Foundation
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// A handler whose events say what it should do: `metadata.fail` refuses the event after
/// writing a row (the savepoint must undo it), `metadata.effect` returns an effect,
/// `metadata.effect_fails` makes that effect fail ("transient" or "permanent").
struct ScriptedHandler: WorkerHandler {
    typealias Effect = String

    var migrations: [Migration] {
        [Migration("scripted.1", "CREATE TABLE seen (event_id TEXT PRIMARY KEY); CREATE TABLE completed (event_id TEXT PRIMARY KEY);")]
    }

    func apply(_ event: PaymentEvent, db: SQLiteConnection) throws -> String? {
        try db.execute("INSERT INTO seen (event_id) VALUES (?)", [.text(event.id)])
        if let reason = event.metadata["fail"] { throw HandlerError.permanent("Scripted", reason) }
        return event.metadata["effect"]
    }

    func perform(_ effect: String, event: PaymentEvent, attempt: Int, outcomeUnknown: Bool) async throws {
        switch event.metadata["effect_fails"] {
        case "transient": throw HandlerError.transient("HTTP503", "try later")
        case "permanent": throw HandlerError.permanent("HTTP400", "never")
        default: break
        }
    }

    func completed(_ effect: String, event: PaymentEvent, db: SQLiteConnection) throws {
        try db.execute("INSERT INTO completed (event_id) VALUES (?)", [.text(event.id)])
    }
}

@Suite("BatchApplier: the runtime's batch step without a broker")
struct BatchApplierTests {
    func event(_ n: Int, _ metadata: [String: String] = [:]) -> PaymentEvent {
        EventFactory.payment(n, prefix: "ba", metadata: metadata)
    }

    func count(_ h: HandlerHarness<ScriptedHandler>, _ sql: String) async throws -> Int64 {
        try await h.store.withConnection { db in try db.queryOne(sql)?.int(0) ?? -1 }
    }

    func journal(_ h: HandlerHarness<ScriptedHandler>, _ id: String) async throws -> (state: String, attempts: Int64)? {
        try await h.store.withConnection { db in
            try db.queryOne("SELECT state, attempts FROM effect_journal WHERE event_id = ?", [.text(id)]).map {
                ($0.string(0) ?? "", $0.int(1) ?? -1)
            }
        }
    }

    @Test("An event already processed is a duplicate and is not applied again")
    func dedupe() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let events = (0..<5).map { event($0) }
        #expect(try await h.run(events).allSatisfy(\.isNew))
        let again = try await h.run(events + [event(5)])
        #expect(again.filter(\.isNew).count == 1)
        #expect(again.prefix(5).allSatisfy { if case .duplicate = $0 { true } else { false } })
        #expect(try await count(h, "SELECT COUNT(*) FROM seen") == 6)
        #expect(try await count(h, "SELECT COUNT(*) FROM processed") == 6)
    }

    @Test("The same event twice in one batch: the second copy is a duplicate, even with an effect")
    func duplicateInBatch() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let e = event(1, ["effect": "mail"])
        let outcomes = try await h.run([e, event(2), e])
        #expect(outcomes[0].effect == "mail" && outcomes[0].isNew)
        guard case .duplicate = outcomes[2] else { Issue.record("second copy: \(outcomes[2])"); return }
        #expect(try await count(h, "SELECT COUNT(*) FROM effect_journal") == 1)
    }

    @Test("A failing event is undone alone (its savepoint); the rest of the batch commits")
    func savepointIsolation() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let bad = event(2, ["fail": "refused"])
        let outcomes = try await h.run([event(1), bad, event(3)])
        #expect(outcomes[1].failure?.errorClass == "Scripted" && outcomes[1].failure?.kind == .permanent)
        #expect(outcomes[0].isNew && outcomes[2].isNew)
        // The failing event's own row went with its savepoint, and it is not marked processed.
        #expect(try await count(h, "SELECT COUNT(*) FROM seen") == 2)
        #expect(try await count(h, "SELECT COUNT(*) FROM processed") == 2)
        let processed = try await h.store.withConnection { db in try db.isProcessed(bad.id) }
        #expect(!processed)
        // `apply` throws that failure, after the batch committed.
        let h2 = try await HandlerHarness(handler: ScriptedHandler())
        await #expect(throws: HandlerError.self) { try await h2.apply([event(1), bad]) }
        #expect(try await count(h2, "SELECT COUNT(*) FROM seen") == 1)
    }

    @Test("A journaled effect this build cannot decode fails its own event (permanent), not the batch's transaction")
    func unreadableJournalFailsItsEventAlone() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let first = event(1, ["effect": "push"])
        _ = try await h.run([first])
        #expect(try await journal(h, first.id)?.state == "intent")
        try await h.store.write { db in try db.execute("UPDATE effect_journal SET effect = X'7B' WHERE event_id = ?", [.text(first.id)]) }
        let outcomes = try await h.run([first, event(2)])
        #expect(outcomes[0].failure?.errorClass == "UnreadableEffectJournal" && outcomes[0].failure?.kind == .permanent)
        #expect(outcomes[1].isNew)
        #expect(try await count(h, "SELECT COUNT(*) FROM seen") == 2)
    }

    @Test("An undecodable body is a permanent InvalidEvent")
    func decode() {
        guard case .failure(let e) = BatchApplier<ScriptedHandler>.decode(Array("{not json".utf8)) else {
            Issue.record("decoded garbage")
            return
        }
        #expect(e.kind == .permanent && e.errorClass == "InvalidEvent")
        let good = event(1)
        guard case .success(let back) = BatchApplier<ScriptedHandler>.decode(Array(EventCodec.encode(good))) else {
            Issue.record("a good body did not decode")
            return
        }
        #expect(back.id == good.id)
    }

    @Test("An effect's intent is journaled in the batch; redelivery before an outcome is outcome-unknown")
    func effectIntent() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let e = event(1, ["effect": "mail"])
        let first = try await h.run([e])
        guard case .effect("mail", 0, false) = first[0] else { Issue.record("\(first[0])"); return }
        #expect(try await journal(h, e.id)?.state == "intent")
        // Crash before the outcome: the redelivery gets the journaled effect, marked unknown.
        let again = try await h.run([e])
        guard case .effect("mail", 0, true) = again[0] else { Issue.record("\(again[0])"); return }
        #expect(try await count(h, "SELECT COUNT(*) FROM seen") == 1)
        // Performed and recorded: done, `completed` ran, and a later copy is a plain duplicate.
        let done = try await h.run([e], performEffects: true)
        #expect(done[0].failure == nil)
        #expect(try await journal(h, e.id)?.state == "done")
        #expect(try await count(h, "SELECT COUNT(*) FROM completed") == 1)
        guard case .duplicate = try await h.run([e])[0] else { Issue.record("not a duplicate after done"); return }
    }

    @Test("A failed effect is journaled failed (transient) or dead (permanent) with its attempts")
    func effectFailures() async throws {
        let h = try await HandlerHarness(handler: ScriptedHandler())
        let transient = event(1, ["effect": "call", "effect_fails": "transient"])
        let permanent = event(2, ["effect": "call", "effect_fails": "permanent"])
        let outcomes = try await h.run([transient, permanent], performEffects: true)
        #expect(outcomes[0].failure?.kind == .transient && outcomes[1].failure?.kind == .permanent)
        #expect(try await journal(h, transient.id)! == ("failed", 1))
        #expect(try await journal(h, permanent.id)! == ("dead", 1))
        #expect(try await count(h, "SELECT COUNT(*) FROM completed") == 0)
        // Redelivered: the effect again, with the attempts so far and a known (failed) outcome.
        let again = try await h.run([transient])
        guard case .effect("call", 1, false) = again[0] else { Issue.record("\(again[0])"); return }
    }
}
