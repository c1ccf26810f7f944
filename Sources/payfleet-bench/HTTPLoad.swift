import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The fleet benchmark's load generator: HTTP/1.1 keep-alive connections over blocking POSIX
/// sockets, one thread each (never the cooperative pool), sending requests built and signed
/// before the clock starts. URLSession on Linux cost ~1 ms of CPU per request on the two cores
/// the fleet is measured on; this costs a few per cent of that, so the figures are the fleet's.
enum HTTPLoad {
    struct Answer: Sendable {
        var sentMS: Int64
        var ackedMS: Int64
        var status: Int
        var body: [UInt8]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func nowMS() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    static func monotonicNS() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Sends `requests[i]` (complete HTTP/1.1 requests) over `connections` connections to
    /// host:port; with `ratePerSecond` request i is not sent before start + i / rate.
    static func run(host: String, port: UInt16, requests: [[UInt8]], connections: Int, ratePerSecond: Int?) async throws
        -> [Answer]
    {
        let results = Mutex<(answers: [Answer], failure: String?, finished: Int)>(([], nil, 0))
        let start = monotonicNS()
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[Answer], Error>) in
            for w in 0..<connections {
                let t = Thread {
                    var mine: [Answer] = []
                    var failure: String?
                    do {
                        var conn = try Connection(host: host, port: port)
                        var i = w
                        while i < requests.count {
                            if let r = ratePerSecond {
                                let due = start + UInt64(i) * 1_000_000_000 / UInt64(r)
                                let now = monotonicNS()
                                if due > now { usleep(UInt32((due - now) / 1000)) }
                            }
                            let sent = nowMS()
                            var answer = try conn.exchange(requests[i])
                            if answer == nil {  // the server closed an idle connection: once more on a new one
                                conn = try Connection(host: host, port: port)
                                answer = try conn.exchange(requests[i])
                            }
                            guard let (status, body, keepAlive) = answer else { throw Failure(description: "connection closed") }
                            mine.append(Answer(sentMS: sent, ackedMS: nowMS(), status: status, body: body))
                            if !keepAlive { conn = try Connection(host: host, port: port) }
                            i += connections
                        }
                        close(conn.fd)
                    } catch {
                        failure = "\(error)"
                    }
                    let done = results.withLock { r -> (Bool, [Answer], String?) in
                        r.answers += mine
                        if let failure, r.failure == nil { r.failure = failure }
                        r.finished += 1
                        return (r.finished == connections, r.answers, r.failure)
                    }
                    if done.0 {
                        if let f = done.2 { cont.resume(throwing: Failure(description: f)) } else { cont.resume(returning: done.1) }
                    }
                }
                t.stackSize = 1 << 20
                t.start()
            }
        }
    }

    /// One HTTP/1.1 request: POST with the given headers and body, keep-alive.
    static func request(path: String, host: String, headers: [(String, String)], body: [UInt8]) -> [UInt8] {
        var head = "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }

    /// A blocking TCP connection with a read buffer.
    struct Connection {
        let fd: Int32
        var buffer: [UInt8] = []

        init(host: String, port: UInt16) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Failure(description: "not an IPv4 address: \(host)") }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else {
                close(fd)
                throw Failure(description: "connect \(host):\(port): errno \(errno)")
            }
        }

        /// Writes the request and reads one response: nil when the peer had closed the
        /// connection before answering.
        mutating func exchange(_ request: [UInt8]) throws -> (status: Int, body: [UInt8], keepAlive: Bool)? {
            var off = 0
            while off < request.count {
                let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + off, request.count - off, Int32(MSG_NOSIGNAL)) }
                if n <= 0 {
                    if off == 0 { close(fd); return nil }
                    throw Failure(description: "send: errno \(errno)")
                }
                off += n
            }
            // Headers.
            var headerEnd: Int?
            while headerEnd == nil {
                if let e = Self.find(buffer, [13, 10, 13, 10]) { headerEnd = e; break }
                guard try fill() else {
                    close(fd)
                    if buffer.isEmpty { return nil }
                    throw Failure(description: "connection closed inside a response")
                }
            }
            let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
            let lines = head.split(separator: "\r\n")
            guard let first = lines.first, first.split(separator: " ").count >= 2, let status = Int(first.split(separator: " ")[1])
            else { throw Failure(description: "bad status line: \(lines.first ?? "")") }
            var length = 0
            var keepAlive = true
            for line in lines.dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                let name = parts[0].lowercased()
                let value = parts[1].trimmingCharacters(in: .whitespaces)
                if name == "content-length" { length = Int(value) ?? 0 }
                if name == "connection" && value.lowercased() == "close" { keepAlive = false }
            }
            let bodyStart = headerEnd! + 4
            while buffer.count < bodyStart + length {
                guard try fill() else { throw Failure(description: "connection closed inside a body") }
            }
            let body = Array(buffer[bodyStart..<(bodyStart + length)])
            buffer.removeFirst(bodyStart + length)
            if !keepAlive { close(fd) }
            return (status, body, keepAlive)
        }

        mutating func fill() throws -> Bool {
            var chunk = [UInt8](repeating: 0, count: 16_384)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, 16_384, 0) }
            if n < 0 { throw Failure(description: "recv: errno \(errno)") }
            if n == 0 { return false }
            buffer += chunk[..<n]
            return true
        }

        static func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
            guard hay.count >= needle.count else { return nil }
            for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
                if hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            }
            return nil
        }
    }
}
