import Foundation
import Logging
import OTel
import PayfleetCore
import ServiceLifecycle
import Tracing

/// The `tracing:` section of `config/payfleet.yaml` (docs/operations.md, "Tracing over OTLP"): off unless `otlp_endpoint` is
/// set (in the file or as `PAYFLEET_TRACING_OTLP_ENDPOINT`).
public struct TracingConfiguration: Sendable, Equatable {
    /// Where spans are POSTed (OTLP/HTTP, protobuf): a URL with no path gets `/v1/traces`.
    public var endpoint: String
    public var serviceName: String
    /// The share of new traces recorded (0…1); a trace begun upstream keeps its own decision.
    public var sampleRatio: Double
    /// How long finished spans wait in the batch before they are sent.
    public var exportIntervalMS: Int

    public init(endpoint: String, serviceName: String, sampleRatio: Double = 1, exportIntervalMS: Int = 1000) {
        self.endpoint = endpoint
        self.serviceName = serviceName
        self.sampleRatio = sampleRatio
        self.exportIntervalMS = exportIntervalMS
    }

    public static let keys = ["otlp_endpoint", "protocol", "service_name", "sample_ratio", "export_interval"]

    /// Reads `tracing:`; nil when no endpoint is configured (tracing off). Every key is read
    /// (so `finish()` refuses the unknown ones) and checked.
    public static func read(root: ConfigSection, process: String) throws(ConfigError) -> TracingConfiguration? {
        let s = try root.section("tracing")
        let endpoint = try s.string("otlp_endpoint")
        let proto = try s.string("protocol", default: "http/protobuf")
        let service = try s.string("service_name", default: process)
        let ratio = try s.double("sample_ratio", default: 1, range: 0...1)
        let interval = try s.durationMS("export_interval", default: 1000)
        guard proto == "http/protobuf" else {
            throw ConfigError(key: s.dotted("protocol"), message: "'\(proto)' is not supported (only http/protobuf, OTLP over HTTP)")
        }
        guard interval > 0 else { throw ConfigError(key: s.dotted("export_interval"), message: "must be longer than 0") }
        guard !service.isEmpty else { throw ConfigError(key: s.dotted("service_name"), message: "must not be empty") }
        guard let endpoint, !endpoint.isEmpty else { return nil }
        guard let url = URLComponents(string: endpoint), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty, url.query == nil,
            url.user == nil, url.password == nil
        else {
            throw ConfigError(
                key: s.dotted("otlp_endpoint"),
                message: "must be an http:// or https:// URL with a host, without credentials or a query")
        }
        var full = endpoint
        if url.path.isEmpty || url.path == "/" { full = (endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint) + "/v1/traces" }
        return TracingConfiguration(endpoint: full, serviceName: service, sampleRatio: ratio, exportIntervalMS: interval)
    }
}

/// The small API the fleet traces through: one global switch (false unless `bootstrap` ran, so
/// an untraced batch pays one load and creates no span), spans started from or turned into a
/// W3C `traceparent`, and the exporter's `Service`.
public enum PayfleetTracing {
    nonisolated(unsafe) public private(set) static var isEnabled = false
    /// The exporter's lifecycle once `bootstrap` ran: the process runs it first in its group.
    nonisolated(unsafe) public private(set) static var service: (any Service)?

    /// Installs the OTLP/HTTP exporter as the process's tracer; the returned service must run
    /// (first in the process's service group, so it stops last and flushes what the others
    /// finished). Call once, before any task starts.
    public static func bootstrap(_ c: TracingConfiguration, logger: Logger) throws -> any Service {
        var config = OTel.Configuration.default
        config.serviceName = c.serviceName
        config.diagnosticLogger = .custom(logger)
        config.diagnosticLogLevel = .warning
        config.propagators = [.traceContext]
        config.metrics.enabled = false
        config.logs.enabled = false
        config.traces.enabled = true
        config.traces.exporter = .otlp
        config.traces.sampler = c.sampleRatio >= 1 ? .parentBasedAlwaysOn : (.parentBasedTraceIDRatio(ratio: c.sampleRatio) ?? .parentBasedAlwaysOn)
        config.traces.batchSpanProcessor.scheduleDelay = .milliseconds(c.exportIntervalMS)
        config.traces.otlpExporter.endpoint = c.endpoint
        config.traces.otlpExporter.protocol = .httpProtobuf
        // Bounded: a collector that is down must not hold a graceful stop (ingest's is 20 s).
        config.traces.otlpExporter.timeout = .seconds(3)
        config.traces.batchSpanProcessor.exportTimeout = .seconds(3)
        let backend = try OTel.makeTracingBackend(configuration: config)
        InstrumentationSystem.bootstrap(backend.factory)
        isEnabled = true
        service = backend.service
        return backend.service
    }

    /// Reads `tracing:` and, when an endpoint is set, bootstraps; nil when tracing is off.
    public static func bootstrap(root: ConfigSection, process: String, logger: Logger) throws -> (any Service)? {
        guard let c = try TracingConfiguration.read(root: root, process: process) else { return nil }
        return try bootstrap(c, logger: logger)
    }

    /// A span whose parent is `traceparent` (a new trace when it is nil or not valid W3C).
    public static func start(_ name: String, kind: TraceSpan.Kind, parent traceparent: String?) -> TraceSpan {
        var context = ServiceContext.topLevel
        if let traceparent, isW3C(traceparent) {
            InstrumentationSystem.instrument.extract(["traceparent": traceparent], into: &context, using: DictionaryCarrier())
        }
        return TraceSpan(Tracing.startSpan(name, context: context, ofKind: kind.spanKind))
    }

    /// Version 00 of W3C trace context, lowercase hex, ids not all zero: checked before the
    /// tracer sees it, so a malformed value from outside is never echoed in its warnings.
    public static func isW3C(_ t: String) -> Bool {
        let u = Array(t.utf8)
        guard u.count == 55, u[0] == 48, u[1] == 48, u[2] == 45, u[35] == 45, u[52] == 45 else { return false }
        func hex(_ r: Range<Int>) -> Bool { u[r].allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }
        guard hex(3..<35), hex(36..<52), hex(53..<55) else { return false }
        return u[3..<35].contains { $0 != 48 } && u[36..<52].contains { $0 != 48 }
    }

    /// A span whose parent is the task's current one (e.g. the HTTP server span), else a new trace.
    public static func startInCurrent(_ name: String, kind: TraceSpan.Kind) -> TraceSpan {
        TraceSpan(Tracing.startSpan(name, context: ServiceContext.current ?? .topLevel, ofKind: kind.spanKind))
    }

    /// The `traceparent` of the span the task runs in (nil outside one, or with tracing off).
    public static var currentTraceparent: String? {
        guard isEnabled, let c = ServiceContext.current else { return nil }
        return traceparent(of: c)
    }

    /// Runs `body` with `span` as the task's current span.
    public static func withCurrent<T: Sendable>(_ span: TraceSpan, _ body: () async throws -> T) async rethrows -> T {
        try await ServiceContext.withValue(span.span.context) { try await body() }
    }

    static func traceparent(of context: ServiceContext) -> String? {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryCarrier())
        return carrier["traceparent"]
    }
}

/// One span; ends exactly once through `end`.
public struct TraceSpan: Sendable {
    public enum Kind: Sendable {
        case server, producer, consumer, `internal`, client
        var spanKind: SpanKind {
            switch self {
            case .server: .server
            case .producer: .producer
            case .consumer: .consumer
            case .internal: .internal
            case .client: .client
            }
        }
    }

    let span: any Span

    init(_ span: any Span) { self.span = span }

    /// A child of this span.
    public func child(_ name: String, kind: Kind = .internal) -> TraceSpan {
        TraceSpan(Tracing.startSpan(name, context: span.context, ofKind: kind.spanKind))
    }

    /// This span as a W3C `traceparent` (what a message carries to its consumers).
    public var traceparent: String? { PayfleetTracing.traceparent(of: span.context) }

    public func set(_ key: String, _ value: String) { span.attributes[key] = value }
    public func set(_ key: String, _ value: Int) { span.attributes[key] = value }

    public var name: String {
        get { span.operationName }
        nonmutating set { span.operationName = newValue }
    }

    /// Ends the span; `error` (a description without event data) marks it failed.
    public func end(error: String? = nil) {
        if let error { span.setStatus(SpanStatus(code: .error, message: error)) }
        span.end()
    }
}

struct DictionaryCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
