import CRabbitMQ
import Foundation
import PayfleetCore

/// An AMQP field value as found in message headers and queue arguments (`x-death` is an array
/// of tables).
public enum AMQPFieldValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case timestamp(UInt64)
    case bytes([UInt8])
    case array([AMQPFieldValue])
    case table([String: AMQPFieldValue])
    case void

    public var stringValue: String? {
        switch self {
        case .string(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        case .int(let i): return String(i)
        default: return nil
        }
    }
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .timestamp(let t): return Int64(t)
        case .string(let s): return Int64(s)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return String(b)
        case .timestamp(let t): return RFC3339.format(Date(timeIntervalSince1970: TimeInterval(t)))
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .table(let t):
            return "{" + t.keys.sorted().map { "\($0): \(t[$0]!.description)" }.joined(separator: ", ") + "}"
        case .void: return "null"
        }
    }

    /// A JSON-compatible value for `dlq show --json`.
    public var jsonObject: Any {
        switch self {
        case .string(let s): return s
        case .int(let i): return i
        case .bool(let b): return b
        case .timestamp(let t): return RFC3339.format(Date(timeIntervalSince1970: TimeInterval(t)))
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        case .array(let a): return a.map(\.jsonObject)
        case .table(let t): return t.mapValues(\.jsonObject)
        case .void: return NSNull()
        }
    }

    init(_ a: AMQPArgument) {
        switch a {
        case .string(let s): self = .string(s)
        case .int(let i): self = .int(Int64(i))
        case .bool(let b): self = .bool(b)
        }
    }
}

/// Owns C memory handed to rabbitmq-c for the duration of one call.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []
    deinit { for p in allocations { p.deallocate() } }

    func bytes(_ s: String) -> amqp_bytes_t { bytes(Array(s.utf8)) }

    func bytes(_ b: [UInt8]) -> amqp_bytes_t {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(b.count, 1), alignment: 1)
        allocations.append(p)
        b.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: b.count) } }
        return amqp_bytes_t(len: b.count, bytes: p)
    }

    func table(_ dict: [String: AMQPFieldValue]) -> amqp_table_t {
        guard !dict.isEmpty else { return amqp_empty_table }
        let count = dict.count
        let entries = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: count)
        allocations.append(UnsafeMutableRawPointer(entries))
        for (i, key) in dict.keys.sorted().enumerated() {
            entries[i] = amqp_table_entry_t(key: bytes(key), value: field(dict[key]!))
        }
        return amqp_table_t(num_entries: Int32(count), entries: entries)
    }

    func field(_ v: AMQPFieldValue) -> amqp_field_value_t {
        var f = amqp_field_value_t()
        switch v {
        case .string(let s):
            f.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            f.value.bytes = bytes(s)
        case .bytes(let b):
            f.kind = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)
            f.value.bytes = bytes(b)
        case .int(let i):
            f.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
            f.value.i64 = i
        case .bool(let b):
            f.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
            f.value.boolean = b ? 1 : 0
        case .timestamp(let t):
            f.kind = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
            f.value.u64 = t
        case .table(let t):
            f.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
            f.value.table = table(t)
        case .array(let a):
            f.kind = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
            let entries = UnsafeMutablePointer<amqp_field_value_t>.allocate(capacity: max(a.count, 1))
            allocations.append(UnsafeMutableRawPointer(entries))
            for (i, e) in a.enumerated() { entries[i] = field(e) }
            f.value.array = amqp_array_t(num_entries: Int32(a.count), entries: entries)
        case .void:
            f.kind = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
        }
        return f
    }
}

extension amqp_bytes_t {
    var swiftBytes: [UInt8] {
        guard len > 0, let p = bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }
    var swiftString: String { String(decoding: swiftBytes, as: UTF8.self) }
}

enum AMQPDecode {
    static func table(_ t: amqp_table_t) -> [String: AMQPFieldValue] {
        var out: [String: AMQPFieldValue] = [:]
        guard t.num_entries > 0, let entries = t.entries else { return out }
        for i in 0..<Int(t.num_entries) {
            out[entries[i].key.swiftString] = field(entries[i].value)
        }
        return out
    }

    static func field(_ f: amqp_field_value_t) -> AMQPFieldValue {
        switch UInt32(f.kind) {
        case AMQP_FIELD_KIND_UTF8.rawValue: return .string(f.value.bytes.swiftString)
        case AMQP_FIELD_KIND_BYTES.rawValue: return .bytes(f.value.bytes.swiftBytes)
        case AMQP_FIELD_KIND_BOOLEAN.rawValue: return .bool(f.value.boolean != 0)
        case AMQP_FIELD_KIND_I8.rawValue: return .int(Int64(f.value.i8))
        case AMQP_FIELD_KIND_U8.rawValue: return .int(Int64(f.value.u8))
        case AMQP_FIELD_KIND_I16.rawValue: return .int(Int64(f.value.i16))
        case AMQP_FIELD_KIND_U16.rawValue: return .int(Int64(f.value.u16))
        case AMQP_FIELD_KIND_I32.rawValue: return .int(Int64(f.value.i32))
        case AMQP_FIELD_KIND_U32.rawValue: return .int(Int64(f.value.u32))
        case AMQP_FIELD_KIND_I64.rawValue: return .int(f.value.i64)
        case AMQP_FIELD_KIND_U64.rawValue: return .int(Int64(truncatingIfNeeded: f.value.u64))
        case AMQP_FIELD_KIND_TIMESTAMP.rawValue: return .timestamp(f.value.u64)
        case AMQP_FIELD_KIND_TABLE.rawValue: return .table(table(f.value.table))
        case AMQP_FIELD_KIND_ARRAY.rawValue:
            let a = f.value.array
            guard a.num_entries > 0, let e = a.entries else { return .array([]) }
            return .array((0..<Int(a.num_entries)).map { field(e[$0]) })
        default: return .void
        }
    }
}
