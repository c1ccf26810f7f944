import Foundation
import Hummingbird
import Logging
import NIOCore
import PayfleetCore
import PayfleetTestKit

/// A real OTLP/HTTP receiver on loopback: records the body of every `POST /v1/traces` and
/// answers 200 with an empty `ExportTraceServiceResponse`. The bodies are decoded by hand from
/// the protobuf wire format (opentelemetry-proto `trace/v1/trace.proto`), not by the exporter's
/// own types.
final class OTLPReceiver: @unchecked Sendable {
    private let bodies = Locked<[(path: String, contentType: String, body: [UInt8])]>([])
    private var task: Task<Void, Error>?
    private(set) var port = 0
    var url: String { "http://127.0.0.1:\(port)" }
    var requests: [(path: String, contentType: String, body: [UInt8])] { bodies.current }

    func start() async throws {
        let router = Router()
        router.post("/v1/traces") { [self] req, _ -> Response in
            let body = try await req.body.collect(upTo: 16 << 20)
            bodies.withLock {
                $0.append((req.uri.path, req.headers[.contentType] ?? "", Array(buffer: body)))
            }
            return Response(
                status: .ok, headers: [.contentType: "application/x-protobuf"], body: .init(byteBuffer: ByteBuffer()))
        }
        (port, task) = await LoopbackServer.start(router, label: "otlp-receiver")
    }

    func stop() { task?.cancel() }

    /// Every span received so far, with its resource's `service.name`.
    func spans() throws -> [OTLPSpan] {
        var out: [OTLPSpan] = []
        for r in requests { out += try OTLPSpan.decode(request: r.body) }
        return out
    }
}

/// The fields of one OTLP span the tests check.
struct OTLPSpan: CustomStringConvertible {
    var service = ""
    var traceID = ""
    var spanID = ""
    var parentSpanID = ""
    var name = ""
    /// opentelemetry-proto `Span.SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    var kind = 0
    var attributes: [String: String] = [:]
    /// `Status.code`: 0 unset, 1 ok, 2 error.
    var statusCode = 0

    var description: String {
        "\(service) \(name) kind=\(kind) trace=\(traceID) span=\(spanID) parent=\(parentSpanID) \(attributes)"
    }

    struct DecodeError: Error { let what: String }

    /// Protobuf wire format: (field number, wire type) keys; varint (0), fixed64 (1),
    /// length-delimited (2) and fixed32 (5) values.
    struct Reader {
        let b: [UInt8]
        var i = 0
        init(_ b: [UInt8]) { self.b = b }
        var atEnd: Bool { i >= b.count }
        mutating func varint() throws -> UInt64 {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard i < b.count, shift < 64 else { throw DecodeError(what: "varint") }
                let byte = b[i]
                i += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return v }
                shift += 7
            }
        }
        /// The next field: number and its value (bytes for length-delimited, else the number).
        mutating func field() throws -> (Int, [UInt8]?, UInt64) {
            let key = try varint()
            let number = Int(key >> 3)
            switch key & 7 {
            case 0: return (number, nil, try varint())
            case 1:
                guard i + 8 <= b.count else { throw DecodeError(what: "fixed64") }
                i += 8
                return (number, nil, 0)
            case 2:
                let n = Int(try varint())
                guard n >= 0, i + n <= b.count else { throw DecodeError(what: "length") }
                defer { i += n }
                return (number, Array(b[i..<i + n]), 0)
            case 5:
                guard i + 4 <= b.count else { throw DecodeError(what: "fixed32") }
                i += 4
                return (number, nil, 0)
            default: throw DecodeError(what: "wire type \(key & 7)")
            }
        }
    }

    static func fields(_ b: [UInt8]) throws -> [(Int, [UInt8]?, UInt64)] {
        var r = Reader(b)
        var out: [(Int, [UInt8]?, UInt64)] = []
        while !r.atEnd { out.append(try r.field()) }
        return out
    }

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    /// KeyValue { 1 key; 2 AnyValue { 1 string_value; 2 bool_value; 3 int_value } } as text.
    static func keyValue(_ b: [UInt8]) throws -> (String, String) {
        var key = ""
        var value = ""
        for (n, bytes, _) in try fields(b) {
            if n == 1, let bytes { key = String(decoding: bytes, as: UTF8.self) }
            if n == 2, let bytes {
                for (vn, vb, vi) in try fields(bytes) {
                    switch vn {
                    case 1: value = String(decoding: vb ?? [], as: UTF8.self)
                    case 2: value = vi != 0 ? "true" : "false"
                    case 3: value = String(Int64(bitPattern: vi))
                    default: break
                    }
                }
            }
        }
        return (key, value)
    }

    /// ExportTraceServiceRequest { 1 ResourceSpans { 1 Resource { 1 attributes }; 2 ScopeSpans
    /// { 2 Span } } }.
    static func decode(request: [UInt8]) throws -> [OTLPSpan] {
        var out: [OTLPSpan] = []
        for (n, rs, _) in try fields(request) where n == 1 {
            var service = ""
            var spans: [OTLPSpan] = []
            for (rn, rb, _) in try fields(rs ?? []) {
                if rn == 1, let rb {
                    for (an, ab, _) in try fields(rb) where an == 1 {
                        let (k, v) = try keyValue(ab ?? [])
                        if k == "service.name" { service = v }
                    }
                }
                if rn == 2, let rb {
                    for (sn, sb, _) in try fields(rb) where sn == 2 { spans.append(try span(sb ?? [])) }
                }
            }
            for var s in spans {
                s.service = service
                out.append(s)
            }
        }
        return out
    }

    /// Span { 1 trace_id; 2 span_id; 4 parent_span_id; 5 name; 6 kind; 9 attributes; 15 status { 3 code } }.
    static func span(_ b: [UInt8]) throws -> OTLPSpan {
        var s = OTLPSpan()
        for (n, bytes, v) in try fields(b) {
            switch n {
            case 1: s.traceID = hex(bytes ?? [])
            case 2: s.spanID = hex(bytes ?? [])
            case 4: s.parentSpanID = hex(bytes ?? [])
            case 5: s.name = String(decoding: bytes ?? [], as: UTF8.self)
            case 6: s.kind = Int(v)
            case 9:
                let (k, val) = try keyValue(bytes ?? [])
                s.attributes[k] = val
            case 15:
                for (sn, _, sv) in try fields(bytes ?? []) where sn == 3 { s.statusCode = Int(sv) }
            default: break
            }
        }
        return s
    }
}
