import Foundation

/// A JSON object written field by field straight into bytes, for values written once per event
/// on a hot path (the effect journal): `JSONEncoder`'s dynamic dispatch cost crm-sync about a
/// twelfth of its time. Writes what `JSONEncoder` writes for the same Codable struct with its
/// default strategies: keys as given, nil optionals left out, integers as numbers, a `Date` as
/// seconds since 2001-01-01 (`timeIntervalSinceReferenceDate`, shortest round-trip digits).
public struct JSONObjectWriter {
    public private(set) var bytes: [UInt8]
    private var fields = 0

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ key: StaticString) {
        if fields > 0 { bytes.append(UInt8(ascii: ",")) }
        fields += 1
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func field(_ k: StaticString, _ v: String?) {
        guard let v else { return }
        key(k)
        JSONText.string(v, into: &bytes)
    }

    public mutating func field(_ k: StaticString, _ v: Int64?) {
        guard let v else { return }
        key(k)
        bytes.append(contentsOf: String(v).utf8)
    }

    public mutating func field(_ k: StaticString, _ v: Date?) {
        guard let v else { return }
        key(k)
        // Swift's description of a Double is its shortest round-trip form, a valid JSON number
        // for every finite value ("1e-05", "786000000.5").
        let s = v.timeIntervalSinceReferenceDate
        bytes.append(contentsOf: (s.isFinite ? s.description : "0").utf8)
    }

    /// A field whose key is data (escaped), e.g. a metadata entry.
    public mutating func field(escapedKey k: String, _ v: String) {
        if fields > 0 { bytes.append(UInt8(ascii: ",")) }
        fields += 1
        JSONText.string(k, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        JSONText.string(v, into: &bytes)
    }

    /// A nested object written by `body` into the same buffer.
    public mutating func object(_ k: StaticString, _ body: (inout JSONObjectWriter) -> Void) {
        key(k)
        var inner = JSONObjectWriter(continuing: &bytes)
        body(&inner)
        swap(&inner.bytes, &bytes)
        bytes.append(UInt8(ascii: "}"))
    }

    /// A writer that takes over `buffer` (left empty) and opens an object in it.
    private init(continuing buffer: inout [UInt8]) {
        bytes = []
        swap(&bytes, &buffer)
        bytes.append(UInt8(ascii: "{"))
    }

    /// An array of objects, each written by `write`.
    public mutating func field<T>(_ k: StaticString, _ items: [T], _ write: (T) -> [UInt8]) {
        key(k)
        bytes.append(UInt8(ascii: "["))
        for (i, item) in items.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: write(item))
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// The object, closed.
    public consuming func finished() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }
}
