import Foundation

/// Encoding and decoding of events on the wire (RFC 3339 dates, sorted keys).
public enum EventCodec {
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { dec in
            let c = try dec.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = RFC3339.parse(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not an RFC 3339 date-time")
            }
            return date
        }
        return d
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(RFC3339.format(date))
        }
        return e
    }

    /// Decodes and validates; any failure is an `EventDecodingError` that names the problem.
    public static func decode(_ data: Data) throws(EventDecodingError) -> PaymentEvent {
        let event: PaymentEvent
        if let fast = data.withUnsafeBytes({ FastEventReader.read($0) }) {
            event = fast
        } else {
            event = try decodeWithJSONDecoder(data)
        }
        do { try event.validate() } catch { throw EventDecodingError(message: error.description) }
        return event
    }

    /// A body as bytes (a delivery's): read in place when `FastEventReader` can.
    public static func decode(bytes: [UInt8]) throws(EventDecodingError) -> PaymentEvent {
        let event: PaymentEvent
        if let fast = bytes.withUnsafeBytes({ FastEventReader.read($0) }) {
            event = fast
        } else {
            event = try decodeWithJSONDecoder(Data(bytes))
        }
        do { try event.validate() } catch { throw EventDecodingError(message: error.description) }
        return event
    }

    /// `JSONDecoder`'s reading of a body (no validation): the reference `FastEventReader` agrees
    /// with, and the one that names what is wrong with a body.
    static func decodeWithJSONDecoder(_ data: Data) throws(EventDecodingError) -> PaymentEvent {
        let event: PaymentEvent
        do {
            event = try decoder().decode(PaymentEvent.self, from: data)
        } catch let e as DecodingError {
            if case .typeMismatch(_, let ctx) = e, ctx.codingPath.isEmpty {
                throw EventDecodingError(message: "body is not a JSON object")
            }
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty {
                throw EventDecodingError(message: "body is not a JSON object (not valid JSON)")
            }
            throw EventDecodingError(message: describe(e))
        } catch {
            throw EventDecodingError(message: "\(error)")
        }
        return event
    }

    public static func encode(_ event: PaymentEvent) -> Data { Data(EventWriter.write(event)) }

    /// The event as bytes (what the outbox stores and the relay publishes).
    public static func encodeBytes(_ event: PaymentEvent) -> [UInt8] { EventWriter.write(event) }

    /// `JSONEncoder`'s encoding of the event: the reference `EventWriter` is tested against.
    public static func encodeWithJSONEncoder(_ event: PaymentEvent) -> Data {
        // Encoding a value type of strings and integers cannot fail.
        (try? encoder().encode(event)) ?? Data()
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        switch e {
        case .keyNotFound(let k, let ctx):
            let p = path(ctx.codingPath + [k])
            return "\(p): required field missing"
        case .typeMismatch(let t, let ctx): return "\(path(ctx.codingPath)): expected \(t)"
        case .valueNotFound(let t, let ctx): return "\(path(ctx.codingPath)): expected \(t), found null"
        case .dataCorrupted(let ctx):
            let p = path(ctx.codingPath)
            return p.isEmpty ? ctx.debugDescription : "\(p): \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

public struct EventDecodingError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
