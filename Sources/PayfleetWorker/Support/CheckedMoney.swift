import Foundation
import PayfleetStore

/// Money arithmetic that never traps: an amount that does not fit Int64 is a permanent error
/// (`AmountOverflow`), which the runtime dead-letters at once instead of crashing the worker
/// on every redelivery (issue 15 item 5). One place for every worker that adds money.
public enum CheckedMoney {
    public static func overflow(_ what: String) -> HandlerError {
        HandlerError.permanent("AmountOverflow", "\(what) does not fit in 64-bit minor units")
    }

    public static func add(_ a: Int64, _ b: Int64, _ what: String = "sum") throws(HandlerError) -> Int64 {
        let (v, o) = a.addingReportingOverflow(b)
        if o { throw overflow(what) }
        return v
    }

    public static func subtract(_ a: Int64, _ b: Int64, _ what: String = "difference") throws(HandlerError) -> Int64 {
        let (v, o) = a.subtractingReportingOverflow(b)
        if o { throw overflow(what) }
        return v
    }

    public static func negate(_ a: Int64, _ what: String = "amount") throws(HandlerError) -> Int64 {
        try subtract(0, a, what)
    }

    /// SQLite raises `integer overflow` from `SUM` (the balance trigger sums a transaction's
    /// postings); the generic classification would call it transient and retry it forever.
    public static func isOverflow(_ e: SQLiteError) -> Bool { e.message.lowercased().contains("integer overflow") }
}

/// Saturating arithmetic for reading stored figures in reports: never traps. The workers keep
/// every stored total representable (checked), so this only clamps sums across many days.
public enum Saturating {
    public static func add(_ a: Int64, _ b: Int64) -> Int64 {
        let (v, o) = a.addingReportingOverflow(b)
        return o ? (b > 0 ? .max : .min) : v
    }

    public static func subtract(_ a: Int64, _ b: Int64) -> Int64 {
        let (v, o) = a.subtractingReportingOverflow(b)
        return o ? (b < 0 ? .max : .min) : v
    }
}
