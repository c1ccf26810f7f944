import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PayfleetCore
import PayfleetTelemetry
import PayfleetTestKit
import Testing
import Yams

@testable import PayfleetCLI

/// Tracing across the fleet (issue 18 item 2): ingest and the four workers as real processes on
/// the private broker, `tracing.otlp_endpoint` pointing at a real OTLP/HTTP receiver on
/// loopback. Expected ids come from what the test sent (its own `traceparent` headers), the
/// span names from docs/operations.md ("Tracing over OTLP"), the workers bound to each type from the topology chart.
@Suite(.serialized)
struct TracingFleetTests {
    static let workers = ProcessFleet.workers

    @Test("One trace per event: ingest's server span, the relay's publish, a process span per worker with apply and effect children")
    func oneTracePerEvent() async throws {
        let receiver = OTLPReceiver()
        try await receiver.start()
        defer { receiver.stop() }
        let fleet = ProcessFleet("otel")
        fleet.edit = { doc in
            // A base URL: the exporter posts to /v1/traces under it.
            doc["tracing"] = ["otlp_endpoint": receiver.url, "export_interval": "200ms", "sample_ratio": 1]
        }
        try await fleet.run { try await run($0, receiver: receiver) }
    }

    func run(_ fleet: ProcessFleet, receiver: OTLPReceiver) async throws {
        let tag = fleet.tag
        let payment = "pi_otel\(tag)", customer = "cus_otel\(tag)"
        func event(_ type: String, _ sourceID: String, amount: Int64, fee: Int64?, extra: [String: Any] = [:]) -> [String: Any] {
            ProcessFleet.phoneEvent(
                type, sourceID, occurredAt: Date().addingTimeInterval(-60), customer: customer, payment: payment, amount: amount,
                fee: fee, extra: extra)
        }
        // The caller's trace context for two of the events (made here, not by the fleet).
        let trace1 = "4bf92f3577b34da6a3ce929d0e0e4736", parent1 = "00f067aa0ba902b7"
        let trace2 = "0af7651916cd43dd8448eb211c80319c", parent2 = "b7ad6b7169203331"
        let paid = try await fleet.send(
            event("payment.succeeded", "pp_pay_\(tag)", amount: 1999, fee: 45), key: "k1-\(tag)",
            traceparent: "00-\(trace1)-\(parent1)-01")
        let refunded = try await fleet.send(
            event("payment.refunded", "pp_ref_\(tag)", amount: 500, fee: nil, extra: ["metadata": ["refund_id": "re_\(tag)"]]),
            key: "k2-\(tag)", traceparent: "00-\(trace2)-\(parent2)-01")
        // No traceparent (and one that is not valid W3C): ingest begins a new trace.
        let disputed = try await fleet.send(
            event("payment.disputed", "pp_dis_\(tag)", amount: 1999, fee: 1500), key: "k3-\(tag)",
            traceparent: "00-not-a-trace-01")
        let expectedWorkers: [String: Set<String>] = [
            paid: Set(Self.workers), refunded: Set(Self.workers),
            disputed: ["crm-sync", "ledger-writer", "settlement-aggregator"],
        ]

        func processSpans(_ spans: [OTLPSpan], _ id: String) -> [OTLPSpan] {
            spans.filter { $0.attributes["payfleet.event_id"] == id && $0.name.hasPrefix("process ") }
        }
        var spans: [OTLPSpan] = []
        let complete = await eventually(timeout: .seconds(90), every: .milliseconds(500)) {
            guard let s = try? receiver.spans() else { return false }
            spans = s
            return expectedWorkers.allSatisfy { id, workers in
                Set(processSpans(s, id).map(\.service)) == workers
                    && s.contains { $0.attributes["payfleet.event_id"] == id && $0.name == "publish payfleet.events" }
            } && expectedWorkers.keys.allSatisfy { id in
                // crm-sync's push is an effect: its span ends after the process span began.
                let crm = processSpans(s, id).filter { $0.service == "crm-sync" }
                return crm.allSatisfy { p in s.contains { $0.parentSpanID == p.spanID && $0.name == "effect" } }
            }
        }
        #expect(complete, "spans missing: \(spans.map(\.description).joined(separator: "\n"))")
        #expect(receiver.requests.allSatisfy { $0.path == "/v1/traces" && $0.contentType == "application/x-protobuf" })
        let byID = Dictionary(spans.map { ($0.spanID, $0) }, uniquingKeysWith: { a, _ in a })

        var traces: Set<String> = []
        for (id, workers) in expectedWorkers {
            let relays = spans.filter { $0.attributes["payfleet.event_id"] == id && $0.name == "publish payfleet.events" }
            #expect(relays.count == 1, "\(id): \(relays)")
            let relay = try #require(relays.first)
            #expect(relay.service == "ingest")
            #expect(relay.kind == 4, "producer")
            // The relay's parent: ingest's server span for the request.
            let server = try #require(byID[relay.parentSpanID], "\(id): no parent for \(relay)")
            #expect(server.service == "ingest")
            #expect(server.name == "POST /v1/events")
            #expect(server.kind == 2, "server")
            #expect(server.attributes["http.response.status_code"] == "202")
            #expect(server.traceID == relay.traceID)
            switch id {
            case paid:
                #expect(server.traceID == trace1)
                #expect(server.parentSpanID == parent1)
            case refunded:
                #expect(server.traceID == trace2)
                #expect(server.parentSpanID == parent2)
            default:
                #expect(server.parentSpanID.isEmpty, "a new trace: \(server)")
                #expect(server.traceID != trace1 && server.traceID != trace2)
            }
            traces.insert(server.traceID)
            // One process span per worker bound to the type, each the child of the publish.
            let processes = processSpans(spans, id)
            #expect(processes.count == workers.count, "\(id): \(processes)")
            for p in processes {
                #expect(p.kind == 5, "consumer: \(p)")
                #expect(p.traceID == server.traceID, "\(p)")
                #expect(p.parentSpanID == relay.spanID, "\(p)")
                #expect(p.name.hasPrefix("process payfleet.\(fleet.stem)-\(p.service)"), "\(p)")
                #expect(p.attributes["payfleet.outcome"] == "applied" || p.attributes["payfleet.outcome"] == "effect", "\(p)")
                #expect(p.statusCode != 2, "\(p)")
                let children = spans.filter { $0.parentSpanID == p.spanID }
                #expect(children.filter { $0.name == "apply" }.count == 1, "\(p.service): \(children)")
                #expect(children.allSatisfy { $0.traceID == p.traceID && $0.service == p.service })
                if p.service == "crm-sync" || (p.service == "receipt-sender") {
                    #expect(children.contains { $0.name == "effect" }, "\(p.service): \(children)")
                }
            }
            // Everything of the trace: ingest and the four (or three) workers, nothing else.
            let services = Set(spans.filter { $0.traceID == server.traceID }.map(\.service))
            #expect(services == workers.union(["ingest"]), "\(id): \(services)")
        }
        #expect(traces.count == 3, "one trace per event")
        // The malformed header was dropped before the tracer saw it: never echoed in a log.
        let logs = fleet.processes.values.map(\.log).joined()
        #expect(!logs.contains("not-a-trace"), "\(logs)")
        #expect(!logs.contains("Failed to export"), "\(logs)")
    }

    // MARK: Configuration

    func checkConfig(_ process: String, _ tracing: Any, env: [String: String] = [:]) async throws -> (Int32?, String) {
        let dir = TestEnvironment.makeTempDir("otel-config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = try String(contentsOfFile: TestEnvironment.repoRoot + "/config/payfleet.yaml", encoding: .utf8)
        var doc = try #require(try Yams.load(yaml: text) as? [String: Any])
        doc["tracing"] = tracing
        doc["state_dir"] = dir + "/state"
        try Yams.dump(object: doc, sortKeys: true).write(toFile: dir + "/c.yaml", atomically: true, encoding: .utf8)
        let p = try ChildProcess(
            executable: TestEnvironment.binDir + "/" + process, arguments: ["--config", dir + "/c.yaml", "--check-config"],
            environment: env, logPath: dir + "/out.log")
        let status = await p.wait(timeout: .seconds(30))
        if status == nil { await p.killNow() }
        return (status, p.log)
    }

    @Test("tracing: refuses a bad endpoint, protocol, ratio, interval and unknown keys, in every process")
    func configRefused() async throws {
        let cases: [(String, Any, [String: String], String)] = [
            ("ingest", ["otlp_endpoint": "ftp://127.0.0.1:4318"], [:], "tracing.otlp_endpoint"),
            ("ledger-writer", ["otlp_endpoint": "not a url"], [:], "tracing.otlp_endpoint"),
            ("crm-sync", ["otlp_endpoint": "http://user:pw@collector:4318"], [:], "tracing.otlp_endpoint"),
            ("receipt-sender", ["otlp_endpoint": "http://127.0.0.1:4318", "protocol": "grpc"], [:], "tracing.protocol"),
            ("settlement-aggregator", ["otlp_endpoint": "http://127.0.0.1:4318", "sample_ratio": 1.5], [:], "tracing.sample_ratio"),
            ("ingest", ["otlp_endpoint": "http://127.0.0.1:4318", "export_interval": "soon"], [:], "tracing.export_interval"),
            ("ingest", ["endpoint": "http://127.0.0.1:4318"], [:], "tracing.endpoint: unknown key"),
            ("ledger-writer", [:] as [String: Any], ["PAYFLEET_TRACING_OTLP_ENDPOINT": "collector:4318"], "tracing.otlp_endpoint"),
            ("ingest", "yes", [:], "tracing: expected a mapping"),
        ]
        for (process, tracing, env, expected) in cases {
            let (status, out) = try await checkConfig(process, tracing, env: env)
            #expect(status == 78, "\(process) \(tracing) \(env): \(out)")
            #expect(out.contains(expected), "\(process) \(tracing): \(out)")
            #expect(!out.contains("pw@"), "no credentials echoed: \(out)")
        }
        // Accepted: an endpoint with a path kept as it is, and tracing off (no endpoint).
        for tracing: Any in [
            ["otlp_endpoint": "https://collector.example:4318/v1/traces", "protocol": "http/protobuf", "service_name": "x",
             "sample_ratio": 0.25, "export_interval": "2s"] as [String: Any],
            ["sample_ratio": 0.5] as [String: Any],
        ] {
            let (status, out) = try await checkConfig("ingest", tracing)
            #expect(status == 0, "\(tracing): \(out)")
        }
    }

    @Test("tracing: defaults, a base URL gets /v1/traces, environment overrides")
    func configRead() throws {
        func read(_ yaml: String, env: [String: String] = [:]) throws -> TracingConfiguration? {
            let root = try ConfigSection.parse(yaml: yaml, environment: env)
            let c = try TracingConfiguration.read(root: root, process: "ledger-writer")
            try root.finish()
            return c
        }
        #expect(try read("") == nil)
        #expect(try read("tracing: {sample_ratio: 0.1}") == nil)
        #expect(
            try read("tracing: {otlp_endpoint: 'http://127.0.0.1:4318'}")
                == TracingConfiguration(endpoint: "http://127.0.0.1:4318/v1/traces", serviceName: "ledger-writer", sampleRatio: 1, exportIntervalMS: 1000))
        #expect(
            try read("tracing: {otlp_endpoint: 'http://c:4318/'}", env: ["PAYFLEET_TRACING_SERVICE_NAME": "lw-1", "PAYFLEET_TRACING_SAMPLE_RATIO": "0.5"])
                == TracingConfiguration(endpoint: "http://c:4318/v1/traces", serviceName: "lw-1", sampleRatio: 0.5, exportIntervalMS: 1000))
        #expect(
            try read("", env: ["PAYFLEET_TRACING_OTLP_ENDPOINT": "https://c/otlp/traces", "PAYFLEET_TRACING_EXPORT_INTERVAL": "250ms"])
                == TracingConfiguration(endpoint: "https://c/otlp/traces", serviceName: "ledger-writer", sampleRatio: 1, exportIntervalMS: 250))
        #expect(throws: ConfigError.self) { try read("tracing: {otlp_endpoint: 'http://c', sample_ratio: -0.1}") }
        #expect(throws: ConfigError.self) { try read("tracing: {otlp_endpoint: 'http://c', export_interval: 0s}") }
        #expect(throws: ConfigError.self) { try read("tracing: {otlp_endpoint: 'http://c', service_name: ''}") }
        #expect(throws: ConfigError.self) { try read("tracing: {otlp_endpoint: 'http://c?x=1'}") }
        #expect(throws: ConfigError.self) { try read("tracing: {otlp_endpoint: 'http://c', exporter: otlp}") }
    }
}
