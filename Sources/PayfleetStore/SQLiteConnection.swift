import CSQLite
import Foundation

/// An SQLite error with SQLite's result code and message, and the statement that failed.
public struct SQLiteError: Error, CustomStringConvertible {
    /// The extended result code, as SQLite returned it (extended codes are switched on).
    public let code: Int32
    public let message: String
    public let sql: String?
    public var description: String {
        "SQLite error \(code) (\(String(cString: sqlite3_errstr(code)))): \(message)" + (sql.map { " in `\($0.prefix(120))`" } ?? "")
    }
    /// `code` as a result code: compare its `primary` with the named codes.
    public var resultCode: ResultCode { ResultCode(rawValue: code) }
    /// True for `SQLITE_CONSTRAINT` and its extended codes (a trigger's RAISE(ABORT) too).
    public var isConstraint: Bool { resultCode.primary == .constraint }
    /// True when the file cannot be written at all (disk full, read-only file or directory,
    /// I/O error, cannot open): no event is at fault, and retrying later is the only remedy.
    public var isStorageFailure: Bool {
        [.full, .readOnly, .ioError, .cantOpen, .protocolError].contains(resultCode.primary)
    }

    /// An SQLite result code (<https://www.sqlite.org/rescode.html>): an extended code carries
    /// its primary code in the low byte (`SQLITE_CONSTRAINT_UNIQUE` → `SQLITE_CONSTRAINT`), as
    /// GRDB's `ResultCode`.
    public struct ResultCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// The primary result code of this (possibly extended) one.
        public var primary: ResultCode { ResultCode(rawValue: rawValue & 0xff) }
        public var description: String { "\(rawValue) (\(String(cString: sqlite3_errstr(rawValue))))" }

        public static let busy = ResultCode(rawValue: SQLITE_BUSY)
        public static let constraint = ResultCode(rawValue: SQLITE_CONSTRAINT)
        public static let full = ResultCode(rawValue: SQLITE_FULL)
        public static let readOnly = ResultCode(rawValue: SQLITE_READONLY)
        public static let ioError = ResultCode(rawValue: SQLITE_IOERR)
        public static let cantOpen = ResultCode(rawValue: SQLITE_CANTOPEN)
        public static let protocolError = ResultCode(rawValue: SQLITE_PROTOCOL)
    }
}

/// A value bound to or read from SQLite. No floating point: money is INTEGER minor units.
public enum SQLValue: Sendable, Equatable, Hashable {
    case int(Int64)
    case text(String)
    case blob([UInt8])
    case null
}

extension SQLValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(_ s: String?) { self = s.map { .text($0) } ?? .null }
    public init(_ i: Int64?) { self = i.map { .int($0) } ?? .null }
    public init(_ i: Int) { self = .int(Int64(i)) }
}

/// One result row.
public struct SQLRow: Sendable {
    public let values: [SQLValue]
    public subscript(_ i: Int) -> SQLValue { values[i] }
    public func int(_ i: Int) -> Int64? { if case .int(let v) = values[i] { return v } else { return nil } }
    public func string(_ i: Int) -> String? {
        switch values[i] {
        case .text(let s): return s
        case .int(let v): return String(v)
        default: return nil
        }
    }
    public func blob(_ i: Int) -> [UInt8]? { if case .blob(let b) = values[i] { return b } else { return nil } }
}

/// A single SQLite connection. Not thread-safe: it is only ever used on its `Store`'s thread.
public final class SQLiteConnection {
    /// How hard a commit tries to survive power loss.
    public enum Durability: Sendable {
        /// `synchronous=FULL`: a commit is on disk when it returns. Used wherever an ack follows.
        case full
        /// `synchronous=NORMAL`: WAL commits may be lost on power failure (not on a crash).
        case normal
    }

    let db: OpaquePointer
    public let path: String
    private var cache: [String: OpaquePointer] = [:]

    public init(path: String, durability: Durability = .full, busyTimeoutMS: Int32 = 5_000, readOnly: Bool = false)
        throws
    {
        var handle: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let handle { sqlite3_close_v2(handle) }
            throw SQLiteError(code: rc, message: "\(msg): \(path)", sql: nil)
        }
        db = handle
        self.path = path
        sqlite3_busy_timeout(db, busyTimeoutMS)
        sqlite3_extended_result_codes(db, 1)
        if !readOnly {
            // Switching a new file to WAL takes an exclusive lock without calling the busy
            // handler: another process opening the same file (a standby) can make it fail at once.
            var attempts = 0
            while true {
                do {
                    try execute("PRAGMA journal_mode=WAL")
                    break
                } catch let e as SQLiteError where e.resultCode.primary == .busy && attempts < 500 {
                    attempts += 1
                    usleep(10_000)
                }
            }
            try execute(durability == .full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
        }
        try execute("PRAGMA foreign_keys=ON")
        if !readOnly {
            // Measured with `payfleet-bench worker ledger-writer` (issue 17): SQLite's statement
            // journals are temp files, written for every page a statement under a savepoint
            // touches (132 KiB written per ledger event before, 30 after). A worker's batch
            // transaction dirties more pages than the default 2 MiB cache holds, which spills
            // them into the WAL mid-transaction and writes them again at the commit. The
            // automatic checkpoint stays at SQLite's 1,000 pages: a longer log (4,000 pages was
            // tried) is space the file holds until a commit succeeds, and on a nearly full disk
            // that log alone kept the worker from ever committing again (StoreFailureTests).
            try execute("PRAGMA temp_store=MEMORY")
            try execute("PRAGMA cache_size=-8192")
        }
    }

    deinit {
        for (_, s) in cache { sqlite3_finalize(s) }
        sqlite3_close_v2(db)
    }

    private func error(_ rc: Int32, _ sql: String?) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }

    /// Runs one or more statements without parameters or results.
    public func executeScript(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? ""
            sqlite3_free(err)
            throw SQLiteError(code: rc, message: msg, sql: sql)
        }
    }

    private func statement(_ sql: String) throws -> OpaquePointer {
        if let s = cache[sql] {
            sqlite3_reset(s)
            sqlite3_clear_bindings(s)
            return s
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        cache[sql] = stmt
        return stmt
    }

    private func bind(_ stmt: OpaquePointer, _ args: [SQLValue], _ sql: String) throws {
        for (i, a) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch a {
            case .int(let v): rc = sqlite3_bind_int64(stmt, idx, v)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, payfleet_sqlite_transient())
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32(b.count), payfleet_sqlite_transient()) }
            case .null: rc = sqlite3_bind_null(stmt, idx)
            }
            if rc != SQLITE_OK { throw error(rc, sql) }
        }
    }

    /// Executes a statement; returns the number of rows changed.
    @discardableResult
    public func execute(_ sql: String, _ args: [SQLValue] = []) throws -> Int {
        let stmt = try statement(sql)
        defer { sqlite3_reset(stmt) }
        try bind(stmt, args, sql)
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            if rc == SQLITE_ROW { continue }
            throw error(rc, sql)
        }
        return Int(sqlite3_changes(db))
    }

    public func query(_ sql: String, _ args: [SQLValue] = []) throws -> [SQLRow] {
        let stmt = try statement(sql)
        defer { sqlite3_reset(stmt) }
        try bind(stmt, args, sql)
        var rows: [SQLRow] = []
        let n = sqlite3_column_count(stmt)
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            var vals: [SQLValue] = []
            vals.reserveCapacity(Int(n))
            for c in 0..<n {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: vals.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_NULL: vals.append(.null)
                case SQLITE_BLOB:
                    let len = Int(sqlite3_column_bytes(stmt, c))
                    if let p = sqlite3_column_blob(stmt, c) {
                        vals.append(.blob(Array(UnsafeRawBufferPointer(start: p, count: len))))
                    } else { vals.append(.blob([])) }
                default:
                    vals.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                }
            }
            rows.append(SQLRow(values: vals))
        }
        return rows
    }

    public func queryOne(_ sql: String, _ args: [SQLValue] = []) throws -> SQLRow? {
        try query(sql, args).first
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }

    /// `BEGIN IMMEDIATE` … `COMMIT`, rolled back when `body` throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let r = try body()
            try execute("COMMIT")
            return r
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }

    /// A nested savepoint: a failing part of a batch is undone without losing the rest.
    public func savepoint<T>(_ body: () throws -> T) throws -> T {
        try execute("SAVEPOINT sp")
        do {
            let r = try body()
            try execute("RELEASE sp")
            return r
        } catch {
            _ = try? execute("ROLLBACK TO sp")
            _ = try? execute("RELEASE sp")
            throw error
        }
    }
}
