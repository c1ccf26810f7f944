import Foundation
import PayfleetCore
import PayfleetTestKit

/// Debian's headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: Chromium reads NUL-terminated JSON commands on fd 3 and writes
/// answers and events on fd 4), so no WebSocket client is needed. One page (target); every
/// call blocks its thread (run them on a `BlockingThread`, never on the cooperative pool).
final class Chromium: @unchecked Sendable {
    static var executable: String? {
        for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        where FileManager.default.isExecutableFile(atPath: p) { return p }
        return nil
    }

    let pid: pid_t
    private let toChrome: Int32
    private let fromChrome: Int32
    private var buffer: [UInt8] = []
    private var nextID = 1
    private var events: [[String: Any]] = []
    private(set) var sessionID = ""
    let profile: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(executable: String, logPath: String, width: Int = 1280, height: Int = 900) throws {
        profile = TestEnvironment.makeTempDir("chromium-profile")
        var toFDs: [Int32] = [0, 0]
        var fromFDs: [Int32] = [0, 0]
        guard pipe(&toFDs) == 0, pipe(&fromFDs) == 0 else { throw Failure(description: "pipe failed") }
        // Our ends must not leak into the child (only its dup2'd fds 3 and 4 may).
        for fd in toFDs + fromFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toFDs[0], 3)
        posix_spawn_file_actions_adddup2(&actions, fromFDs[1], 4)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let args = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--password-store=basic", "--remote-debugging-pipe", "--user-data-dir=\(profile)",
            "--window-size=\(width),\(height)", "about:blank",
        ]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var envp: [UnsafeMutablePointer<CChar>?] = ProcessInfo.processInfo.environment.map { strdup("\($0)=\($1)") } + [nil]
        defer { for p in envp { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, &argv, &envp)
        close(toFDs[0])
        close(fromFDs[1])
        guard rc == 0 else { throw Failure(description: "posix_spawn \(executable): \(rc)") }
        pid = child
        toChrome = toFDs[1]
        fromChrome = fromFDs[0]
    }

    func stop() {
        close(toChrome)
        close(fromChrome)
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(atPath: profile)
    }

    private func send(_ o: [String: Any]) throws {
        var bytes = Array(try JSONSerialization.data(withJSONObject: o))
        bytes.append(0)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(toChrome, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failure(description: "write to chromium failed") }
            off += n
        }
    }

    /// The next message, or nil at the deadline.
    private func receive(until deadline: Date) throws -> [String: Any]? {
        while true {
            if let nul = buffer.firstIndex(of: 0) {
                let msg = Array(buffer[..<nul])
                buffer.removeSubrange(...nul)
                return (try JSONSerialization.jsonObject(with: Data(msg))) as? [String: Any] ?? [:]
            }
            let ms = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            guard ms > 0 else { return nil }
            var p = pollfd(fd: fromChrome, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, ms)
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = read(fromChrome, &chunk, chunk.count)
            guard n > 0 else { throw Failure(description: "chromium closed the pipe") }
            buffer += chunk[..<n]
        }
    }

    /// A command (on the page's session once attached); its `result`.
    @discardableResult
    func call(_ method: String, _ params: [String: Any] = [:], browser: Bool = false, timeout: Double = 30) throws -> [String: Any] {
        let id = nextID
        nextID += 1
        var o: [String: Any] = ["id": id, "method": method, "params": params]
        if !browser, !sessionID.isEmpty { o["sessionId"] = sessionID }
        try send(o)
        let deadline = Date().addingTimeInterval(timeout)
        while let m = try receive(until: deadline) {
            if m["id"] as? Int == id {
                if let e = m["error"] { throw Failure(description: "\(method): \(e)") }
                return m["result"] as? [String: Any] ?? [:]
            }
            if m["method"] != nil { events.append(m) }
        }
        throw Failure(description: "\(method): no answer in \(timeout) s")
    }

    /// Opens a page and attaches to it (every later call goes to it).
    func openPage() throws {
        let t = try call("Target.createTarget", ["url": "about:blank"], browser: true)
        guard let target = t["targetId"] as? String else { throw Failure(description: "no targetId") }
        let a = try call("Target.attachToTarget", ["targetId": target, "flatten": true], browser: true)
        guard let s = a["sessionId"] as? String else { throw Failure(description: "no sessionId") }
        sessionID = s
        try call("Page.enable")
        try call("Runtime.enable")
    }

    /// Waits for the page's next `Page.loadEventFired` after `action`.
    func load(timeout: Double = 60, _ action: () throws -> Void) throws {
        events.removeAll()
        try action()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if events.contains(where: { $0["method"] as? String == "Page.loadEventFired" && $0["sessionId"] as? String == sessionID }) {
                return
            }
            guard let m = try receive(until: deadline) else { throw Failure(description: "page did not load in \(timeout) s") }
            if m["method"] != nil { events.append(m) }
        }
    }

    func navigate(_ url: String) throws { try load { try call("Page.navigate", ["url": url]) } }

    /// Evaluates `js` in the page; its value (JSON-able).
    func evaluate(_ js: String) throws -> Any? {
        let r = try call("Runtime.evaluate", ["expression": js, "returnByValue": true, "awaitPromise": true])
        if let ex = r["exceptionDetails"] { throw Failure(description: "javascript threw: \(ex)") }
        return (r["result"] as? [String: Any])?["value"]
    }

    /// Clicks what `selector` finds and waits for the page that loads.
    func click(_ selector: String) throws {
        let sel = String(decoding: try JSONSerialization.data(withJSONObject: [selector]), as: UTF8.self)
        try load {
            let found = try evaluate("(() => { const e = document.querySelector(\(sel)[0]); if (!e) return false; e.click(); return true })()")
            guard found as? Bool == true else { throw Failure(description: "nothing matches \(selector)") }
        }
    }

    var text: String { (try? evaluate("document.body.innerText")) as? String ?? "" }
    var html: String { (try? evaluate("document.documentElement.outerHTML")) as? String ?? "" }
    var path: String { (try? evaluate("location.pathname + location.search")) as? String ?? "" }

    /// A PNG of the whole page, written to `file`.
    func screenshot(_ file: String) throws {
        let r = try call("Page.captureScreenshot", ["format": "png", "captureBeyondViewport": true])
        guard let b64 = r["data"] as? String, let data = Data(base64Encoded: b64) else { throw Failure(description: "no screenshot") }
        try data.write(to: URL(fileURLWithPath: file))
    }
}
