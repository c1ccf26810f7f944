import Foundation
import PayfleetAMQP
import PayfleetCore
import PayfleetTestKit
import Testing

/// Issue 15 item 19: a state file that refuses writes (here: a full disk, a real tmpfs filled
/// to the last byte) makes the worker not ready and pauses it; nothing is dead-lettered or
/// retried for it, and it resumes on its own once the disk has room.
@Suite(.serialized)
struct StoreFailureTests {
    /// Mounting a tmpfs needs root (CAP_SYS_ADMIN): true on this machine kind and in CI.
    static let canMount: Bool = {
        guard getuid() == 0 else { return false }
        let dir = TestEnvironment.makeTempDir("mount-probe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard sh("mount -t tmpfs -o size=1m tmpfs '\(dir)'") == 0 else { return false }
        _ = sh("umount '\(dir)'")
        return true
    }()

    @discardableResult
    static func sh(_ command: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }

    @Test("Disk full mid-run: /readyz 503 'not writable', consumption paused, no retry or dead letter; all 4,000 applied exactly once after space returns",
          .enabled(if: canMount, "needs root to mount a tmpfs"))
    func diskFullPausesAndResumes() async throws {
        try await DemoFleet.with(prefix: "diskfull", batchSize: 100) { fleet in
            let state = fleet.dir + "/state"
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            #expect(Self.sh("mount -t tmpfs -o size=6m tmpfs '\(state)'") == 0)
            defer { Self.sh("umount -l '\(state)'") }
            try await fleet.declare()
            let n = 4_000
            let events = (0..<n).map { EventFactory.payment($0, prefix: fleet.name) }
            let pub = fleet.publisher()
            #expect(await pub.waitUntilConnected())
            try await fleet.publish(events, via: pub)
            pub.close()
            try fleet.start()
            #expect(try await eventually(timeout: .seconds(60), every: .milliseconds(5)) { try fleet.applied().rows >= 200 })
            // Fill the disk to the last byte.
            Self.sh("dd if=/dev/zero of='\(state)/filler' bs=64k 2>/dev/null")
            let paused = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                guard let r = await fleet.admin("/readyz") else { return false }
                return r.status == 503 && r.body.contains("not writable")
            }
            let readyz = await fleet.admin("/readyz")
            #expect(paused, "\(String(describing: readyz))")
            #expect(await fleet.metric("payfleet_worker_store_writable") == 0)
            let during = try fleet.applied().rows
            #expect(during < n, "the disk must fill mid-run")
            try await Task.sleep(for: .seconds(3))
            // Held, not failed: nothing dead-lettered, retried or requeued, nothing more applied.
            #expect(try fleet.applied().rows == during)
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(await fleet.metric("payfleet_retried_total") ?? 0 == 0)
            #expect(await fleet.metric("payfleet_dead_lettered_total") ?? 0 == 0)
            #expect(await fleet.metric("payfleet_requeued_total") ?? 0 == 0)
            #expect(fleet.process?.isRunning == true)

            try FileManager.default.removeItem(atPath: state + "/filler")
            #expect(try await eventually(timeout: .seconds(120)) { try await fleet.drained(rows: n) })
            try await Task.sleep(for: .milliseconds(500))
            let a = try fleet.applied()
            #expect(a.rows == n)
            #expect(a.distinct == n)
            #expect(a.sum == events.reduce(0) { $0 + $1.amount.value })
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(await eventually(timeout: .seconds(10)) { await fleet.admin("/readyz")?.status == 200 })
            #expect(await fleet.metric("payfleet_worker_store_writable") == 1)
            await fleet.process?.killNow()
        }
    }
}
