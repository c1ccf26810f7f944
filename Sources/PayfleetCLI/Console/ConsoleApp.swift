import ArgumentParser
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetWorker

/// The operator's web console (`payfleet console`): fleet status, dead-letter groups with
/// show / replay / edit / investigation status, trace search and the settlement report.
///
/// Every page runs the same code the matching `payfleet` command runs (the command structs
/// are parsed from arguments and their `report()` / `listing()` / `perform()` called), so an
/// action does, and audits, exactly what the CLI does; the audit line additionally names the
/// console operator and the equivalent command (`AuditLog.console`). Every action is a POST
/// carrying the session's CSRF token, and shows a confirm page before it does anything.
public struct ConsoleApp: Sendable {
    public let configPath: String
    public let configuration: ConsoleConfiguration
    let auth: ConsoleAuth
    /// SQLite reads (trace, settlement) run here, never on the cooperative pool.
    let blocking: BlockingThread

    public init(configPath: String, configuration: ConsoleConfiguration) {
        self.configPath = configPath
        self.configuration = configuration
        auth = ConsoleAuth(credential: configuration.credential, ttlMS: configuration.sessionTTLMS)
        blocking = BlockingThread(name: "console-sqlite")
    }

    /// What a handler answers: a page (rendered with the layout), a redirect, or a raw response.
    enum Reply {
        case page(title: String, body: String, status: HTTPResponse.Status = .ok)
        case redirect(String, cookie: String? = nil)
        case raw(Response)
    }

    public func buildApplication(
        host: String, port: Int, logger: Logger, onBound: (@Sendable (Int) -> Void)? = nil
    ) -> some ApplicationProtocol {
        let router = Router()
        let app = self
        router.get("/login") { req, _ in app.respond(req, session: nil, app.loginPage(message: nil)) }
        router.post("/login") { req, _ in await app.login(req) }
        router.post("/logout") { req, _ in
            await app.post(req) { s, _ in
                app.auth.close(s.id)
                return .redirect("/login", cookie: "\(ConsoleAuth.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
            }
        }
        router.get("/") { req, _ in await app.get(req) { s in try await app.statusPage(req, s) } }
        router.get("/dlq") { req, _ in await app.get(req) { s in try await app.dlqPage(req, s) } }
        router.get("/dlq/show") { req, _ in await app.get(req) { s in try await app.showPage(req, s) } }
        router.get("/dlq/edit") { req, _ in await app.get(req) { s in try await app.editForm(req, s) } }
        router.get("/dlq/group-status") { req, _ in await app.get(req) { s in try await app.groupStatusForm(req, s) } }
        router.post("/dlq/replay") { req, _ in await app.post(req) { s, f in try await app.replay(s, f) } }
        router.post("/dlq/edit") { req, _ in await app.post(req) { s, f in try await app.edit(s, f) } }
        router.post("/dlq/group-status") { req, _ in await app.post(req) { s, f in try await app.setGroupStatus(s, f) } }
        router.get("/audit") { req, _ in await app.get(req) { s in try await app.auditPage(s) } }
        router.get("/trace") { req, _ in await app.get(req) { s in try await app.tracePage(req, s) } }
        router.get("/settlement") { req, _ in await app.get(req) { s in try app.settlementPage(req, s) } }
        router.get("/settlement/report") { req, _ in await app.settlementReport(req) }
        router.get("/healthz") { _, _ in "ok\n" }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onBound?(channel.localAddress?.port ?? 0) }, logger: logger)
    }

    // MARK: Plumbing

    static let securityHeaders: [(HTTPField.Name, String)] = [
        (.cacheControl, "no-store"), (HTTPField.Name("X-Content-Type-Options")!, "nosniff"),
        // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on our own POSTs.
        (HTTPField.Name("Referrer-Policy")!, "same-origin"),
    ]

    func respond(_ req: Request, session: ConsoleAuth.Session?, _ reply: Reply) -> Response {
        switch reply {
        case .raw(let r): return r
        case .redirect(let to, let cookie):
            var h: HTTPFields = [.location: to]
            if let cookie { h[.setCookie] = cookie }
            for (k, v) in Self.securityHeaders { h[k] = v }
            return Response(status: .seeOther, headers: h)
        case .page(let title, let body, let status):
            let nonce = ConsoleAuth.randomToken()
            let html = ConsoleHTML.page(title: title, session: session, nonce: nonce, body: body)
            var h: HTTPFields = [.contentType: "text/html; charset=utf-8"]
            h[.contentSecurityPolicy] =
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-\(nonce)'; img-src 'self' data:; "
                + "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
            h[HTTPField.Name("X-Frame-Options")!] = "DENY"
            for (k, v) in Self.securityHeaders { h[k] = v }
            return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: html)))
        }
    }

    func session(_ req: Request) -> ConsoleAuth.Session? {
        auth.session(Self.cookie(req.headers[.cookie], ConsoleAuth.cookieName))
    }

    static func cookie(_ header: String?, _ name: String) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces)
            if kv.hasPrefix(name + "=") { return String(kv.dropFirst(name.count + 1)) }
        }
        return nil
    }

    /// A GET page behind the login: no session → the login page.
    func get(_ req: Request, _ body: (ConsoleAuth.Session) async throws -> Reply) async -> Response {
        guard let s = session(req) else { return respond(req, session: nil, .redirect("/login")) }
        do { return respond(req, session: s, try await body(s)) } catch {
            return respond(req, session: s, errorPage(error))
        }
    }

    /// A POST action: a live session, a same-origin request and the session's CSRF token, or
    /// 403 and nothing done.
    func post(_ req: Request, _ body: (ConsoleAuth.Session, [String: String]) async throws -> Reply) async -> Response {
        guard let s = session(req) else {
            return respond(req, session: nil, .page(title: "Forbidden", body: "<p class=\"bad\">Not logged in: <a href=\"/login\">log in</a>.</p>", status: .forbidden))
        }
        guard sameOrigin(req) else {
            return respond(req, session: s, .page(title: "Forbidden", body: "<p class=\"bad\">Cross-origin request refused.</p>", status: .forbidden))
        }
        let form: [String: String]
        do { form = try await Self.form(req) } catch {
            return respond(req, session: s, .page(title: "Bad request", body: "<p class=\"bad\">\(ConsoleHTML.esc("\(error)"))</p>", status: .badRequest))
        }
        guard ConsoleAuth.csrfMatches(s, form["csrf"]) else {
            return respond(req, session: s, .page(
                title: "Forbidden", body: "<p class=\"bad\">Missing or wrong CSRF token: nothing was done. Reload the page and try again.</p>",
                status: .forbidden))
        }
        do { return respond(req, session: s, try await body(s, form)) } catch {
            return respond(req, session: s, errorPage(error))
        }
    }

    /// A POST whose `Origin` (browsers send it) names another host than `Host` is refused.
    func sameOrigin(_ req: Request) -> Bool {
        guard let origin = req.headers[.origin] else { return true }
        guard let host = req.headers[HTTPField.Name("Host")!] ?? req.head.authority else { return false }
        return origin == "http://\(host)" || origin == "https://\(host)"
    }

    /// An `application/x-www-form-urlencoded` body (at most 256 KiB).
    static func form(_ req: Request) async throws -> [String: String] {
        var req = req
        let buffer = try await req.collectBody(upTo: 256 * 1024)
        return parseForm(String(buffer: buffer))
    }

    public static func parseForm(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            let k = decode(kv[0])
            out[k] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }

    static func param(_ req: Request, _ name: String) -> String? {
        req.uri.queryParameters.get(name).flatMap { $0.isEmpty ? nil : $0 }
    }

    func errorPage(_ error: Error) -> Reply {
        let message: String
        switch error {
        case let e as CLIFailure: message = e.message
        case let e as ConfigError: message = "\(e)"
        default: message = DLQCommand.message(for: error)
        }
        return .page(title: "Error", body: "<p class=\"bad err\">\(ConsoleHTML.esc(message))</p>", status: .badRequest)
    }

    func context() throws -> CLIContext { try CLIContext.load(configPath: configPath) }

    /// A worker named in a form or URL, checked against the configuration before it becomes
    /// a command's argument (so it can never be read as an option).
    func worker(_ name: String?) throws -> (section: String, rc: RuntimeConfiguration) {
        let ctx = try context()
        guard let name, !name.hasPrefix("-") else { throw CLIFailure("no worker given") }
        let rc = try ctx.worker(name)
        return (ctx.section(of: rc), rc)
    }

    /// Runs `body` with the audit lines it writes naming the console operator and `command`.
    func audited<T>(_ s: ConsoleAuth.Session, _ command: [String], _ body: () async throws -> T) async throws -> T {
        let ctx = ConsoleAuditContext(operatorName: s.operatorName, command: command.joined(separator: " "))
        return try await AuditLog.$console.withValue(ctx) { try await body() }
    }

    var configArgs: [String] { ["--config", configPath] }

    // MARK: Login

    func loginPage(message: String?, status: HTTPResponse.Status = .ok) -> Reply {
        let what = { if case .token = configuration.credential { return "Token" } else { return "Password" } }()
        return .page(
            title: "Log in",
            body: """
                \(message.map { "<p class=\"bad\">\(ConsoleHTML.esc($0))</p>" } ?? "")
                <form method="post" action="/login" class="box">
                <p><label>Your name (for the audit log)<br><input name="operator" id="operator" required maxlength="100" autocomplete="username"></label></p>
                <p><label>\(what)<br><input name="password" id="password" type="password" required autocomplete="current-password"></label></p>
                <p><button id="login">Log in</button></p>
                </form>
                """, status: status)
    }

    func login(_ req: Request) async -> Response {
        guard sameOrigin(req) else { return respond(req, session: nil, loginPage(message: "cross-origin login refused", status: .forbidden)) }
        guard let form = try? await Self.form(req) else { return respond(req, session: nil, loginPage(message: "bad request", status: .badRequest)) }
        let name: String?
        do { name = try DLQGroupStatus.checkText(form["operator"] ?? "", option: "your name", limit: 100) } catch {
            return respond(req, session: nil, loginPage(message: "\(error)", status: .badRequest))
        }
        let secret = form["password"] ?? ""
        let ok = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            // PBKDF2 takes a while: off the cooperative pool.
            blocking.submit { c.resume(returning: self.auth.check(secret)) }
        }
        guard ok, let name else {
            // A failed attempt costs a second: guessing over HTTP stays slow.
            try? await Task.sleep(for: .seconds(1))
            return respond(req, session: nil, loginPage(message: "Wrong password or token.", status: .unauthorized))
        }
        let s = auth.open(operatorName: name)
        let maxAge = Int(auth.ttl)
        return respond(req, session: s, .redirect(
            "/", cookie: "\(ConsoleAuth.cookieName)=\(s.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(maxAge)"))
    }

    // MARK: Status

    func statusPage(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let report = try await StatusCommand.parse(configArgs).report()
        func rate(_ d: Double?) -> String { d.map { String(format: "%.1f", $0) } ?? "-" }
        let e = ConsoleHTML.esc
        let rows = report.rows.map { r -> [String] in
            let dlq = "<a href=\"/dlq?\(e(ConsoleHTML.query([("worker", r.section)])))\">\(r.dlqDepth)</a>"
            let state = r.workerState == "ready" ? "<span class=\"ok\">ready</span>"
                : r.workerState == "unknown" ? "unknown" : "<span class=\"bad\">\(e(r.workerState))</span>"
            return [
                e(r.name), String(r.partition), r.exists ? String(r.ready) : "<span class=\"bad\">missing</span>",
                r.unacked.map(String.init) ?? "-", String(r.consumers), rate(r.publishRate), rate(r.deliverRate),
                String(r.retryDepth), r.dlqDepth > 0 ? "<b class=\"warn\">\(dlq)</b>" : dlq, state,
                "<span class=\"err\">\(e(r.lastError ?? ""))</span>",
            ]
        }
        var body = ConsoleHTML.table(
            id: "status",
            header: ["Worker", "P", "Ready", "Unacked", "Consumers", "In/s", "Out/s", "Retry", "DLQ", "State", "Last error"],
            rows: rows, numeric: [1, 2, 3, 4, 5, 6, 7, 8])
        if let i = report.ingest {
            body += "<p>ingest \(e(i.url)): \(i.ready ? "<span class=\"ok\">ready</span>" : "<span class=\"bad\">not ready</span>"), outbox pending \(i.outboxPending.map(String.init) ?? "-")</p>"
        }
        body += "<p>source: \(report.source == "management" ? "management API + AMQP" : "AMQP only")</p>"
        for n in report.notes { body += "<p class=\"warn\">note: \(e(n))</p>" }
        let p = report.problems
        body += p.isEmpty ? "<p class=\"ok\" id=\"health\">healthy</p>"
            : "<p class=\"bad\" id=\"health\">problems:</p><ul>" + p.map { "<li>\(e($0))</li>" }.joined() + "</ul>"
        return .page(title: "Fleet status", body: body)
    }

    // MARK: Dead letters

    func dlqPage(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let e = ConsoleHTML.esc
        guard let name = Self.param(req, "worker") else {
            let ctx = try context()
            let links = ctx.configuredWorkers.map { w in
                "<li><a href=\"/dlq?\(e(ConsoleHTML.query([("worker", w)])))\">\(e(w))</a></li>"
            }
            return .page(title: "Dead letters", body: "<p>Choose a worker:</p><ul>\(links.joined())</ul>")
        }
        let (section, rc) = try worker(name)
        let listing = try await DLQCommand.List.parse([section, "--group-by", "error"] + configArgs).listing()
        let groups = DLQCommand.groups(listing.letters)
        var rows: [[String]] = []
        for g in groups {
            let st = listing.statuses[g.fingerprint.id]
            let gid = g.fingerprint.id
            let ids = g.letters.prefix(5).map { l in
                "<a href=\"/dlq/show?\(e(ConsoleHTML.query([("worker", section), ("id", l.id)])))\">\(e(l.id))</a>"
            }.joined(separator: "<br>") + (g.letters.count > 5 ? "<br>… \(g.letters.count - 5) more" : "")
            let actions = """
                <form method="post" action="/dlq/replay">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("group", gid))<button id="replay-\(e(gid))">Replay group…</button></form>
                <a id="status-\(e(gid))" href="/dlq/group-status?\(e(ConsoleHTML.query([("worker", section), ("group", gid)])))">Set status…</a>
                """
            rows.append([
                String(g.letters.count), "<code>\(e(gid))</code>", e(st?.label ?? "open"),
                e(g.letters.compactMap(\.firstFailedAt).min() ?? "-"), "<span class=\"err\">\(e(g.fingerprint.text))</span>",
                e(st?.note ?? ""), ids, actions,
            ])
        }
        var body = "<p>DLQ depth: <b id=\"dlq-depth\">\(listing.total)</b> dead letter\(listing.total == 1 ? "" : "s") in <code>\(e(rc.topology.dlq))</code>"
            + " · <a href=\"/audit\">audit log</a></p>"
        for n in listing.notes { body += "<p class=\"warn\">\(e(n))</p>" }
        body += "<p><input data-filter=\"#groups\" placeholder=\"filter groups\"></p>"
        body += ConsoleHTML.table(
            id: "groups", header: ["Count", "Group", "Status", "First failed", "Error", "Note", "Letters", ""], rows: rows,
            numeric: [0])
        return .page(title: "Dead letters of \(section)", body: body)
    }

    func showPage(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, _) = try worker(Self.param(req, "worker"))
        guard let id = Self.param(req, "id") else { throw CLIFailure("no id given") }
        let (letter, copies) = try await DLQCommand.Show.parse([section] + configArgs + ["--", id]).find()
        var rows: [[String]] = [
            ["id", e(letter.id)], ["type", e(letter.type ?? "-")], ["merchant", e(letter.merchant ?? "-")],
            ["attempts", e(letter.attempts.map(String.init) ?? "-")], ["first failed at", e(letter.firstFailedAt ?? "-")],
            ["error", "<span class=\"err\">\(e(letter.error))</span>"],
            ["group", "<code>\(e(letter.fingerprint.id))</code> \(e(letter.fingerprint.text))"], ["copies", String(copies)],
        ]
        for (k, v) in letter.message.headers.sorted(by: { $0.key < $1.key }) where k != "x-death" {
            rows.append(["header " + e(k), e("\(v)")])
        }
        var body = ConsoleHTML.table(id: "letter", header: ["Field", "Value"], rows: rows)
        let text: String
        if let o = try? JSONSerialization.jsonObject(with: Data(letter.message.body)),
            let pretty = try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        {
            text = String(decoding: pretty, as: UTF8.self)
        } else {
            text = String(decoding: letter.message.body, as: UTF8.self)
        }
        body += "<h2>Event</h2><pre>\(e(text))</pre>"
        body += """
            <form method="post" action="/dlq/replay" style="display:inline">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("id", letter.id))<button>Replay this letter…</button></form>
            <a href="/dlq/edit?\(e(ConsoleHTML.query([("worker", section), ("id", letter.id)])))">Edit and replay…</a>
            · <a href="/trace?\(e(ConsoleHTML.query([("id", letter.id)])))">Trace</a>
            · <a href="/dlq?\(e(ConsoleHTML.query([("worker", section)])))">Back to the groups</a>
            """
        return .page(title: "Dead letter", body: body)
    }

    /// The replay arguments from a form: one letter (`id`) or one group (`group`).
    func replayArgs(_ f: [String: String]) throws -> (section: String, args: [String]) {
        let (section, _) = try worker(f["worker"])
        if let g = f["group"], !g.isEmpty {
            return (section, [section, "--error=\(try DLQGroupStatus.checkGroup(g))"])
        }
        guard let id = f["id"], !id.isEmpty else { throw CLIFailure("give a group or a letter id") }
        return (section, [section, "--id=\(id)"])
    }

    func replay(_ s: ConsoleAuth.Session, _ f: [String: String]) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, args) = try replayArgs(f)
        let what = f["group"].map { "group <code>\(e($0))</code>" } ?? "letter <code>\(e(f["id"] ?? ""))</code>"
        guard f["confirmed"] == "yes" else {
            // The confirm page shows what a dry run selects (it reads the queue, changes nothing, audits nothing).
            let dry = try await DLQCommand.Replay.parse(args + ["--dry-run"] + configArgs).perform()
            var body = "<div class=\"box\"><p>Replay \(what) of <b>\(e(section))</b>: \(dry.result.selected.count) of \(dry.result.read) dead letters would be republished to "
                + "<code>\(e(dry.targets.joined(separator: ", ")))</code> with confirm, then removed from <code>\(e(dry.dlq))</code>.</p>"
            body += "<ul id=\"selected\">" + dry.result.selected.prefix(50).map { "<li>\(e($0))</li>" }.joined() + "</ul>"
            if !dry.refused.isEmpty {
                body += "<p class=\"warn\">\(e(DLQCommand.Replay.refusalNote(dry.refused, days: dry.retentionDays)))</p>"
            }
            if !dry.missing.isEmpty { body += "<p class=\"bad\">not in the DLQ: \(e(dry.missing.joined(separator: ", ")))</p>" }
            if !dry.result.selected.isEmpty {
                body += """
                    <form method="post" action="/dlq/replay">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\
                    \(f["group"].map { ConsoleHTML.hidden("group", $0) } ?? ConsoleHTML.hidden("id", f["id"] ?? ""))\
                    \(ConsoleHTML.hidden("confirmed", "yes"))<button id="confirm" data-confirm>Replay \(dry.result.selected.count)</button>
                    <a href="/dlq?\(e(ConsoleHTML.query([("worker", section)])))">Cancel</a></form>
                    """
            }
            body += "</div>"
            return .page(title: "Confirm replay", body: body)
        }
        let command = ["dlq", "replay"] + args
        let o = try await audited(s, command) {
            try await DLQCommand.Replay.parse(args + configArgs).perform()
        }
        let r = o.result
        var body = "<p id=\"outcome\">Replayed \(r.replayed.count) of \(r.read) dead letters in \(String(format: "%.1f", o.seconds)) s (republished with confirm, then removed from <code>\(e(o.dlq))</code>).</p>"
        if !r.failed.isEmpty {
            body += "<p class=\"bad\">\(r.failed.count) could not be republished and stay in the DLQ: \(e(r.failed[0].error))</p>"
        }
        if !o.refused.isEmpty { body += "<p class=\"warn\">\(e(DLQCommand.Replay.refusalNote(o.refused, days: o.retentionDays)))</p>" }
        if !o.missing.isEmpty { body += "<p class=\"bad\">not in the DLQ: \(e(o.missing.joined(separator: ", ")))</p>" }
        if let n = o.indexNote { body += "<p class=\"warn\">\(e(n))</p>" }
        body += "<p><a href=\"/dlq?\(e(ConsoleHTML.query([("worker", section)])))\">Back to the groups</a> · <a href=\"/audit\">Audit log</a></p>"
        body += try await auditTable(limit: 5)
        return .page(title: "Replayed", body: body)
    }

    func editForm(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, _) = try worker(Self.param(req, "worker"))
        guard let id = Self.param(req, "id") else { throw CLIFailure("no id given") }
        let (letter, _) = try await DLQCommand.Show.parse([section] + configArgs + ["--", id]).find()
        let body = """
            <p>Letter <code>\(e(letter.id))</code>: <span class="err">\(e(letter.error))</span></p>
            <pre>\(e(String(decoding: letter.message.body, as: UTF8.self)))</pre>
            <form method="post" action="/dlq/edit" class="box">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("id", letter.id))
            <p><label>Changes, one <code>path=value</code> per line (as <code>payfleet dlq edit --set</code>), e.g. <code>payment.id=pi_123</code><br>
            <textarea name="sets" rows="5" cols="70" required></textarea></label></p>
            <p><button>Preview…</button></p></form>
            """
        return .page(title: "Edit a dead letter", body: body)
    }

    func edit(_ s: ConsoleAuth.Session, _ f: [String: String]) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, _) = try worker(f["worker"])
        guard let id = f["id"], !id.isEmpty else { throw CLIFailure("no id given") }
        let sets = (f["sets"] ?? "").split(whereSeparator: { $0.isNewline }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !sets.isEmpty else { throw CLIFailure("give at least one path=value") }
        let args = [section] + sets.map { "--set=\($0)" }
        guard f["confirmed"] == "yes" else {
            let (letter, _) = try await DLQCommand.Show.parse([section] + configArgs + ["--", id]).find()
            let (_, changes) = try DLQEdit.apply(sets: sets, patch: nil, to: letter.message.body)
            let rows = changes.map { [e($0.path), e($0.before ?? "(absent)"), e($0.after ?? "(absent)")] }
            let body = """
                <div class="box"><p>Edit <code>\(e(id))</code> of <b>\(e(section))</b>, validate it and replay it; the original is archived.</p>
                \(ConsoleHTML.table(id: "changes", header: ["Path", "Before", "After"], rows: rows))
                <form method="post" action="/dlq/edit">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("id", id))\
                \(ConsoleHTML.hidden("sets", sets.joined(separator: "\n")))\(ConsoleHTML.hidden("confirmed", "yes"))
                <button id="confirm" data-confirm>Apply and replay</button> <a href="/dlq/show?\(e(ConsoleHTML.query([("worker", section), ("id", id)])))">Cancel</a></form></div>
                """
            return .page(title: "Confirm edit", body: body)
        }
        let done = try await audited(s, ["dlq", "edit"] + args + ["--", id]) {
            try await DLQCommand.Edit.parse(args + configArgs + ["--", id]).perform()
        }
        let rows = done.changes.map { [e($0.path), e($0.before ?? "(absent)"), e($0.after ?? "(absent)")] }
        let body = "<p id=\"outcome\">Edited \(e(id)), validated and replayed; original archived in <code>\(e(done.archive))</code>.</p>"
            + ConsoleHTML.table(header: ["Path", "Before", "After"], rows: rows)
            + "<p><a href=\"/dlq?\(e(ConsoleHTML.query([("worker", section)])))\">Back to the groups</a></p>" + (try await auditTable(limit: 3))
        return .page(title: "Edited", body: body)
    }

    func groupStatusForm(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, rc) = try worker(Self.param(req, "worker"))
        let g = try DLQGroupStatus.checkGroup(Self.param(req, "group") ?? "")
        let (path, stem) = (try context().auditLogPath, rc.worker)
        let current = try await blocking.run { try DLQGroupStatus.current(auditPath: path, worker: stem)[g] }
        let options = DLQGroupStatus.State.allCases.map { st in
            "<option value=\"\(st.rawValue)\"\(current?.state == st ? " selected" : "")>\(st.rawValue)</option>"
        }.joined()
        let body = """
            <p>Group <code>\(e(g))</code> of <b>\(e(section))</b>: now \(e(current?.label ?? "open"))\(current?.note.map { " — " + e($0) } ?? "")</p>
            <form method="post" action="/dlq/group-status" class="box">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("group", g))
            <p><label>Status <select name="state">\(options)</select></label></p>
            <p><label>Investigated by (default: you, \(e(s.operatorName)))<br><input name="by" maxlength="100"></label></p>
            <p><label>Note<br><input name="note" size="70" maxlength="1000"></label></p>
            <p><button id="set-status">Set…</button></p></form>
            """
        return .page(title: "Group status", body: body)
    }

    func setGroupStatus(_ s: ConsoleAuth.Session, _ f: [String: String]) async throws -> Reply {
        let e = ConsoleHTML.esc
        let (section, _) = try worker(f["worker"])
        let g = try DLQGroupStatus.checkGroup(f["group"] ?? "")
        guard let state = DLQGroupStatus.State(rawValue: f["state"] ?? "") else {
            throw CLIFailure("state: open, investigating or ignored")
        }
        var by = (f["by"] ?? "").trimmingCharacters(in: .whitespaces)
        if by.isEmpty, state == .investigating { by = s.operatorName }
        let note = (f["note"] ?? "").trimmingCharacters(in: .whitespaces)
        var args = [section, g, state.rawValue]
        if !by.isEmpty { args.append("--by=\(by)") }
        if !note.isEmpty { args.append("--note=\(note)") }
        guard f["confirmed"] == "yes" else {
            // The CLI's checks before the confirm page, so it never confirms what would be refused.
            _ = try DLQGroupStatus.checkText(by.isEmpty ? nil : by, option: "by", limit: 100)
            _ = try DLQGroupStatus.checkText(note.isEmpty ? nil : note, option: "note", limit: 1000)
            let body = """
                <div class="box"><p>Set group <code>\(e(g))</code> of <b>\(e(section))</b> to <b>\(e(state.rawValue))</b>\
                \(by.isEmpty ? "" : " (" + e(by) + ")")\(note.isEmpty ? "" : " — " + e(note))?</p>
                <form method="post" action="/dlq/group-status">\(ConsoleHTML.csrfField(s))\(ConsoleHTML.hidden("worker", section))\(ConsoleHTML.hidden("group", g))\
                \(ConsoleHTML.hidden("state", state.rawValue))\(ConsoleHTML.hidden("by", by))\(ConsoleHTML.hidden("note", note))\(ConsoleHTML.hidden("confirmed", "yes"))
                <button id="confirm" data-confirm>Set status</button> <a href="/dlq?\(e(ConsoleHTML.query([("worker", section)])))">Cancel</a></form></div>
                """
            return .page(title: "Confirm status", body: body)
        }
        _ = try await audited(s, ["dlq", "status"] + args) {
            try DLQCommand.Status.parse(args + configArgs + ["--json"]).output()
        }
        return .redirect("/dlq?" + ConsoleHTML.query([("worker", section)]))
    }

    // MARK: Audit, trace, settlement

    /// The latest audit lines, newest first (the file is read on the blocking thread).
    func auditTable(limit: Int) async throws -> String {
        let path = try context().auditLogPath
        return try await blocking.run { try Self.auditTable(path: path, limit: limit) }
    }

    static func auditTable(path: String, limit: Int) throws -> String {
        let e = ConsoleHTML.esc
        let lines = FileManager.default.fileExists(atPath: path) ? try JSONLines.read(path) : []
        let rows = lines.suffix(limit).reversed().map { o -> [String] in
            func str(_ k: String) -> String { o[k].map { $0 is NSNull ? "" : "\($0)" } ?? "" }
            let ids = (o["ids"] as? [String]) ?? []
            var detail = ids.prefix(5).joined(separator: ", ") + (ids.count > 5 ? " …" : "")
            if let g = o["group"] as? String { detail += "group \(g) → \(str("state")) \(str("by")) \(str("note"))" }
            return [e(str("at")), e(str("user")), e(str("console_operator")), e(str("action")), e(str("worker")),
                    e(str("outcome")), String(o["count"] as? Int ?? 0), e(detail), e(str("command"))]
        }
        return "<h2>Audit log</h2><p><code>\(e(path))</code></p>" + ConsoleHTML.table(
            id: "audit", header: ["At", "User", "Console operator", "Action", "Worker", "Outcome", "Count", "Details", "Command"],
            rows: rows, numeric: [6])
    }

    func auditPage(_ s: ConsoleAuth.Session) async throws -> Reply {
        .page(title: "Audit log", body: try await auditTable(limit: 200))
    }

    func tracePage(_ req: Request, _ s: ConsoleAuth.Session) async throws -> Reply {
        let e = ConsoleHTML.esc
        let id = Self.param(req, "id")
        var body = """
            <form method="get" action="/trace"><input name="id" id="trace-id" size="50" placeholder="event id, payment id, invoice id or provider event id" value="\(e(id ?? ""))"> <button id="trace-go">Trace</button></form>
            """
        if let id {
            let path = configPath
            let text = try await blocking.run { try FleetTrace.sources(configPath: path).trace(id).text }
            body += "<pre id=\"trace\">\(e(text))</pre>"
        }
        return .page(title: "Trace", body: body)
    }

    static func yesterday() -> String {
        let d = Date().addingTimeInterval(-86_400)
        return String(RFC3339.format(d).prefix(10))
    }

    func settlementPage(_ req: Request, _ s: ConsoleAuth.Session) throws -> Reply {
        let e = ConsoleHTML.esc
        let date = Self.param(req, "date") ?? Self.yesterday()
        let merchant = Self.param(req, "merchant")
        var q = [("date", date)]
        if let merchant { q.append(("merchant", merchant)) }
        let body = """
            <form method="get" action="/settlement"><label>Business day <input name="date" type="date" value="\(e(date))"></label>
            <label>Merchant <input name="merchant" value="\(e(merchant ?? ""))" placeholder="all"></label> <button>Show</button></form>
            <iframe src="/settlement/report?\(e(ConsoleHTML.query(q)))" style="width:100%;height:75vh;border:1px solid #d6dbe1;background:#fff"></iframe>
            """
        return .page(title: "Settlement", body: body)
    }

    /// `payfleet settlement report --format html`, served as it renders (inside the settlement page's frame).
    func settlementReport(_ req: Request) async -> Response {
        guard session(req) != nil else { return respond(req, session: nil, .redirect("/login")) }
        let date = Self.param(req, "date") ?? Self.yesterday()
        var args = configArgs + ["--date=\(date)", "--format", "html"]
        if let m = Self.param(req, "merchant") { args.append("--merchant=\(m)") }
        let html: String
        var status = HTTPResponse.Status.ok
        do {
            let parsed = args
            html = try await blocking.run { try SettlementCommand.Report.parse(parsed).render() }
        } catch {
            status = .badRequest
            let m = (error as? CLIFailure)?.message ?? SettlementCommand.Report.message(for: error)
            html = "<!doctype html><meta charset=\"utf-8\"><p style=\"color:#a40000;font-family:sans-serif\">\(ConsoleHTML.esc(m))</p>"
        }
        var h: HTTPFields = [.contentType: "text/html; charset=utf-8"]
        h[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
        for (k, v) in Self.securityHeaders { h[k] = v }
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: html)))
    }
}
