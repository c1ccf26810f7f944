import Foundation
import PayfleetAMQP
import PayfleetCLI
import PayfleetCore
import PayfleetStore
import PayfleetTestKit
import PayfleetWorker
import Testing

/// The password every console test logs in with, and its `console.password_file` line, made
/// by Python's hashlib (an independent PBKDF2): salt "payfleet-test-salt", 1000 iterations.
enum ConsoleFixture {
    static let password = "correct horse battery staple"
    static let hashLine = "pbkdf2-sha256$1000$cGF5ZmxlZXQtdGVzdC1zYWx0$LlNWf3k/ylcKYQ1pex9jpI+ATfSmjtI8gjXZcLOh74g="

    /// The demo worker's fleet with a `console:` section whose password file holds `hashLine`.
    static func fleet(prefix: String, _ body: (WorkerProcess) async throws -> Void) async throws {
        var o = WorkerProcess.Options(
            executable: "payfleet-demo-worker", section: "demo-worker", prefix: prefix,
            routingKeys: PaymentEvent.EventType.allCases.map(\.rawValue))
        o.topLevelYAML = "console:\n  password_file: {dir}/console.password\n  port: 0"
        try await WorkerProcess.with(o) { fleet in
            try (hashLine + "\n").write(toFile: fleet.dir + "/console.password", atomically: true, encoding: .utf8)
            try await body(fleet)
        }
    }
}

/// `payfleet console` started as a real process on a free loopback port.
struct ConsoleProcess {
    let child: ChildProcess
    let base: String

    static func start(_ fleet: WorkerProcess) async throws -> ConsoleProcess {
        let child = try ChildProcess(
            executable: TestEnvironment.binDir + "/payfleet", arguments: ["console", "--config", fleet.configPath],
            logPath: fleet.dir + "/console.log")
        var port: Int?
        _ = try await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            if let r = child.log.range(of: "payfleet console listening on http://127.0.0.1:") {
                port = Int(child.log[r.upperBound...].prefix { $0.isNumber })
            }
            return port != nil || !child.isRunning
        }
        guard let port else {
            await child.killNow()
            throw CLIFailure("the console did not start: \(child.log)")
        }
        return ConsoleProcess(child: child, base: "http://127.0.0.1:\(port)")
    }

    func stop() async {
        child.signal(SIGTERM)
        if await child.wait(timeout: .seconds(15)) == nil { await child.killNow() }
    }
}

/// One HTTP exchange made with curl (no redirects followed, no cookie jar: the test holds the cookie).
struct HTTPExchange {
    var status: Int
    var headers: String
    var body: String

    func header(_ name: String) -> String? {
        for line in headers.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == name.lowercased() { return parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    static func run(
        _ method: String, _ url: String, form: [(String, String)]? = nil, cookie: String? = nil, extra: [String] = [],
        dir: String
    ) async throws -> HTTPExchange {
        let tag = UUID().uuidString.prefix(8)
        let (h, b) = (dir + "/http-\(tag).headers", dir + "/http-\(tag).body")
        var args = ["-s", "-S", "-X", method, "-D", h, "-o", b, "-w", "%{http_code}", "--max-time", "120"]
        if let cookie { args += ["-H", "Cookie: \(ConsoleAuth.cookieName)=\(cookie)"] }
        args += extra
        if let form {
            if form.isEmpty { args += ["-d", ""] }
            for (k, v) in form { args += ["--data-urlencode", "\(k)=\(v)"] }
        }
        args.append(url)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        while p.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        let code = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return HTTPExchange(
            status: Int(code) ?? 0, headers: (try? String(contentsOfFile: h, encoding: .utf8)) ?? "",
            body: (try? String(contentsOfFile: b, encoding: .utf8)) ?? "")
    }

    /// The session cookie a successful login sets.
    var sessionCookie: String? {
        guard let c = header("Set-Cookie"), c.hasPrefix(ConsoleAuth.cookieName + "=") else { return nil }
        let v = c.dropFirst(ConsoleAuth.cookieName.count + 1).prefix { $0 != ";" }
        return v.isEmpty ? nil : String(v)
    }

    /// The CSRF token of the first form on the page.
    var csrf: String? {
        guard let r = body.range(of: "name=\"csrf\" value=\"") else { return nil }
        return String(body[r.upperBound...].prefix { $0 != "\"" })
    }
}

/// Issue 18 item 5: `payfleet console`, a real process on loopback, against the private broker.
@Suite(.serialized)
struct ConsoleTests {
    static func audit(_ fleet: WorkerProcess) -> [[String: Any]] {
        (try? JSONLines.read(fleet.auditPath)) ?? []
    }

    @Test(
        "Headless Chromium: log in, find a dead-lettered event's group, replay it (confirm page), the DLQ depth goes to 0 and the audit line appears",
        .enabled(if: Chromium.executable != nil, "skipped: no chromium in /usr/bin (scripts/install-deps.sh installs Debian's chromium)"))
    func chromiumReplay() async throws {
        let chromium = try #require(Chromium.executable)
        let shots = TestEnvironment.repoRoot + "/.build/console-screenshots"
        try? FileManager.default.removeItem(atPath: shots)
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        try await ConsoleFixture.fleet(prefix: "console-ui") { fleet in
            try await fleet.declare()
            try fleet.start()
            // Fail 4 times (every attempt and retry tier), so the 5th, the replay, succeeds.
            let events = (0..<2).map { EventFactory.payment($0, prefix: fleet.name, metadata: ["demo_fault": "transient:4"]) }
            #expect(try await fleet.deadLetter(events, expectDLQ: 2))
            let console = try await ConsoleProcess.start(fleet)
            do { try await Self.drive(fleet, console, chromium: chromium, shots: shots, events: events) } catch {
                print("ConsoleTests: console log:\n\(console.child.log)")
                await console.stop()
                throw error
            }
            await console.stop()
        }
    }

    static func drive(_ fleet: WorkerProcess, _ console: ConsoleProcess, chromium: String, shots: String, events: [PaymentEvent]) async throws {
        do {
            let browser = try Chromium(executable: chromium, logPath: fleet.dir + "/chromium.log")
            let thread = BlockingThread(name: "chromium")
            defer {
                browser.stop()
                thread.shutdown()
            }
            let base = console.base
            let target = events[0].id
            // The DevTools calls block: on their own thread.
            let pages = try await thread.run { () -> [String: String] in
                var seen: [String: String] = [:]
                try browser.openPage()
                try browser.navigate(base + "/")  // not logged in: the login page
                seen["start"] = browser.path
                try browser.screenshot(shots + "/1-login.png")
                _ = try browser.evaluate("""
                    document.getElementById('operator').value = 'alice';
                    document.getElementById('password').value = \(Self.js(ConsoleFixture.password));
                    """)
                try browser.click("#login")
                seen["status"] = browser.text
                try browser.screenshot(shots + "/2-status.png")
                try browser.navigate(base + "/dlq?worker=demo-worker")
                seen["groups"] = browser.text
                try browser.screenshot(shots + "/3-groups.png")
                // The group whose letters include the event: its row's replay button.
                let gid = try browser.evaluate("""
                    (() => { const r = [...document.querySelectorAll('#groups tbody tr')].find(r => r.textContent.includes(\(Self.js(target))));
                      return r ? r.querySelector('code').textContent : null })()
                    """) as? String ?? ""
                seen["group"] = gid
                // Mark the group under investigation (form, confirm page), as the operator would first.
                try browser.click("#status-\(gid)")
                _ = try browser.evaluate("""
                    document.querySelector('select[name=state]').value = 'investigating';
                    document.querySelector('input[name=note]').value = 'INC-7: CRM timeouts <after deploy>';
                    """)
                try browser.click("#set-status")
                seen["status-confirm"] = browser.text
                try browser.click("#confirm")
                seen["groups-status"] = browser.text
                try browser.screenshot(shots + "/3b-groups-investigating.png")
                try browser.click("#replay-\(gid)")
                seen["confirm"] = browser.text
                try browser.screenshot(shots + "/4-confirm.png")
                try browser.click("#confirm")
                seen["replayed"] = browser.text
                try browser.screenshot(shots + "/5-replayed.png")
                try browser.navigate(base + "/dlq?worker=demo-worker")
                seen["depth"] = try browser.evaluate("document.getElementById('dlq-depth').textContent") as? String ?? ""
                try browser.screenshot(shots + "/6-groups-after.png")
                try browser.navigate(base + "/audit")
                seen["audit"] = browser.text
                try browser.screenshot(shots + "/7-audit.png")
                // Trace search for the replayed event.
                try browser.navigate(base + "/trace")
                _ = try browser.evaluate("document.getElementById('trace-id').value = \(Self.js(target))")
                try browser.click("#trace-go")
                seen["trace"] = browser.text
                try browser.screenshot(shots + "/8-trace.png")
                return seen
            }
            print("ConsoleTests: screenshots in \(shots)")
            #expect(pages["start"] == "/login")
            #expect(pages["status"]?.contains(fleet.name) == true, "\(pages["status"] ?? "")")
            #expect(pages["status"]?.contains("alice") == true)
            #expect(pages["groups"]?.contains("DemoTransient") == true, "\(pages["groups"] ?? "")")
            // The group the CLI lists for these letters.
            let cli = try await fleet.cli(["dlq", "list", fleet.name, "--group-by", "error", "--json"])
            let groupIDs = ((cli.json as? [[String: Any]]) ?? []).compactMap { $0["fingerprint"] as? String }
            #expect(groupIDs.isEmpty, "the DLQ should be empty after the replay: \(cli.stdout)")
            let gid = try #require(pages["group"])
            #expect(gid.count == 8)
            #expect(pages["status-confirm"]?.contains("to investigating (alice) — INC-7: CRM timeouts <after deploy>?") == true, "\(pages["status-confirm"] ?? "")")
            #expect(pages["groups-status"]?.contains("investigating (alice)") == true, "\(pages["groups-status"] ?? "")")
            #expect(pages["groups-status"]?.contains("INC-7: CRM timeouts <after deploy>") == true)
            #expect(pages["confirm"]?.contains("2 of 2 dead letters would be republished") == true, "\(pages["confirm"] ?? "")")
            #expect(pages["replayed"]?.contains("Replayed 2 of 2 dead letters") == true, "\(pages["replayed"] ?? "")")
            #expect(pages["depth"] == "0")
            #expect(pages["audit"]?.contains("dlq.replay") == true && pages["audit"]?.contains("alice") == true)
            // The broker agrees, the worker applied both, and the audit file has the CLI's lines.
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(try await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                try fleet.appliedIDs().ids.isSuperset(of: Set(events.map(\.id)))
            })
            #expect(try fleet.appliedIDs().rows == 2)
            let cliTrace = try await fleet.cli(["trace", target])
            if cliTrace.status == 0, let first = cliTrace.stdout.split(separator: "\n").first {
                #expect(pages["trace"]?.contains(String(first)) == true, "\(pages["trace"] ?? "")")
            }
            let status = try #require(Self.audit(fleet).first { $0["action"] as? String == "dlq.group_status" })
            #expect(status["state"] as? String == "investigating" && status["by"] as? String == "alice")
            #expect(status["note"] as? String == "INC-7: CRM timeouts <after deploy>" && status["console_operator"] as? String == "alice")
            let lines = Self.audit(fleet).filter { $0["action"] as? String == "dlq.replay" }
            #expect(lines.map { $0["outcome"] as? String ?? "" } == ["started", "republished", "completed"], "\(lines)")
            let done = try #require(lines.last)
            #expect(Set(done["ids"] as? [String] ?? []) == Set(events.map(\.id)))
            #expect(done["console_operator"] as? String == "alice")
            #expect(done["via"] as? String == "console")
            #expect(done["command"] as? String == "dlq replay demo-worker --error=\(gid)")
            #expect(done["worker"] as? String == fleet.name)
            for f in ["1-login", "2-status", "3-groups", "3b-groups-investigating", "4-confirm", "5-replayed", "6-groups-after", "7-audit", "8-trace"] {
                let png = FileManager.default.contents(atPath: shots + "/\(f).png") ?? Data()
                #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(f).png is not a PNG")
            }
        }
    }

    /// A JavaScript string literal.
    static func js(_ s: String) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: [s]), as: UTF8.self).dropFirst().dropLast().description
    }

    @Test("No session without the password; POSTs without or with a wrong CSRF token, or cross-origin, are 403 and change nothing; hostile ids and error texts are escaped")
    func loginCSRFAndEscaping() async throws {
        try await ConsoleFixture.fleet(prefix: "console-http") { fleet in
            try await fleet.declare()
            // A dead letter whose id and error are hostile HTML, straight into the DLQ (no worker runs).
            let hostileID = "evt_<img src=x onerror=alert(1)>\"'"
            let hostileError = "Hostile: <script>alert(\"pwn\")</script> & <b>bold</b>"
            let pub = fleet.publisher()
            defer { pub.close() }
            #expect(await pub.waitUntilConnected())
            let body = #"{"id":"x","type":"payment.succeeded","merchant_id":"m_<i>evil</i>"}"#
            try await pub.publish(AMQPOutgoing(
                exchange: "", routingKey: fleet.topology.dlq,
                message: AMQPMessage(
                    body: Array(body.utf8), messageID: hostileID,
                    headers: [PayfleetHeaders.error: .string(hostileError), PayfleetHeaders.attempts: .int(4)])))
            #expect(try await eventually(timeout: .seconds(10), every: .milliseconds(100)) {
                try await fleet.depth(fleet.topology.dlq) == 1
            })
            let console = try await ConsoleProcess.start(fleet)
            do { try await Self.exercise(fleet, console, hostileID: hostileID, hostileError: hostileError) } catch {
                print("ConsoleTests: console log:\n\(console.child.log)")
                await console.stop()
                throw error
            }
            await console.stop()
        }
    }

    static func exercise(_ fleet: WorkerProcess, _ console: ConsoleProcess, hostileID: String, hostileError: String) async throws {
        do {
            let base = console.base
            let dir = fleet.dir
            func http(_ m: String, _ path: String, form: [(String, String)]? = nil, cookie: String? = nil, extra: [String] = []) async throws -> HTTPExchange {
                try await HTTPExchange.run(m, base + path, form: form, cookie: cookie, extra: extra, dir: dir)
            }

            // Not logged in: every page sends to the login page; a made-up cookie is no session.
            var r = try await http("GET", "/dlq?worker=demo-worker")
            #expect(r.status == 303 && r.header("Location") == "/login")
            r = try await http("GET", "/", cookie: String(repeating: "a", count: 64))
            #expect(r.status == 303 && r.header("Location") == "/login")
            // The wrong password: 401, no cookie.
            r = try await http("POST", "/login", form: [("operator", "mallory"), ("password", "wrong password")])
            #expect(r.status == 401)
            #expect(r.header("Set-Cookie") == nil)
            #expect(r.body.contains("Wrong password"))
            // Right password, but no name: refused too.
            r = try await http("POST", "/login", form: [("operator", ""), ("password", ConsoleFixture.password)])
            #expect(r.status == 400 && r.header("Set-Cookie") == nil)
            // Right: a session cookie, HttpOnly and SameSite=Strict.
            r = try await http("POST", "/login", form: [("operator", "bob"), ("password", ConsoleFixture.password)])
            #expect(r.status == 303 && r.header("Location") == "/")
            let setCookie = r.header("Set-Cookie") ?? ""
            #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict"), "\(setCookie)")
            let cookie = try #require(r.sessionCookie)

            // The groups page: the hostile texts escaped, never raw.
            let page = try await http("GET", "/dlq?worker=demo-worker", cookie: cookie)
            #expect(page.status == 200)
            #expect(page.header("Content-Security-Policy")?.contains("default-src 'none'") == true)
            #expect(!page.body.contains("<script>alert"), "raw script in the page")
            #expect(!page.body.contains("<img src=x"), "raw img in the page")
            #expect(!page.body.contains("<b>bold</b>"))
            // (The group shows the normalized error: the quoted value becomes <v>, escaped too.)
            #expect(page.body.contains("Hostile: &lt;script&gt;alert(&quot;&lt;v&gt;&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"), "\(page.body)")
            #expect(page.body.contains("evt_&lt;img src=x onerror=alert(1)&gt;&quot;&#39;"))
            let csrf = try #require(page.csrf)
            let group = try #require(ErrorFingerprint(hostileError).id as String?)
            #expect(page.body.contains(group))
            // The letter's page: id, error and body escaped.
            let show = try await http("GET", "/dlq/show?worker=demo-worker&id=" + hostileID.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!, cookie: cookie)
            #expect(show.status == 200, "\(show.body)")
            #expect(!show.body.contains("<script>alert") && !show.body.contains("<img src=x") && !show.body.contains("<i>evil</i>"))
            #expect(show.body.contains("m_&lt;i&gt;evil&lt;/i&gt;"))
            #expect(show.body.contains("Hostile: &lt;script&gt;alert(&quot;pwn&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"), "\(show.body)")

            // Actions without the token, with a wrong one, without a session, or cross-origin: 403, nothing done.
            let replay = [("worker", "demo-worker"), ("group", group), ("confirmed", "yes")]
            let wrong = String(repeating: "0", count: 64)
            for (form, c, extra) in [
                (replay, Optional(cookie), [String]()), (replay + [("csrf", wrong)], cookie, []), (replay + [("csrf", "")], cookie, []),
                (replay + [("csrf", csrf)], nil, []),
                (replay + [("csrf", csrf)], cookie, ["-H", "Origin: http://evil.example"]),
                ([("worker", "demo-worker"), ("group", group), ("state", "ignored"), ("confirmed", "yes")], cookie, []),
            ] {
                let path = form.contains { $0.0 == "state" } ? "/dlq/group-status" : "/dlq/replay"
                let a = try await http("POST", path, form: form, cookie: c, extra: extra)
                #expect(a.status == 403, "\(path) \(form) \(extra): \(a.status) \(a.body)")
            }
            #expect(try await fleet.depth(fleet.topology.dlq) == 1)
            #expect(Self.audit(fleet).isEmpty, "\(Self.audit(fleet))")

            // With the token: the confirm page first (nothing done), then the status is set and audited.
            let statusForm = [("worker", "demo-worker"), ("group", group), ("state", "ignored"), ("note", "<i>test</i> data"), ("csrf", csrf)]
            let confirm = try await http("POST", "/dlq/group-status", form: statusForm, cookie: cookie)
            #expect(confirm.status == 200 && confirm.body.contains("Confirm status"))
            #expect(confirm.body.contains("&lt;i&gt;test&lt;/i&gt; data") && !confirm.body.contains("<i>test</i>"))
            #expect(Self.audit(fleet).isEmpty)
            let applied = try await http("POST", "/dlq/group-status", form: statusForm + [("confirmed", "yes")], cookie: cookie)
            #expect(applied.status == 303, "\(applied.body)")
            let line = try #require(Self.audit(fleet).last)
            #expect(line["action"] as? String == "dlq.group_status")
            #expect(line["state"] as? String == "ignored" && line["note"] as? String == "<i>test</i> data")
            #expect(line["group"] as? String == group && line["console_operator"] as? String == "bob")
            let after = try await http("GET", "/dlq?worker=demo-worker", cookie: cookie)
            #expect(after.body.contains("ignored") && after.body.contains("&lt;i&gt;test&lt;/i&gt; data"))
            #expect(try await fleet.depth(fleet.topology.dlq) == 1)

            // Replay of the one letter by its (hostile) id: the confirm page lists it escaped, then it moves.
            let one = [("worker", "demo-worker"), ("id", hostileID), ("csrf", csrf)]
            let dry = try await http("POST", "/dlq/replay", form: one, cookie: cookie)
            #expect(dry.status == 200 && dry.body.contains("1 of 1 dead letters would be republished"), "\(dry.body)")
            #expect(dry.body.contains("<li>evt_&lt;img src=x onerror=alert(1)&gt;&quot;&#39;</li>") && !dry.body.contains("<img src=x"))
            #expect(try await fleet.depth(fleet.topology.dlq) == 1)
            let moved = try await http("POST", "/dlq/replay", form: one + [("confirmed", "yes")], cookie: cookie)
            #expect(moved.status == 200 && moved.body.contains("Replayed 1 of 1 dead letters"), "\(moved.body)")
            #expect(try await fleet.depth(fleet.topology.dlq) == 0)
            #expect(try await fleet.depth(fleet.topology.queue(partition: 0)) == 1)
            let replayed = try #require(Self.audit(fleet).last { $0["action"] as? String == "dlq.replay" })
            #expect(replayed["outcome"] as? String == "completed" && replayed["ids"] as? [String] == [hostileID])
            #expect(replayed["command"] as? String == "dlq replay demo-worker --id=\(hostileID)" && replayed["console_operator"] as? String == "bob")

            // Logged out: the cookie is no session any more.
            r = try await http("POST", "/logout", form: [("csrf", csrf)], cookie: cookie)
            #expect(r.status == 303)
            r = try await http("GET", "/", cookie: cookie)
            #expect(r.status == 303 && r.header("Location") == "/login")
        }
    }
}

extension ConsoleTests {
    /// HTML escaping written out here, not the console's: the expected text of a page.
    static func escaped(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&#39;")
    }

    @Test("Edit and replay through the preview and confirm pages, audited as dlq.edit; the trace and settlement pages answer what the CLI answers, escaped")
    func editTraceSettlement() async throws {
        try await ConsoleFixture.fleet(prefix: "console-edit") { fleet in
            try await fleet.declare()
            try fleet.start()
            let broken = EventFactory.payment(7, prefix: fleet.name, amount: -5)
            #expect(try await fleet.deadLetter([broken], expectDLQ: 1))
            let console = try await ConsoleProcess.start(fleet)
            do { try await Self.editAndPages(fleet, console, broken: broken) } catch {
                print("ConsoleTests: console log:\n\(console.child.log)")
                await console.stop()
                throw error
            }
            await console.stop()
        }
    }

    static func editAndPages(_ fleet: WorkerProcess, _ console: ConsoleProcess, broken: PaymentEvent) async throws {
        let base = console.base
        let dir = fleet.dir
        func http(_ m: String, _ path: String, form: [(String, String)]? = nil, cookie: String? = nil) async throws -> HTTPExchange {
            try await HTTPExchange.run(m, base + path, form: form, cookie: cookie, dir: dir)
        }
        let login = try await http("POST", "/login", form: [("operator", "carol"), ("password", ConsoleFixture.password)])
        let cookie = try #require(login.sessionCookie)
        let form = try await http("GET", "/dlq/edit?worker=demo-worker&id=\(broken.id)", cookie: cookie)
        #expect(form.status == 200, "\(form.body)")
        let csrf = try #require(form.csrf)
        let edit = [("worker", "demo-worker"), ("id", broken.id), ("sets", "amount.value=500"), ("csrf", csrf)]
        // The preview: the change shown, nothing done.
        let preview = try await http("POST", "/dlq/edit", form: edit, cookie: cookie)
        #expect(preview.status == 200 && preview.body.contains("Confirm edit"), "\(preview.body)")
        #expect(preview.body.contains("<td>amount.value</td><td>-5</td><td>500</td>"), "\(preview.body)")
        #expect(try await fleet.depth(fleet.topology.dlq) == 1)
        #expect(!ConsoleTests.audit(fleet).contains { $0["action"] as? String == "dlq.edit" })
        // A bad edit is refused with the CLI's message, and changes nothing.
        let bad = try await http("POST", "/dlq/edit", form: [("worker", "demo-worker"), ("id", broken.id), ("sets", "amount.value=<b>"), ("csrf", csrf), ("confirmed", "yes")], cookie: cookie)
        #expect(bad.status == 400 && !bad.body.contains("=<b>") && bad.body.contains("&lt;b&gt;"), "\(bad.body)")
        #expect(try await fleet.depth(fleet.topology.dlq) == 1)
        // Confirmed: edited, replayed, applied with the new amount, audited as the CLI does.
        let done = try await http("POST", "/dlq/edit", form: edit + [("confirmed", "yes")], cookie: cookie)
        #expect(done.status == 200 && done.body.contains("Edited \(broken.id), validated and replayed"), "\(done.body)")
        #expect(try await fleet.depth(fleet.topology.dlq) == 0)
        #expect(try await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            try fleet.appliedIDs().ids.contains(broken.id)
        })
        let amount = try fleet.database()?.queryOne("SELECT amount FROM applied WHERE event_id = ?", [.text(broken.id)])?.int(0)
        #expect(amount == 500)
        let line = try #require(ConsoleTests.audit(fleet).last { $0["action"] as? String == "dlq.edit" })
        #expect(line["outcome"] as? String == "republished" && line["ids"] as? [String] == [broken.id])
        #expect(line["console_operator"] as? String == "carol" && line["via"] as? String == "console")
        #expect(line["command"] as? String == "dlq edit demo-worker --set=amount.value=500 -- \(broken.id)")
        #expect((line["changes"] as? [[String: Any]])?.first?["path"] as? String == "amount.value")

        // Trace: what `payfleet trace ID` prints, escaped; a hostile query echoed escaped.
        let cli = try await fleet.cli(["trace", broken.id])
        let trace = try await http("GET", "/trace?id=\(broken.id)", cookie: cookie)
        if cli.status == 0 {
            #expect(trace.status == 200)
            let first = cli.stdout.split(separator: "\n").first.map(String.init) ?? ""
            #expect(trace.body.contains(Self.escaped(first)), "\(first)\n\(trace.body)")
        } else {
            #expect(trace.status == 400, "\(trace.body)")
        }
        let hostile = try await http("GET", "/trace?id=%3Cscript%3Ealert(1)%3C/script%3E", cookie: cookie)
        #expect(!hostile.body.contains("<script>alert(1)"), "\(hostile.body)")
        #expect(hostile.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))

        // Settlement: the page frames the report; the report is the CLI's HTML (or its refusal).
        let page = try await http("GET", "/settlement?date=2026-11-20", cookie: cookie)
        #expect(page.status == 200 && page.body.contains("/settlement/report?date=2026-11-20"), "\(page.body)")
        let badDate = try await http("GET", "/settlement/report?date=%3Cb%3Ex", cookie: cookie)
        #expect(badDate.status == 400 && badDate.body.contains("&lt;b&gt;x") && !badDate.body.contains("<b>x"), "\(badDate.body)")
        let report = try await http("GET", "/settlement/report?date=2026-11-20", cookie: cookie)
        let cliReport = try await fleet.cli(["settlement", "report", "--date", "2026-11-20", "--format", "html"])
        #expect(report.status == (cliReport.status == 0 ? 200 : 400), "\(report.body) / \(cliReport.stderr)")
        if cliReport.status == 0 { #expect(report.body.lowercased().contains("<html")) }
        #expect(try await http("GET", "/settlement/report?date=2026-11-20").status == 303)
    }
}

/// The pieces without a broker: the password hash, the config section's validation, escaping.
struct ConsoleUnitTests {
    @Test("PBKDF2-HMAC-SHA-256 gives RFC 7914 §11's vectors (as Python's hashlib computes them)")
    func pbkdf2Vectors() {
        let a = PasswordHash.pbkdf2(Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1, length: 64)
        #expect(a.map { String(format: "%02x", $0) }.joined()
            == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783")
        let b = PasswordHash.pbkdf2(Array("Password".utf8), salt: Array("NaCl".utf8), iterations: 80_000, length: 64)
        #expect(b.map { String(format: "%02x", $0) }.joined()
            == "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d")
        let h = try? PasswordHash(parsing: ConsoleFixture.hashLine)
        #expect(h?.matches(ConsoleFixture.password) == true)
        #expect(h?.matches(ConsoleFixture.password + " ") == false)
        let made = PasswordHash.make("another long password", iterations: 1_000)
        #expect((try? PasswordHash(parsing: made.line)) == made)
        #expect(made.matches("another long password") && !made.matches("another long passwore"))
    }

    @Test("console: refused with a clear message — no secret, both secrets, an inline secret, a bad hash, a short token, a remote host, an unknown key")
    func configRefusals() throws {
        let dir = TestEnvironment.makeTempDir("console-config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try (ConsoleFixture.hashLine + "\n").write(toFile: dir + "/pw", atomically: true, encoding: .utf8)
        try "pbkdf2-sha256$10$c2FsdA==$aGFzaA==\n".write(toFile: dir + "/badpw", atomically: true, encoding: .utf8)
        try "short\n".write(toFile: dir + "/tok", atomically: true, encoding: .utf8)
        func read(_ yaml: String) throws -> ConsoleConfiguration {
            try ConsoleConfiguration.read(try ConfigSection.parse(yaml: yaml.replacingOccurrences(of: "{dir}", with: dir)))
        }
        func refused(_ yaml: String, _ key: String, _ text: String) {
            do {
                _ = try read(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(key) && "\(error)".contains(text), "\(error)")
            }
        }
        refused("console: {}\n", "console.password_file", "needs a login")
        refused("console:\n  password_file: {dir}/pw\n  token_file: {dir}/tok\n", "console.token_file", "not both")
        refused("console:\n  password: hunter2\n", "console.password", "not inline")
        refused("console:\n  password_file: {dir}/badpw\n", "console.password_file", "iteration count")
        refused("console:\n  password_file: {dir}/missing\n", "console.password_file", "cannot read")
        refused("console:\n  token_file: {dir}/tok\n", "console.token_file", "at least 32")
        refused("console:\n  password_file: {dir}/pw\n  host: 0.0.0.0\n", "console.host", "not a loopback address")
        refused("console:\n  password_file: {dir}/pw\n  colour: blue\n", "console.colour", "unknown key")
        refused("console:\n  password_file: {dir}/pw\n  port: 70000\n", "console.port", "outside")
        let ok = try read("console:\n  password_file: {dir}/pw\n  host: 0.0.0.0\n  allow_remote: true\n  session_ttl: 30m\n")
        #expect(ok.host == "0.0.0.0" && ok.port == 9180 && ok.sessionTTLMS == 1_800_000)
        let d = try read("console:\n  password_file: {dir}/pw\n")
        #expect(d.host == "127.0.0.1" && !d.allowRemote)
    }

    @Test("Sessions: a token login compares the token, a session ends at its expiry or logout, the CSRF token is the session's")
    func sessions() {
        let token = String(repeating: "t0k3n-", count: 6)
        let auth = ConsoleAuth(credential: .token(Array(token.utf8)), ttlMS: 60_000)
        #expect(auth.check(token))
        #expect(!auth.check(token + "x") && !auth.check(String(token.dropLast())) && !auth.check(""))
        let t0 = Date()
        let s = auth.open(operatorName: "dora", now: t0)
        #expect(s.id.count == 64 && s.csrf.count == 64 && s.id != s.csrf)
        #expect(auth.session(s.id, now: t0.addingTimeInterval(59))?.operatorName == "dora")
        #expect(auth.session(s.id, now: t0.addingTimeInterval(61)) == nil)
        #expect(auth.session(s.id, now: t0) == nil, "an expired session is gone for good")
        let s2 = auth.open(operatorName: "dora")
        #expect(ConsoleAuth.csrfMatches(s2, s2.csrf) && !ConsoleAuth.csrfMatches(s2, s.csrf) && !ConsoleAuth.csrfMatches(s2, nil))
        auth.close(s2.id)
        #expect(auth.session(s2.id) == nil)
    }

    @Test("payfleet console hash-password: a line Python's hashlib verifies; a short password refused")
    func hashPassword() async throws {
        let dir = TestEnvironment.makeTempDir("console-hash")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func run(_ stdin: String) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestEnvironment.binDir + "/payfleet")
            p.arguments = ["console", "hash-password"]
            let input = Pipe()
            let output = Pipe()
            p.standardInput = input
            p.standardOutput = output
            p.standardError = output
            try p.run()
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        let (status, line) = try run("a long enough password\n")
        #expect(status == 0, "\(line)")
        let parts = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "$").map(String.init)
        #expect(parts.count == 4 && parts[0] == "pbkdf2-sha256" && parts[1] == "210000")
        // Python recomputes the hash from the salt: an independent PBKDF2.
        let py = Process()
        py.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        py.arguments = ["-c", "import sys,hashlib,base64; _,n,s,h=sys.argv[1].strip().split('$'); "
            + "print(base64.b64encode(hashlib.pbkdf2_hmac('sha256', b'a long enough password', base64.b64decode(s), int(n), len(base64.b64decode(h)))).decode() == h)", line]
        let out = Pipe()
        py.standardOutput = out
        try py.run()
        py.waitUntilExit()
        #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "True")
        let (shortStatus, shortOut) = try run("short\n")
        #expect(shortStatus != 0 && shortOut.contains("at least 12 characters"), "\(shortOut)")
    }

    @Test("Escaping: every character that matters in HTML text and quoted attributes")
    func escaping() {
        #expect(ConsoleHTML.esc(#"<a href="x" onclick='y'>&`</a>"#)
            == "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&#96;&lt;/a&gt;")
        #expect(ConsoleHTML.esc("a\u{1B}[31mb") == "a\u{FFFD}[31mb")
        #expect(ConsoleApp.parseForm("a=1+2&b=%3Cx%3E&c=&d") == ["a": "1 2", "b": "<x>", "c": "", "d": ""])
    }
}
